//! `monitor`: publishes connection events for `MonitorConnections`.
//!
//! A successful Request stores the connection and sends an UPDATE event; a
//! Close removes it and sends DELETE. Subscribers first get an
//! INITIAL_STATE_TRANSFER with every connection matching their selector.
//! Nothing to undo: events describe what happened.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use sriov_api::nsm::connection::{
    Connection, ConnectionEvent, ConnectionEventType, MonitorScopeSelector,
};
use sriov_api::nsm::networkservice::NetworkServiceRequest;
use tokio::sync::broadcast;

use crate::{Ctx, Element, ElementFuture, Next};

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

/// Whether a connection falls in a selector's scope: no path segments and
/// no services select everything; otherwise a segment must match by ID or
/// name, or the service by name.
pub fn matches(selector: &MonitorScopeSelector, conn: &Connection) -> bool {
    if selector.path_segments.is_empty() && selector.network_services.is_empty() {
        return true;
    }
    let by_service = selector.network_services.contains(&conn.network_service);
    let by_segment = conn.path.as_ref().is_some_and(|p| {
        p.path_segments.iter().any(|s| {
            selector.path_segments.iter().any(|want| {
                (!want.id.is_empty() && want.id == s.id)
                    || (!want.name.is_empty() && want.name == s.name)
            })
        })
    });
    by_service || by_segment
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
    fn name(&self) -> &'static str {
        "monitor"
    }

    fn request<'a>(
        &'a self,
        ctx: &'a mut Ctx,
        request: NetworkServiceRequest,
        next: Next<'a>,
    ) -> ElementFuture<'a, Connection> {
        Box::pin(async move {
            let conn = next.request(ctx, request).await?;
            self.publish(ConnectionEventType::Update, &conn);
            Ok(conn)
        })
    }

    fn close<'a>(
        &'a self,
        ctx: &'a mut Ctx,
        connection: Connection,
        next: Next<'a>,
    ) -> ElementFuture<'a, ()> {
        Box::pin(async move {
            let result = next.close(ctx, connection.clone()).await;
            self.publish(ConnectionEventType::Delete, &connection);
            result
        })
    }
}
