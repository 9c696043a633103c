//! `roundrobin`: picks the endpoint among `discover`'s candidates.
//!
//! Successive new connections to a network service start at successive
//! candidates; if the rest of the chain fails with one, the next candidate
//! is tried, until one succeeds or all failed. A refresh sticks to the
//! endpoint chosen before. Sets `network_service_endpoint_name`.

use std::collections::HashMap;
use std::sync::Mutex;

use sriov_api::nsm::connection::Connection;
use sriov_api::nsm::networkservice::NetworkServiceRequest;
use tonic::Status;

use crate::records::Candidates;
use crate::{Ctx, Element, Next};

/// See the module docs.
#[derive(Debug, Default)]
pub struct RoundRobin {
    counters: Mutex<HashMap<String, usize>>,
}

/// The endpoint a connection uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chosen(pub String);

impl RoundRobin {
    /// Counters start at the first candidate.
    pub fn new() -> Self {
        Self::default()
    }

    fn start(&self, service: &str, n: usize) -> usize {
        let Ok(mut c) = self.counters.lock() else {
            return 0;
        };
        let i = c.entry(service.to_string()).or_default();
        let start = *i % n.max(1);
        *i = i.wrapping_add(1);
        start
    }
}

impl Element for RoundRobin {
    type Needs = (Candidates,);

    fn name(&self) -> &'static str {
        "roundrobin"
    }

    async fn request(
        &self,
        ctx: &mut Ctx,
        (Candidates(found),): (Candidates,),
        request: NetworkServiceRequest,
        next: Next<'_>,
    ) -> Result<Connection, Status> {
        let candidates: Vec<String> = found.into_iter().map(|e| e.name).collect();
        let service = request
            .connection
            .as_ref()
            .map(|c| c.network_service.clone())
            .unwrap_or_default();
        let order: Vec<String> = match ctx.get::<Chosen>() {
            Some(Chosen(name)) => vec![name.clone()],
            None if candidates.is_empty() => {
                return Err(Status::not_found(format!("no endpoint for {service:?}")));
            }
            None => {
                let start = self.start(&service, candidates.len());
                // Rotated to start at `start`: every candidate once, in order.
                let start = start % candidates.len();
                let (head, tail) = candidates.split_at(start);
                tail.iter().chain(head).cloned().collect()
            }
        };
        let mut last = Status::not_found("no endpoint tried");
        for name in order {
            let mut req = request.clone();
            if let Some(c) = req.connection.as_mut() {
                c.network_service_endpoint_name = name.clone();
            }
            match next.request(ctx, req).await {
                Ok(conn) => {
                    ctx.insert(Chosen(name));
                    return Ok(conn);
                }
                Err(e) => {
                    tracing::debug!(endpoint = %name, error = %e, "endpoint failed; trying the next");
                    last = e;
                }
            }
        }
        Err(last)
    }

    async fn close(
        &self,
        ctx: &mut Ctx,
        connection: Connection,
        next: Next<'_>,
    ) -> Result<(), Status> {
        ctx.remove::<Chosen>();
        next.close(ctx, connection).await
    }
}
