//! `connect`: passes the request on to the next hop.
//!
//! The forwarder's own mechanism (KERNEL, VFIO) is between it and the
//! client; towards the next hop (the NSM manager at `NSM_CONNECT_TO`) it
//! offers NOOP, LOCAL first and then REMOTE, as sdk-sriov's NOOP client does. The next hop's answer
//! (path, context filled in by the endpoint) becomes the client's
//! connection, with the forwarder's mechanism put back. Close closes the
//! next hop's connection.

use std::sync::Arc;

use sriov_api::nsm::connection::Connection;
use sriov_api::nsm::networkservice::NetworkServiceRequest;

use crate::params::noop_preferences;
use crate::{Ctx, Element, ElementFuture, Next, NextHop};

/// The next hop's connection, kept for Close.
#[derive(Debug, Clone)]
pub struct NextHopConnection(pub Connection);

/// See the module docs.
pub struct Connect {
    next_hop: Arc<dyn NextHop>,
}

impl std::fmt::Debug for Connect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Connect")
    }
}

impl Connect {
    /// Sends requests to `next_hop`.
    pub fn new(next_hop: Arc<dyn NextHop>) -> Self {
        Self { next_hop }
    }
}

impl Element for Connect {
    fn name(&self) -> &'static str {
        "connect"
    }

    fn request<'a>(
        &'a self,
        ctx: &'a mut Ctx,
        request: NetworkServiceRequest,
        next: Next<'a>,
    ) -> ElementFuture<'a, Connection> {
        Box::pin(async move {
            let ours = request.connection.clone().unwrap_or_default();
            let mut out = ours.clone();
            out.mechanism = None;
            let onward = NetworkServiceRequest {
                connection: Some(out),
                mechanism_preferences: noop_preferences(),
            };
            let mut reply = self.next_hop.request(onward).await?;
            ctx.insert(NextHopConnection(reply.clone()));
            reply.mechanism = ours.mechanism.clone();
            reply.id = ours.id.clone();
            let req = NetworkServiceRequest {
                connection: Some(reply),
                mechanism_preferences: request.mechanism_preferences,
            };
            match next.request(ctx, req).await {
                Ok(c) => Ok(c),
                Err(e) => {
                    if let Some(NextHopConnection(c)) = ctx.remove::<NextHopConnection>()
                        && let Err(ce) = self.next_hop.close(c).await
                    {
                        tracing::warn!(error = %ce, "closing the next hop after a failure");
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
            let rest = next.close(ctx, connection.clone()).await;
            let hop = ctx
                .remove::<NextHopConnection>()
                .map(|c| c.0)
                .unwrap_or_else(|| Connection {
                    mechanism: None,
                    ..connection
                });
            self.next_hop.close(hop).await?;
            rest
        })
    }
}
