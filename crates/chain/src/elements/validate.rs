//! `validate`: checks a mechanism's parameters before anything is touched.
//!
//! The first element of each mechanism's sub-chain: bad or hostile
//! parameters (interface names, namespace URLs, cgroup dirs, MTU, VLAN,
//! token) are INVALID_ARGUMENT here, so no later element has started
//! changing the host. The parsed parameters are left in the context for
//! the elements after it: the mechanism's own ([`KernelParams`],
//! [`VfioParams`]) and the [`Token`] both have. Nothing to undo.

use sriov_api::nsm::connection::Connection;
use sriov_api::nsm::networkservice::NetworkServiceRequest;
use tonic::Status;

use crate::contract::Key;
use crate::params::{self, KernelParams, VfioParams};
use crate::records::Token;
use crate::{Ctx, Element, Next};

/// Which mechanism's parameters to check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Validate {
    /// KERNEL: token, inodeURL, name, MTU, vlan.
    Kernel,
    /// VFIO: token, cgroupDir.
    Vfio,
}

impl Element for Validate {
    type Needs = ();

    fn name(&self) -> &'static str {
        "validate"
    }

    fn provides(&self) -> Vec<Key> {
        let params = match self {
            Validate::Kernel => Key::of::<KernelParams>(),
            Validate::Vfio => Key::of::<VfioParams>(),
        };
        vec![params, Key::of::<Token>()]
    }

    async fn request(
        &self,
        ctx: &mut Ctx,
        _: (),
        request: NetworkServiceRequest,
        next: Next<'_>,
    ) -> Result<Connection, Status> {
        let empty = Default::default();
        let p = request
            .connection
            .as_ref()
            .and_then(|c| c.mechanism.as_ref())
            .map(|m| &m.parameters)
            .unwrap_or(&empty);
        let token = match self {
            Validate::Kernel => {
                let k = params::kernel(p)?;
                let token = k.token.clone();
                ctx.insert(k);
                token
            }
            Validate::Vfio => {
                let v = params::vfio(p)?;
                let token = v.token.clone();
                ctx.insert(v);
                token
            }
        };
        ctx.insert(Token(token));
        next.request(ctx, request).await
    }

    async fn close(
        &self,
        ctx: &mut Ctx,
        connection: Connection,
        next: Next<'_>,
    ) -> Result<(), Status> {
        next.close(ctx, connection).await
    }
}
