//! `discover`: finds the endpoints that can serve the connection.
//!
//! Asks the registry for endpoints of the requested network service (or
//! the one endpoint the request names) and leaves the candidates in the
//! context for `roundrobin`. No endpoint is NOT_FOUND. A refresh keeps
//! the candidates it found the first time. Nothing to undo.

use std::sync::Arc;

use sriov_api::nsm::connection::Connection;
use sriov_api::nsm::networkservice::NetworkServiceRequest;
use tonic::Status;

use crate::contract::Key;
use crate::records::Candidates;
use crate::{Ctx, Element, EndpointFinder, EndpointQuery, Next};

/// See the module docs.
pub struct Discover {
    finder: Arc<dyn EndpointFinder>,
}

impl std::fmt::Debug for Discover {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Discover")
    }
}

impl Discover {
    /// Looks endpoints up with `finder`.
    pub fn new(finder: Arc<dyn EndpointFinder>) -> Self {
        Self { finder }
    }
}

impl Element for Discover {
    type Needs = ();

    fn name(&self) -> &'static str {
        "discover"
    }

    fn provides(&self) -> Vec<Key> {
        vec![Key::of::<Candidates>()]
    }

    async fn request(
        &self,
        ctx: &mut Ctx,
        _: (),
        request: NetworkServiceRequest,
        next: Next<'_>,
    ) -> Result<Connection, Status> {
        if ctx.get::<Candidates>().is_none() {
            let conn = request.connection.clone().unwrap_or_default();
            if conn.network_service.is_empty() {
                return Err(Status::invalid_argument(
                    "connection names no network service",
                ));
            }
            let named = (!conn.network_service_endpoint_name.is_empty())
                .then(|| conn.network_service_endpoint_name.clone());
            let found = self
                .finder
                .find(EndpointQuery {
                    network_service: conn.network_service.clone(),
                    endpoint_name: named.clone(),
                })
                .await?;
            if found.is_empty() {
                return Err(Status::not_found(match named {
                    Some(n) => format!(
                        "endpoint {n:?} of network service {:?} not found",
                        conn.network_service
                    ),
                    None => format!(
                        "no endpoint serves network service {:?}",
                        conn.network_service
                    ),
                }));
            }
            ctx.insert(Candidates(found));
        }
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
