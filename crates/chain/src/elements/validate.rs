//! `validate`: checks a mechanism's parameters before anything is touched.
//!
//! The first element of each mechanism's sub-chain: bad or hostile
//! parameters (interface names, namespace URLs, cgroup dirs, MTU, VLAN,
//! token) are INVALID_ARGUMENT here, so no later element has started
//! changing the host. The parsed parameters are left in the context for
//! the elements after it. Nothing to undo.

use sriov_api::nsm::connection::Connection;
use sriov_api::nsm::networkservice::NetworkServiceRequest;

use crate::params;
use crate::{Ctx, Element, ElementFuture, Next};

/// Which mechanism's parameters to check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Validate {
    /// KERNEL: token, inodeURL, name, MTU, vlan.
    Kernel,
    /// VFIO: token, cgroupDir.
    Vfio,
}

impl Element for Validate {
    fn name(&self) -> &'static str {
        "validate"
    }

    fn request<'a>(
        &'a self,
        ctx: &'a mut Ctx,
        request: NetworkServiceRequest,
        next: Next<'a>,
    ) -> ElementFuture<'a, Connection> {
        Box::pin(async move {
            let empty = Default::default();
            let p = request
                .connection
                .as_ref()
                .and_then(|c| c.mechanism.as_ref())
                .map(|m| &m.parameters)
                .unwrap_or(&empty);
            match self {
                Validate::Kernel => {
                    ctx.insert(params::kernel(p)?);
                }
                Validate::Vfio => {
                    ctx.insert(params::vfio(p)?);
                }
            }
            next.request(ctx, request).await
        })
    }

    fn close<'a>(
        &'a self,
        ctx: &'a mut Ctx,
        connection: Connection,
        next: Next<'a>,
    ) -> ElementFuture<'a, ()> {
        next.close(ctx, connection)
    }
}
