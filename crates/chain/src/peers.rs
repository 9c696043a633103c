//! The forwarder's peers as the chain sees them: the next hop it passes
//! requests to, and the registry it finds endpoints in. The gRPC
//! implementations live in `sriov-nsm`; tests use in-memory ones.

use futures::future::BoxFuture;
use sriov_api::nsm::connection::Connection;
use sriov_api::nsm::networkservice::NetworkServiceRequest;
use sriov_api::nsm::registry::NetworkServiceEndpoint;
use tonic::Status;

/// Where the `connect` element sends a request after the forwarder's own
/// work: the NSM manager at `NSM_CONNECT_TO`, which routes it to the
/// endpoint the `discover`/`roundrobin` elements chose.
pub trait NextHop: Send + Sync + 'static {
    /// Requests (or refreshes) the connection of the next hop.
    fn request(
        &self,
        request: NetworkServiceRequest,
    ) -> BoxFuture<'static, Result<Connection, Status>>;

    /// Closes the next hop's connection.
    fn close(&self, connection: Connection) -> BoxFuture<'static, Result<(), Status>>;
}

/// What to look up in the registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointQuery {
    /// The network service the connection asks for.
    pub network_service: String,
    /// An endpoint the request already names (`network_service_endpoint_name`).
    pub endpoint_name: Option<String>,
}

/// Finds network service endpoints (the registry's `Find`).
pub trait EndpointFinder: Send + Sync + 'static {
    /// Endpoints serving the query, unexpired.
    fn find(
        &self,
        query: EndpointQuery,
    ) -> BoxFuture<'static, Result<Vec<NetworkServiceEndpoint>, Status>>;
}
