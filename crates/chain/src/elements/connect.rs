//! `connect`: passes the request on to the next hop.
//!
//! The forwarder's own mechanism (KERNEL, VFIO) is between it and the
//! client; towards the next hop (the NSM manager at `NSM_CONNECT_TO`) it
//! offers NOOP, LOCAL first and then REMOTE, as sdk-sriov's NOOP client does. The next hop's answer
//! (path, context filled in by the endpoint) becomes the client's
//! connection, with the forwarder's mechanism put back. Close closes the
//! next hop's connection.
//!
//! Every call to the next hop has a deadline: what is left of the caller's
//! own (`grpc-timeout`, kept in the context as a [`Deadline`] by the
//! server), never more than the configured cap (`NSM_NEXT_HOP_TIMEOUT`,
//! [`DEFAULT_NEXT_HOP_TIMEOUT`]), so a next hop that hangs cannot hold a
//! Request, and the host changes made for it, for ever.

use std::sync::Arc;
use std::time::Duration;

use sriov_api::nsm::connection::Connection;
use sriov_api::nsm::networkservice::NetworkServiceRequest;

use tonic::Status;

use crate::params::noop_preferences;
use crate::{Ctx, Element, Next, NextHop};

/// The longest the next hop is given for one call unless configured.
pub const DEFAULT_NEXT_HOP_TIMEOUT: Duration = Duration::from_secs(15);

use crate::records::Deadline;

/// How long the next hop may take now: the caller's time left, capped.
fn budget(ctx: &Ctx, cap: Duration) -> Duration {
    ctx.get::<Deadline>()
        .map(|d| d.0.saturating_duration_since(tokio::time::Instant::now()))
        .map_or(cap, |left| left.min(cap))
}

/// `call` within `limit`, or DEADLINE_EXCEEDED naming the call.
async fn within<T>(
    limit: Duration,
    what: &str,
    call: impl Future<Output = Result<T, Status>>,
) -> Result<T, Status> {
    tokio::time::timeout(limit, call).await.unwrap_or_else(|_| {
        Err(Status::deadline_exceeded(format!(
            "the next hop did not answer the {what} within {} ms",
            limit.as_millis()
        )))
    })
}

/// The next hop's connection, kept for Close.
#[derive(Debug, Clone)]
pub struct NextHopConnection(pub Connection);

/// See the module docs.
pub struct Connect {
    next_hop: Arc<dyn NextHop>,
    cap: Duration,
}

impl std::fmt::Debug for Connect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Connect")
    }
}

impl Connect {
    /// Sends requests to `next_hop`, each call capped at
    /// [`DEFAULT_NEXT_HOP_TIMEOUT`].
    pub fn new(next_hop: Arc<dyn NextHop>) -> Self {
        Self {
            next_hop,
            cap: DEFAULT_NEXT_HOP_TIMEOUT,
        }
    }

    /// Caps each call to the next hop at `cap` instead.
    pub fn with_timeout(mut self, cap: Duration) -> Self {
        self.cap = cap;
        self
    }
}

impl Element for Connect {
    type Needs = ();

    fn name(&self) -> &'static str {
        "connect"
    }

    async fn request(
        &self,
        ctx: &mut Ctx,
        _: (),
        request: NetworkServiceRequest,
        next: Next<'_>,
    ) -> Result<Connection, Status> {
        let ours = request.connection.clone().unwrap_or_default();
        let mut out = ours.clone();
        out.mechanism = None;
        let onward = NetworkServiceRequest {
            connection: Some(out),
            mechanism_preferences: noop_preferences(),
        };
        let mut reply = within(
            budget(ctx, self.cap),
            "Request",
            self.next_hop.request(onward),
        )
        .await?;
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
                    && let Err(ce) = within(self.cap, "Close", self.next_hop.close(c)).await
                {
                    tracing::warn!(error = %ce, "closing the next hop after a failure");
                }
                Err(e)
            }
        }
    }

    async fn close(
        &self,
        ctx: &mut Ctx,
        connection: Connection,
        next: Next<'_>,
    ) -> Result<(), Status> {
        let rest = next.close(ctx, connection.clone()).await;
        let hop = ctx
            .remove::<NextHopConnection>()
            .map(|c| c.0)
            .unwrap_or_else(|| Connection {
                mechanism: None,
                ..connection
            });
        within(budget(ctx, self.cap), "Close", self.next_hop.close(hop)).await?;
        rest
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use futures::future::BoxFuture;

    /// A next hop that never answers.
    struct Hangs;

    impl NextHop for Hangs {
        fn request(
            &self,
            _: NetworkServiceRequest,
        ) -> BoxFuture<'static, Result<Connection, Status>> {
            Box::pin(futures::future::pending())
        }

        fn close(&self, _: Connection) -> BoxFuture<'static, Result<(), Status>> {
            Box::pin(futures::future::pending())
        }
    }

    fn chain() -> crate::Chain {
        crate::Chain::new().with(Connect::new(Arc::new(Hangs)))
    }

    fn request() -> NetworkServiceRequest {
        NetworkServiceRequest {
            connection: Some(Connection {
                id: "c1".into(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_hanging_next_hop_gets_what_is_left_of_the_callers_deadline() {
        let mut ctx = Ctx::new();
        ctx.insert(Deadline(
            tokio::time::Instant::now() + Duration::from_secs(2),
        ));
        let e = chain().request(&mut ctx, request()).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::DeadlineExceeded);
        assert!(
            e.message().contains("Request within 2000 ms"),
            "{}",
            e.message()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn without_a_caller_deadline_the_next_hop_gets_the_cap() {
        let e = chain()
            .request(&mut Ctx::new(), request())
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::DeadlineExceeded);
        let cap = format!("Request within {} ms", DEFAULT_NEXT_HOP_TIMEOUT.as_millis());
        assert!(e.message().contains(&cap), "{}", e.message());
        // A caller willing to wait longer still gets the cap.
        let mut ctx = Ctx::new();
        ctx.insert(Deadline(
            tokio::time::Instant::now() + Duration::from_secs(3600),
        ));
        let e = chain()
            .close(&mut ctx, Connection::default())
            .await
            .unwrap_err();
        assert!(e.message().contains(&format!(
            "Close within {} ms",
            DEFAULT_NEXT_HOP_TIMEOUT.as_millis()
        )));
    }
}
