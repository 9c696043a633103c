//! The gRPC face of the chain: `networkservice.NetworkService` and
//! `connection.MonitorConnection`.

use std::pin::Pin;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use sriov_api::nsm::connection::monitor_connection_server::MonitorConnection;
use sriov_api::nsm::connection::{Connection, ConnectionEvent, MonitorScopeSelector};
use sriov_api::nsm::networkservice::NetworkServiceRequest;
use sriov_api::nsm::networkservice::network_service_server::NetworkService;
use tonic::{Request, Response, Status};
use tracing::Instrument;

use crate::caller::{Caller, PeerIdentity};
use crate::elements::authorize::Authorization;
use crate::elements::monitor::{Monitor, matches, refuse};
use crate::records::{CallFds, Deadline};
use crate::{Chain, Ctx, metrics};

/// The caller's deadline from its `grpc-timeout` header (gRPC over HTTP/2:
/// at most 8 digits and a unit, `H`, `M`, `S`, `m`, `u` or `n`); `None`
/// when absent or malformed.
pub fn grpc_timeout(metadata: &tonic::metadata::MetadataMap) -> Option<std::time::Duration> {
    use std::time::Duration;
    let raw = metadata.get("grpc-timeout")?.to_str().ok()?;
    let split = raw.len().checked_sub(1)?;
    let (digits, unit) = (raw.get(..split)?, raw.get(split..)?);
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// A context carrying the caller's deadline, if it sent one, and the fds
/// its connection sent, if it came over a connection that passes them
/// (`sriov_authority::ConnInfo` holding a `sriov_grpcfd::FdTable`).
fn ctx_for<T>(request: &Request<T>) -> Ctx {
    let mut ctx = Ctx::new();
    if let Some(left) = grpc_timeout(request.metadata()) {
        ctx.insert(Deadline(tokio::time::Instant::now() + left));
    }
    let info = request.extensions().get::<sriov_authority::ConnInfo>();
    if let Some(fds) = info.and_then(|info| info.get::<sriov_grpcfd::FdTable>()) {
        ctx.insert(CallFds(fds.clone()));
    }
    let peer = info.and_then(|info| info.get::<PeerIdentity>()).cloned();
    ctx.insert(Caller::from_call(peer, request.metadata()));
    ctx
}

/// Serves NetworkService Request/Close through a chain.
///
/// Each call runs in a task of its own, to completion, whatever the caller
/// does: a client that cancels (a deadline, a dropped connection) would
/// otherwise drop the chain at whichever await it had reached, between two
/// host changes, with neither the rest done nor the first undone. A Request
/// finished for a caller that has gone stays established like any other:
/// the client's retry is a refresh of it, and without one it expires.
#[derive(Debug, Clone)]
pub struct NetworkServiceServer {
    chain: Arc<Chain>,
}

impl NetworkServiceServer {
    /// Serves `chain`.
    pub fn new(chain: Arc<Chain>) -> Self {
        Self { chain }
    }
}

#[tonic::async_trait]
impl NetworkService for NetworkServiceServer {
    async fn request(
        &self,
        request: Request<NetworkServiceRequest>,
    ) -> Result<Response<Connection>, Status> {
        let mut ctx = ctx_for(&request);
        let req = request.into_inner();
        let id = req
            .connection
            .as_ref()
            .map(|c| c.id.clone())
            .unwrap_or_default();
        let asked = requested_mechanism(&req);
        let span = call_span("nsm.Request", &id);
        let chain = self.chain.clone();
        // Logged in the task: a caller that went away still gets a line.
        let served = async move {
            let result = chain.request(&mut ctx, req).await;
            let mechanism = metrics::mechanism_label(
                result
                    .as_ref()
                    .ok()
                    .and_then(|c| c.mechanism.as_ref())
                    .map(|m| m.r#type.as_str())
                    .or(asked.as_deref()),
            );
            let outcome = metrics::result_label(&result);
            metrics::count_request(mechanism, outcome);
            let span = tracing::Span::current();
            span.record("mechanism", mechanism);
            span.record("result", outcome);
            match &result {
                Ok(_) => tracing::info!(connection = %id, "request served"),
                Err(e) => {
                    tracing::warn!(connection = %id, code = ?e.code(), error = %e.message(), "request failed");
                }
            }
            result
        };
        let task = tokio::spawn(metrics::with_call_span(span.clone(), served).instrument(span));
        task.await
            .unwrap_or_else(|e| Err(Status::internal(format!("request task failed: {e}"))))
            .map(Response::new)
    }

    async fn close(&self, request: Request<Connection>) -> Result<Response<()>, Status> {
        let mut ctx = ctx_for(&request);
        let conn = request.into_inner();
        let id = conn.id.clone();
        let mechanism =
            metrics::mechanism_label(conn.mechanism.as_ref().map(|m| m.r#type.as_str()));
        let span = call_span("nsm.Close", &id);
        span.record("mechanism", mechanism);
        let chain = self.chain.clone();
        let closed = async move {
            let result = chain.close(&mut ctx, conn).await;
            let outcome = metrics::result_label(&result);
            metrics::count_close(mechanism, outcome);
            tracing::Span::current().record("result", outcome);
            result
        };
        tokio::spawn(metrics::with_call_span(span.clone(), closed).instrument(span))
            .await
            .unwrap_or_else(|e| Err(Status::internal(format!("close task failed: {e}"))))?;
        tracing::info!(connection = %id, "closed");
        Ok(Response::new(()))
    }
}

/// The mechanism a Request asks for: the established connection's, else
/// the client's first preference.
fn requested_mechanism(req: &NetworkServiceRequest) -> Option<String> {
    req.connection
        .as_ref()
        .and_then(|c| c.mechanism.as_ref())
        .or(req.mechanism_preferences.first())
        .map(|m| m.r#type.clone())
}

/// The span of one NetworkService call; the fields left empty are filled
/// in as they become known (the VF by `bindvf`, the rest at the end).
fn call_span(name: &'static str, connection: &str) -> tracing::Span {
    // tracing names spans statically: one literal per call kind.
    match name {
        "nsm.Close" => tracing::info_span!(
            "nsm.Close",
            connection.id = connection,
            mechanism = tracing::field::Empty,
            vf.address = tracing::field::Empty,
            resource = tracing::field::Empty,
            result = tracing::field::Empty,
        ),
        _ => tracing::info_span!(
            "nsm.Request",
            connection.id = connection,
            mechanism = tracing::field::Empty,
            vf.address = tracing::field::Empty,
            resource = tracing::field::Empty,
            refresh = tracing::field::Empty,
            result = tracing::field::Empty,
        ),
    }
}

/// Serves `MonitorConnections` from a [`Monitor`].
///
/// A subscriber names the connections it watches by their path segments
/// and sees only connections with one of them (`monitor::matches`). In
/// secure mode the monitor policies also run for every peer
/// (`service_connection` by default: the caller's SPIFFE ID must own one
/// of the connections it names, as recorded by `authorize`). The Go
/// forwarder runs none there (its monitor authorize's default list is
/// commented out); we keep NSM's own rule on.
#[derive(Clone)]
pub struct MonitorServer {
    monitor: Monitor,
    authorization: Option<Authorization>,
}

impl std::fmt::Debug for MonitorServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MonitorServer")
            .field("policies", &self.authorization.is_some())
            .finish_non_exhaustive()
    }
}

impl MonitorServer {
    /// Streams `monitor`'s events.
    pub fn new(monitor: Monitor) -> Self {
        Self {
            monitor,
            authorization: None,
        }
    }

    /// Also checks `authorization`'s (monitor) policies for every peer.
    pub fn with_policies(mut self, authorization: Authorization) -> Self {
        self.authorization = Some(authorization);
        self
    }
}

type EventStream = Pin<Box<dyn Stream<Item = Result<ConnectionEvent, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl MonitorConnection for MonitorServer {
    type MonitorConnectionsStream = EventStream;

    async fn monitor_connections(
        &self,
        request: Request<MonitorScopeSelector>,
    ) -> Result<Response<Self::MonitorConnectionsStream>, Status> {
        let peer = request
            .extensions()
            .get::<sriov_authority::ConnInfo>()
            .and_then(|info| info.get::<PeerIdentity>())
            .cloned();
        let selector = request.into_inner();
        crate::elements::limits::check_selector(&selector)?;
        if let Some(refused) = refuse(&selector) {
            return Err(refused);
        }
        if let (Some(auth), Some(peer)) = (&self.authorization, &peer) {
            let input = sriov_policy::Input::monitor(
                &selector.path_segments,
                &sriov_policy::Peer {
                    spiffe_id: Some(&peer.spiffe_id),
                    certificate_der: Some(&peer.cert_der),
                },
                &auth.owners,
            );
            auth.policies.check(&input).map_err(|d| {
                Status::permission_denied(format!(
                    "MonitorConnections denied by policy {}: {}",
                    d.policy, d.reason
                ))
            })?;
        }
        let (initial, rx) = self.monitor.subscribe(&selector);
        let updates = futures::stream::unfold((rx, selector), |(mut rx, selector)| async move {
            loop {
                match rx.recv().await {
                    Ok(mut ev) => {
                        ev.connections.retain(|_, c| matches(&selector, c));
                        if !ev.connections.is_empty() {
                            return Some((Ok(ev), (rx, selector)));
                        }
                    }
                    // A slow watcher misses events rather than stalling the forwarder.
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
                }
            }
        });
        let stream: EventStream =
            Box::pin(futures::stream::once(async move { Ok(initial) }).chain(updates));
        Ok(Response::new(stream))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::time::Duration;

    use super::{ctx_for, grpc_timeout};
    use crate::records::CallFds;

    fn parse(value: &str) -> Option<Duration> {
        let mut m = tonic::metadata::MetadataMap::new();
        m.insert("grpc-timeout", value.parse().unwrap());
        grpc_timeout(&m)
    }

    #[test]
    fn grpc_timeout_is_read_as_the_grpc_http2_spec_writes_it() {
        assert_eq!(parse("15S"), Some(Duration::from_secs(15)));
        assert_eq!(parse("100m"), Some(Duration::from_millis(100)));
        assert_eq!(parse("2H"), Some(Duration::from_secs(7200)));
        assert_eq!(parse("99999999n"), Some(Duration::from_nanos(99_999_999)));
        for bad in ["", "S", "123456789S", "10s", "-1S", "1.5S", "10"] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
        assert_eq!(grpc_timeout(&tonic::metadata::MetadataMap::new()), None);
    }

    #[test]
    fn the_connections_fd_table_reaches_the_call_context() {
        let table = sriov_grpcfd::FdTable::default();
        let mut ext = http::Extensions::new();
        ext.insert(table);
        let mut req = tonic::Request::new(());
        req.extensions_mut()
            .insert(sriov_authority::ConnInfo::new(ext));
        assert!(ctx_for(&req).get::<CallFds>().is_some());
        assert!(ctx_for(&tonic::Request::new(())).get::<CallFds>().is_none());
    }
}
