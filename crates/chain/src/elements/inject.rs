//! `inject`: the VF's netdev into the client's network namespace.
//!
//! After the rest of the chain answered, the VF netdev (found by
//! `resourcepool`) is moved into the namespace of the `inodeURL`
//! parameter, renamed to the `name` parameter, given the MTU, addresses,
//! routes and neighbours `ipcontext` planned, and brought up, in one
//! netlink operation that rolls itself back if any step fails (then the
//! rest of the chain is closed). On Close the netdev comes back to our
//! namespace under its original name, down; if the client's namespace is
//! already gone, the kernel has returned it and it is found and restored.

use std::sync::Arc;

use sriov_api::nsm::connection::Connection;
use sriov_api::nsm::networkservice::NetworkServiceRequest;
use sriov_netlink::{ClientLink, LinkRef, MovedLink, NetlinkOps};
use tonic::Status;

use super::ipcontext::IpPlan;
use super::resourcepool::{UndoLog, VfBinding};
use crate::params::KernelParams;
use crate::{Ctx, Element, ElementFuture, Next};

/// See the module docs.
pub struct Inject {
    netlink: Arc<dyn NetlinkOps>,
}

impl std::fmt::Debug for Inject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Inject")
    }
}

impl Inject {
    /// Moves links through `netlink`.
    pub fn new(netlink: Arc<dyn NetlinkOps>) -> Self {
        Self { netlink }
    }

    fn plan(ctx: &Ctx) -> Result<ClientLink, Status> {
        let params = ctx
            .get::<KernelParams>()
            .ok_or_else(|| Status::internal("inject runs after validate"))?;
        let b = ctx
            .get::<VfBinding>()
            .ok_or_else(|| Status::internal("inject runs after resourcepool"))?;
        let netdev = b
            .vf_netdev
            .clone()
            .ok_or_else(|| Status::internal(format!("VF {} has no netdev", b.lease.vf)))?;
        let mut link = ClientLink::new(LinkRef::Name(netdev), params.netns.clone());
        if let Some(n) = &params.name {
            link = link.name(n.clone());
        }
        if let Some(p) = ctx.get::<IpPlan>() {
            if let Some(mtu) = p.mtu {
                link = link.mtu(mtu);
            }
            for a in &p.addresses {
                link = link.address(*a);
            }
            for (dst, gw) in &p.routes {
                link = link.route(*dst, *gw);
            }
            for (ip, mac) in &p.neighbours {
                link = link.neighbour(*ip, *mac);
            }
        } else if let Some(mtu) = params.mtu {
            link = link.mtu(mtu);
        }
        Ok(link)
    }
}

impl Element for Inject {
    fn name(&self) -> &'static str {
        "inject"
    }

    fn request<'a>(
        &'a self,
        ctx: &'a mut Ctx,
        request: NetworkServiceRequest,
        next: Next<'a>,
    ) -> ElementFuture<'a, Connection> {
        Box::pin(async move {
            let conn = next.request(ctx, request).await?;
            if ctx.get::<MovedLink>().is_some() {
                return Ok(conn); // a refresh: the interface is already there
            }
            // The first request after a restart for a connection whose
            // netdev we had moved: the pool kept the record; adopt it.
            let recorded = ctx
                .get::<VfBinding>()
                .and_then(|b| b.lease.undo.clone())
                .and_then(|v| serde_json::from_value::<MovedLink>(v).ok());
            if let Some(m) = recorded {
                tracing::info!(link = %m.client_name, "adopting a VF netdev moved before a restart");
                ctx.insert(m);
                return Ok(conn);
            }
            let moved = match Self::plan(ctx) {
                Ok(link) => self.netlink.move_into(link).await.map_err(|e| match e {
                    sriov_netlink::Error::InvalidNetnsUrl { .. }
                    | sriov_netlink::Error::NetnsOpen { .. }
                    | sriov_netlink::Error::NotANetns { .. }
                    | sriov_netlink::Error::NetnsInodeNotFound { .. } => {
                        Status::invalid_argument(crate::params::with_causes(&e))
                    }
                    other => Status::internal(crate::params::with_causes(&other)),
                }),
                Err(e) => Err(e),
            };
            let moved = match (moved, ctx.get::<UndoLog>().cloned()) {
                (Ok(m), Some(log)) => match log.record(&m).await {
                    Ok(()) => Ok(m),
                    Err(e) => {
                        // Without the record a restart could not undo the
                        // move: take the link back rather than keep it.
                        if let Err(be) = self.netlink.back_out(m).await {
                            tracing::warn!(error = %be, "moving back after a failed record");
                        }
                        Err(e)
                    }
                },
                (other, _) => other,
            };
            match moved {
                Ok(m) => {
                    ctx.insert(m);
                    Ok(conn)
                }
                Err(e) => {
                    if let Err(ce) = next.close(ctx, conn).await {
                        tracing::warn!(error = %ce, "closing after a failed inject");
                    }
                    Err(e)
                }
            }
        })
    }

    fn close<'a>(
        &'a self,
        ctx: &'a mut Ctx,
        connection: Connection,
        next: Next<'a>,
    ) -> ElementFuture<'a, ()> {
        Box::pin(async move {
            let back = match ctx.remove::<MovedLink>() {
                Some(m) => self
                    .netlink
                    .back_out(m)
                    .await
                    .map(|outcome| tracing::debug!(?outcome, "VF netdev back out"))
                    .map_err(|e| Status::internal(crate::params::with_causes(&e))),
                None => Ok(()),
            };
            let rest = next.close(ctx, connection).await;
            back.and(rest)
        })
    }
}
