//! `timeout`: closes a connection nobody refreshes.
//!
//! On each successful Request it (re)arms a timer for the connection: the
//! earlier of the previous hop's token expiry and now +
//! `NSM_MAX_TOKEN_LIFETIME`. When the timer fires, the connection is
//! closed through the whole chain, exactly as if the client had sent
//! Close, so every element undoes its work. Close disarms the timer.

use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, SystemTime};

use sriov_api::nsm::connection::Connection;
use sriov_api::nsm::networkservice::NetworkServiceRequest;
use tokio::task::JoinHandle;
use tonic::Status;

use crate::params::system_time;
use crate::{Chain, Ctx, Element, Next};

/// A handle to the composed chain, filled in after composition (the
/// element is part of the chain it must call into).
pub type ChainHandle = Arc<OnceLock<Weak<Chain>>>;

/// See the module docs.
#[derive(Debug)]
pub struct Timeout {
    max_lifetime: Duration,
    chain: ChainHandle,
}

struct Timer(JoinHandle<()>);

impl Drop for Timer {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Timeout {
    /// Connections expire at most `max_lifetime` after their last Request.
    pub fn new(max_lifetime: Duration, chain: ChainHandle) -> Self {
        Self {
            max_lifetime,
            chain,
        }
    }

    fn expiry(&self, conn: &Connection) -> Duration {
        let now = SystemTime::now();
        let previous = conn.path.as_ref().and_then(|p| {
            let i = p.index as usize;
            i.checked_sub(1)
                .and_then(|prev| p.path_segments.get(prev))
                .and_then(|s| s.expires.as_ref())
        });
        // A client-chosen timestamp past what SystemTime holds saturates
        // to "no earlier than our own lifetime" instead of overflowing.
        let token = previous
            .and_then(system_time)
            .and_then(|at| at.duration_since(now).ok());
        match token {
            Some(d) => d.min(self.max_lifetime),
            None => self.max_lifetime,
        }
    }

    fn arm(&self, conn: &Connection) -> Timer {
        let wait = self.expiry(conn);
        let chain = self.chain.clone();
        let conn = conn.clone();
        Timer(tokio::spawn(async move {
            tokio::time::sleep(wait).await;
            let Some(chain) = chain.get().and_then(Weak::upgrade) else {
                return;
            };
            tracing::info!(connection = %conn.id, "connection expired; closing");
            // A separate task, so the Close's own disarming (which aborts
            // this task) cannot cancel the Close half-way.
            tokio::spawn(async move {
                if let Err(e) = chain.close(&mut Ctx::new(), conn).await {
                    tracing::warn!(error = %e, "closing an expired connection failed");
                }
            });
        }))
    }
}

impl Element for Timeout {
    type Needs = ();

    fn name(&self) -> &'static str {
        "timeout"
    }

    async fn request(
        &self,
        ctx: &mut Ctx,
        _: (),
        request: NetworkServiceRequest,
        next: Next<'_>,
    ) -> Result<Connection, Status> {
        let conn = next.request(ctx, request).await?;
        ctx.insert(self.arm(&conn));
        Ok(conn)
    }

    async fn close(
        &self,
        ctx: &mut Ctx,
        connection: Connection,
        next: Next<'_>,
    ) -> Result<(), Status> {
        drop(ctx.remove::<Timer>());
        next.close(ctx, connection).await
    }
}
