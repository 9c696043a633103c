//! The records elements leave in a connection's context for later ones
//! (each element's `provides()` names them, its `Needs` reads them), kept
//! here so that no element imports another's module to read what it left.

use std::net::IpAddr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sriov_api::nsm::connection::Connection;
use sriov_api::nsm::registry::NetworkServiceEndpoint;
use sriov_netlink::{IpNetwork, MacAddr};
use sriov_token_pool::{Pool, VfLease};
use tonic::Status;

use crate::caller::Caller;
use crate::status::{self, blocking};
use crate::undo::UndoRecord;

/// The connection's `tokenID`, whatever its mechanism.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token(pub String);

/// The VF a connection uses, for the elements after this one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VfBinding {
    /// The pool's lease (token, PF, VF, IOMMU group, driver kind).
    pub lease: VfLease,
    /// The VF's index on its PF (the `N` of `virtfnN`).
    pub vf_index: u32,
    /// The PF's netdev, through which VF settings are made.
    pub pf_netdev: Option<String>,
    /// The VF's netdev in our namespace (KERNEL only).
    pub vf_netdev: Option<String>,
    /// The driver the VF had before we bound it.
    pub previous_driver: Option<String>,
}

/// The file descriptors the calling connection sent (fd passing on a unix
/// socket), for this call only: `begin` puts them in the connection's
/// context for the call and takes them out after, so a later call (an
/// expiry's Close) never resolves against a connection that is not its own.
#[derive(Debug, Clone)]
pub struct CallFds(pub sriov_grpcfd::FdTable);

/// The client a Request comes from, as `authorize` tells owners apart: the
/// path's first segment (the client's own name and the id it chose for its
/// connection) and, in secure mode, the mTLS peer's SPIFFE ID. `begin` puts
/// it in the context for the call and it is recorded with the connection
/// ([`UndoRecord::client`]), so that a client whose answer was lost (the
/// forwarder killed, or the call cancelled, after the connection was
/// established) is recognised when it retries without our segment's id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientId {
    /// The first segment's name.
    pub name: String,
    /// The first segment's id.
    pub id: String,
    /// The caller's SPIFFE ID, in secure mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spiffe_id: Option<String>,
}

impl ClientId {
    /// The client `connection` names (its path index already at our
    /// segment), called by `caller`; `None` when the path has no segment
    /// before ours: a first hop's clients all look alike, so none can be
    /// told from another.
    pub fn of_call(connection: &Connection, caller: Option<&Caller>) -> Option<Self> {
        let path = connection.path.as_ref().filter(|p| p.index > 0)?;
        let first = path.path_segments.first()?;
        Some(Self {
            name: first.name.clone(),
            id: first.id.clone(),
            spiffe_id: caller
                .and_then(|c| c.peer.as_ref())
                .map(|p| p.spiffe_id.clone()),
        })
    }
}

/// When the caller stops waiting (its `grpc-timeout`), if it said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadline(pub tokio::time::Instant);

/// Endpoints found for a connection, in the registry's order.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidates(pub Vec<NetworkServiceEndpoint>);

/// Keeps the connection's [`UndoRecord`] with its pool lease, so a
/// restarted forwarder can adopt or undo the connection.
#[derive(Debug, Clone)]
pub struct UndoLog {
    pool: Arc<Pool>,
    connection: String,
    record: Arc<std::sync::Mutex<UndoRecord>>,
    kept: Arc<std::sync::atomic::AtomicBool>,
}

impl UndoLog {
    /// The log of `connection`'s `record`, persisted with its lease in `pool`.
    /// The record names `client` from its first write on (one adopted
    /// after a restart keeps the client it names).
    pub(crate) fn new(
        pool: Arc<Pool>,
        connection: String,
        mut record: UndoRecord,
        client: Option<ClientId>,
    ) -> Self {
        if record.client.is_none() {
            record.client = client;
        }
        Self {
            pool,
            connection,
            record: Arc::new(std::sync::Mutex::new(record)),
            kept: Arc::default(),
        }
    }

    /// Changes the record with `change` and writes the whole record with
    /// the connection's lease to the pool's journal before returning: a
    /// restarted process reads it. [`UndoLog::sync`] puts it on disk.
    pub async fn update(&self, change: impl FnOnce(&mut UndoRecord)) -> Result<(), Status> {
        let value = {
            let mut r = self
                .record
                .lock()
                .map_err(|_| Status::internal("undo record lock poisoned"))?;
            change(&mut r);
            serde_json::to_value(&*r)
                .map_err(|e| Status::internal(format!("serializing an undo record: {e}")))?
        };
        let (pool, conn) = (self.pool.clone(), self.connection.clone());
        let recorded =
            blocking(move || pool.record_undo(&conn, Some(value)).map_err(status::pool)).await?;
        if recorded {
            Ok(())
        } else {
            // The use left the pool (a journal failure refused it): the host
            // change this record was to guard must not be made unrecorded.
            Err(Status::unavailable(format!(
                "connection {}: its VF's use is no longer recorded, so nothing more is changed \
                 on the host for it",
                self.connection
            )))
        }
    }

    /// Puts every record of the connection written so far on disk (one
    /// `fdatasync`, shared with concurrent Requests): the Request's answer
    /// waits for it once, not every record for its own.
    pub async fn sync(&self) -> Result<(), Status> {
        let (pool, conn) = (self.pool.clone(), self.connection.clone());
        blocking(move || pool.sync_use(&conn).map_err(status::pool)).await
    }

    /// An element could not undo a host change it recorded: the VF's use must outlive the
    /// failed Request, so the record is there for the sweep ([`UndoLog::kept`]).
    pub fn keep(&self) {
        self.kept.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Whether an element left a host change for the sweep ([`UndoLog::keep`]).
    pub fn kept(&self) -> bool {
        self.kept.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Whether the record says the connection is established.
    pub(crate) fn established(&self) -> bool {
        self.record.lock().is_ok_and(|r| r.established)
    }
}

/// The client-side IP configuration, for `inject`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct IpPlan {
    /// Addresses with prefix.
    pub addresses: Vec<IpNetwork>,
    /// Routes: destination and optional gateway.
    pub routes: Vec<(IpNetwork, Option<IpAddr>)>,
    /// Static neighbours.
    pub neighbours: Vec<(IpAddr, MacAddr)>,
    /// MTU.
    pub mtu: Option<u32>,
}
