//! Undoing, from the pool's record alone, what a connection made before a
//! restart did to the host.
//!
//! A restarted forwarder has no chain context for the connections its
//! predecessor made; the pool's state file still says which VF each one
//! holds and what was changed for it ([`UndoRecord`]: where its netdev
//! went, the VF's MAC/VLAN before we set them, the device rules given to
//! the client's cgroups). [`Reclaim::connection`] puts the netdev back
//! (found again if the client's namespace is gone), restores the VF's
//! settings, revokes the device rules, gives a VFIO VF its kernel driver
//! back, and only then frees the VF, so the next tenant never gets a VF
//! still in someone's namespace, configured for someone else or on
//! vfio-pci. The daemon runs [`Reclaim::unfinished`] at start for Requests
//! its predecessor was killed in the middle of. `begin` uses it
//! for a Close of such a connection, and to find which connection a new
//! Request's token serves and which client made it ([`Orphans::holder`]:
//! a retry whose answer was lost); the forwarder's sweep uses it for one
//! that expired unrefreshed.

use std::sync::Arc;

use futures::future::BoxFuture;
use sriov_grpcfd::FdTable;
use sriov_netlink::NetlinkOps;
use sriov_netlink::Netns;
use sriov_pci::Sysfs;
use sriov_token_pool::{Pool, VfLease};
use sriov_vfio::CgroupDevices;
use tonic::Status;

use crate::records::ClientId;
use crate::returns::Returns;
use crate::status::{self, blocking};
use crate::undo::UndoRecord;

/// A connection the pool records as using a token, and the client its
/// record names (none in records of earlier builds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    /// Our connection id.
    pub connection: String,
    /// Who made it.
    pub client: Option<ClientId>,
}

/// What `begin` calls for a Close of a connection it has no context for,
/// and to find the connection a new Request's token already serves.
pub trait Orphans: Send + Sync + 'static {
    /// Undoes what the pool records for `connection`; `Ok(None)` when it
    /// records nothing (Close stays idempotent), else a line saying what
    /// was done. `fds` are those the Close's connection sent: the client's
    /// namespace, by fd, when the record names it by `inode://` (a
    /// forwarder without hostPID cannot find it in /proc).
    fn reclaim(
        &self,
        connection: &str,
        fds: Option<FdTable>,
    ) -> BoxFuture<'static, Result<Option<String>, Status>>;

    /// The connection using one of `tokens`, if one does: `begin` serves a
    /// Request from its client as a refresh of it (a retry whose answer was
    /// lost). None by default.
    fn holder(&self, tokens: Vec<String>) -> BoxFuture<'static, Result<Option<Holder>, Status>> {
        let _ = tokens;
        Box::pin(async { Ok(None) })
    }
}

/// See the module docs.
#[derive(Clone)]
pub struct Reclaim {
    pool: Arc<Pool>,
    sysfs: Sysfs,
    netlink: Arc<dyn NetlinkOps>,
    cgroups: Option<Arc<CgroupDevices>>,
    returns: Option<Returns>,
}

impl std::fmt::Debug for Reclaim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reclaim").finish_non_exhaustive()
    }
}

impl Reclaim {
    /// Reclaims through the same pool, sysfs and netlink the chain uses;
    /// VFs go back to their PF's `vfKernelDriver`, as the pool records it.
    pub fn new(pool: Arc<Pool>, sysfs: Sysfs, netlink: Arc<dyn NetlinkOps>) -> Self {
        Self {
            pool,
            sysfs,
            netlink,
            cgroups: None,
            returns: None,
        }
    }

    /// Waits for a connection's background undo ([`crate::returns`]) before undoing it from
    /// its record, so the two never act on the same VF at once.
    pub fn with_returns(mut self, returns: Returns) -> Self {
        self.returns = Some(returns);
        self
    }

    /// Revokes recorded device rules through `cgroups`.
    pub fn with_cgroups(mut self, cgroups: Arc<CgroupDevices>) -> Self {
        self.cgroups = Some(cgroups);
        self
    }

    /// See the module docs. On an error the VF stays recorded as in use, so
    /// a later Close or sweep tries again rather than hand it out dirty.
    pub async fn connection(&self, connection: &str) -> Result<Option<String>, Status> {
        self.connection_with(connection, None).await
    }

