//! `monitor`: publishes connection events for `MonitorConnections`.
//!
//! A successful Request stores the connection and sends an UPDATE event; a
//! Close removes it and sends DELETE. Subscribers first get an
//! INITIAL_STATE_TRANSFER with every connection matching their selector.
//! Nothing to undo: events describe what happened.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use sriov_api::nsm::connection::{
    Connection, ConnectionEvent, ConnectionEventType, MonitorScopeSelector, PathSegment,
};
use sriov_api::nsm::networkservice::NetworkServiceRequest;
use tokio::sync::broadcast;
use tonic::Status;

use crate::{Ctx, Element, Next};

/// The event bus and current connections, shared with the gRPC server.
#[derive(Debug, Clone)]
pub struct Monitor {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    connections: Mutex<BTreeMap<String, Connection>>,
    events: broadcast::Sender<ConnectionEvent>,
}

impl Default for Monitor {
    fn default() -> Self {
        Self {
            inner: Arc::new(Inner {
                connections: Mutex::new(BTreeMap::new()),
                events: broadcast::channel(1024).0,
            }),
        }
    }
}

/// Whether a selector segment matches a path segment: each field the
/// selector sets must be equal, an empty one matches anything.
fn segment_matches(want: &PathSegment, have: &PathSegment) -> bool {
    (want.name.is_empty() || want.name == have.name)
        && (want.id.is_empty() || want.id == have.id)
        && (want.token.is_empty() || want.token == have.token)
}

/// Whether a connection falls in a selector's scope, as NSM's SDK decides
/// it (api `connection_helpers.go`): the connection's network service must
/// be one of those listed (none listed: any), and the selector's segments
/// must match consecutive segments of its path.
/// `MonitorServer` refuses selectors naming no segment id, so the scope is
/// always connections the caller is part of.
pub fn matches(selector: &MonitorScopeSelector, conn: &Connection) -> bool {
    if !selector.network_services.is_empty()
        && !selector.network_services.contains(&conn.network_service)
    {
        return false;
    }
    let want = &selector.path_segments;
    if want.is_empty() {
        return true;
    }
    let have = conn
        .path
        .as_ref()
        .map(|p| p.path_segments.as_slice())
        .unwrap_or_default();
    have.windows(want.len())
        .any(|w| w.iter().zip(want).all(|(h, w)| segment_matches(w, h)))
}

/// Why a selector may not be served, if it may not: it must name at
/// least one segment id (ids are unguessable UUIDs, so naming one proves
/// the caller is on that connection's path).
pub fn refuse(selector: &MonitorScopeSelector) -> Option<tonic::Status> {
    if selector.path_segments.iter().any(|s| !s.id.is_empty()) {
        return None;
    }
    Some(tonic::Status::permission_denied(
        "MonitorConnections selector names no path segment id: connections are shown only \
         to a caller naming a segment id of their path",
    ))
}

impl Monitor {
    /// An empty monitor.
    pub fn new() -> Self {
        Self::default()
    }

    /// The initial state for `selector` and a receiver of later events.
    pub fn subscribe(
        &self,
        selector: &MonitorScopeSelector,
    ) -> (ConnectionEvent, broadcast::Receiver<ConnectionEvent>) {
        let rx = self.inner.events.subscribe();
        let connections = self
            .inner
            .connections
            .lock()
            .map(|c| {
                c.iter()
                    .filter(|(_, conn)| matches(selector, conn))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect::<HashMap<_, _>>()
            })
            .unwrap_or_default();
        let initial = ConnectionEvent {
            r#type: ConnectionEventType::InitialStateTransfer as i32,
            connections,
        };
        (initial, rx)
    }

    /// Connections currently established.
    pub fn connections(&self) -> Vec<Connection> {
        self.inner
            .connections
            .lock()
            .map(|c| c.values().cloned().collect())
            .unwrap_or_default()
    }

    fn publish(&self, kind: ConnectionEventType, conn: &Connection) {
        if let Ok(mut c) = self.inner.connections.lock() {
            match kind {
                ConnectionEventType::Delete => {
                    c.remove(&conn.id);
                }
                _ => {
                    c.insert(conn.id.clone(), conn.clone());
                }
            }
        }
        // No subscribers is fine: the state above is what late ones get.
        let _ = self.inner.events.send(ConnectionEvent {
            r#type: kind as i32,
            connections: HashMap::from([(conn.id.clone(), conn.clone())]),
        });
    }
}

impl Element for Monitor {
    type Needs = ();

    fn name(&self) -> &'static str {
        "monitor"
    }

    async fn request(
        &self,
        ctx: &mut Ctx,
        _: (),
        request: NetworkServiceRequest,
        next: Next<'_>,
    ) -> Result<Connection, Status> {
        let conn = next.request(ctx, request).await?;
        self.publish(ConnectionEventType::Update, &conn);
        Ok(conn)
    }

    async fn close(
        &self,
        ctx: &mut Ctx,
        connection: Connection,
        next: Next<'_>,
    ) -> Result<(), Status> {
        let result = next.close(ctx, connection.clone()).await;
        self.publish(ConnectionEventType::Delete, &connection);
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sriov_api::nsm::connection::Path;

    fn seg(name: &str, id: &str) -> PathSegment {
        PathSegment {
            name: name.into(),
            id: id.into(),
            ..Default::default()
        }
    }

    fn conn() -> Connection {
        Connection {
            id: "f1".into(),
            network_service: "ns".into(),
            path: Some(Path {
                index: 1,
                path_segments: vec![seg("nsc", "c1"), seg("forwarder", "f1"), seg("nse", "e1")],
            }),
            ..Default::default()
        }
    }

    fn selector(segments: Vec<PathSegment>, services: &[&str]) -> MonitorScopeSelector {
        MonitorScopeSelector {
            path_segments: segments,
            network_services: services.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn segments_match_consecutively_with_empty_fields_as_wildcards() {
        let c = conn();
        assert!(matches(&selector(vec![seg("", "c1")], &[]), &c));
        assert!(matches(
            &selector(vec![seg("", "c1"), seg("forwarder", "")], &[]),
            &c
        ));
        assert!(!matches(
            &selector(vec![seg("", "c1"), seg("nse", "")], &[]),
            &c
        ));
        assert!(!matches(&selector(vec![seg("nse", "c1")], &[]), &c));
        assert!(!matches(&selector(vec![seg("", "other")], &[]), &c));
    }

    #[test]
    fn the_connections_service_must_be_one_of_those_listed() {
        let c = conn();
        assert!(matches(&selector(vec![seg("", "f1")], &["ns"]), &c));
        assert!(matches(
            &selector(vec![seg("", "f1")], &["other", "ns"]),
            &c
        ));
        assert!(!matches(&selector(vec![seg("", "f1")], &["other"]), &c));
    }

    #[test]
    fn a_selector_without_a_segment_id_is_refused() {
        for s in [
            selector(vec![], &[]),
            selector(vec![], &["ns"]),
            selector(vec![seg("forwarder", "")], &[]),
        ] {
            let e = refuse(&s).map(|e| e.code());
            assert_eq!(e, Some(tonic::Code::PermissionDenied), "{s:?}");
        }
        assert!(refuse(&selector(vec![seg("", "c1")], &[])).is_none());
    }
}