    /// [`Reclaim::connection`], reaching the client's namespace through
    /// `fds` (the closing caller's) when the record names it by inode.
    pub async fn connection_with(
        &self,
        connection: &str,
        fds: Option<FdTable>,
    ) -> Result<Option<String>, Status> {
        if let Some(returns) = &self.returns {
            returns.wait_connection(connection).await;
        }
        let pool = self.pool.clone();
        let id = connection.to_string();
        let Some(lease) = blocking(move || pool.lease_of(&id).map_err(status::pool)).await? else {
            return Ok(None);
        };
        let mut done = Vec::new();
        let record = UndoRecord::of(&lease).unwrap_or_default();
        if let Some(mut moved) = record.move_to_undo().cloned() {
            let name = moved.client_name.clone();
            if moved.held.is_none()
                && let Some(fds) = &fds
                && let Ok(Some(fd)) = fds.get(moved.netns_id.dev, moved.netns_id.ino)
            {
                let named = sriov_netlink::NetnsUrl::Inode {
                    dev: moved.netns_id.dev,
                    ino: moved.netns_id.ino,
                };
                if let Ok(Ok(ns)) =
                    tokio::task::spawn_blocking(move || Netns::from_received(fd, &named)).await
                {
                    moved.held = Some(Arc::new(ns));
                }
            }
            let outcome = self
                .netlink
                .back_out(moved)
                .await
                .map_err(status::netlink)?;
            done.push(format!("netdev {name} back ({outcome:?})"));
        }
        if let Some(vf) = record.vf {
            let (pf, n) = (vf.pf_name.clone(), vf.vf);
            self.netlink.restore_vf(vf).await.map_err(status::netlink)?;
            done.push(format!("VF {n} of {pf} settings restored"));
        }
        if let Some(grant) = record.grant {
            let cgroups = self.cgroups.clone().ok_or_else(|| {
                Status::internal("device rules are recorded but the cgroup root is unusable")
            })?;
            let rules = grant.rules().len();
            blocking(move || cgroups.revoke_recorded(&grant).map_err(status::vfio)).await?;
            done.push(format!("{rules} device rule(s) revoked"));
        }
        // Either kind: a bind killed half-way leaves the VF without a driver
        // or with `driver_override` set; this puts it on its kernel driver
        // with the override cleared, as the next tenant expects.
        done.push(self.rebind_kernel(&lease).await?);
        sriov_failpoint::hit("reclaim.before-free");
        let pool = self.pool.clone();
        let id = connection.to_string();
        blocking(move || pool.unuse(&id).map_err(status::pool)).await?;
        done.push(format!("VF {} free", lease.vf));
        Ok(Some(done.join(", ")))
    }

    /// Rolls back every use whose Request never finished (see
    /// [`UndoRecord::unfinished`]): the process before this one was killed
    /// in the middle of it, so its client never got an answer and retries
    /// with a fresh Request. Run at start, before serving. Returns a line
    /// per connection rolled back, or the error that keeps it recorded for
    /// the sweep to retry.
    ///
    /// First the device rules of the established uses are taken over
    /// ([`CgroupDevices::adopt`]): their containers still use them, so
    /// neither this roll-back nor a later Close of one connection denies a
    /// node another connection of the same container still opens (the
    /// shared `/dev/vfio/vfio`).
    pub async fn unfinished(&self) -> Vec<(String, Result<Option<String>, Status>)> {
        let pool = self.pool.clone();
        let uses = match blocking(move || pool.uses().map_err(status::pool)).await {
            Ok(u) => u,
            Err(e) => return vec![(String::new(), Err(e))],
        };
        if let Some(cgroups) = &self.cgroups {
            for (_, lease) in &uses {
                if let Some(grant) = UndoRecord::of(lease)
                    .filter(|r| r.established)
                    .and_then(|r| r.grant)
                {
                    cgroups.adopt(&grant);
                }
            }
        }
        let mut out = Vec::new();
        for (connection, lease) in uses {
            if UndoRecord::unfinished(&lease) {
                let result = self.connection(&connection).await;
                out.push((connection, result));
            }
        }
        out
    }

    async fn rebind_kernel(&self, lease: &VfLease) -> Result<String, Status> {
        let driver = self.pool.vf_kernel_driver(lease.pf).ok_or_else(|| {
            Status::internal(format!("no vfKernelDriver configured for PF {}", lease.pf))
        })?;
        let (sysfs, vf, d) = (self.sysfs.clone(), lease.vf, driver.clone());
        blocking(move || sysfs.restore_driver(vf, Some(&d)).map_err(status::pci)).await?;
        Ok(format!("VF {} back on {driver}", lease.vf))
    }
}

impl Orphans for Reclaim {
    fn reclaim(
        &self,
        connection: &str,
        fds: Option<FdTable>,
    ) -> BoxFuture<'static, Result<Option<String>, Status>> {
        let this = self.clone();
        let id = connection.to_string();
        Box::pin(async move { this.connection_with(&id, fds).await })
    }

    fn holder(&self, tokens: Vec<String>) -> BoxFuture<'static, Result<Option<Holder>, Status>> {
        let pool = self.pool.clone();
        Box::pin(async move {
            let uses = blocking(move || pool.uses().map_err(status::pool)).await?;
            Ok(uses
                .into_iter()
                .find(|(_, lease)| tokens.contains(&lease.token))
                .map(|(connection, lease)| Holder {
                    connection,
                    client: UndoRecord::of(&lease).and_then(|r| r.client),
                }))
        })
    }
}
