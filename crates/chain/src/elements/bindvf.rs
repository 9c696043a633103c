//! `bindvf`: turns the client's `tokenID` into a VF bound to the
//! right driver.
//!
//! On Request it asks the pool for a VF of the token's PF (the pool
//! enforces one connection per token, free VFs only, and no IOMMU group
//! shared between kernel and vfio-pci use), binds the VF to the PF's VF
//! kernel driver (KERNEL) or to vfio-pci (VFIO), waits for the kernel
//! netdev when it needs one, and sets the `pciAddress` parameter. A
//! refresh only extends the pool's lease. Undone on Close and when a later
//! element fails: the previous driver is restored and the VF returned.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::FutureExt;
use sriov_api::nsm::connection::Connection;
use sriov_api::nsm::networkservice::NetworkServiceRequest;
use sriov_pci::{PciAddress, Sysfs};
use sriov_token_pool::{DriverKind, Pool, VfLease};
use tonic::Status;

use crate::contract::Key;
use crate::records::Token;
use crate::records::{ClientId, UndoLog, VfBinding};
use crate::returns::Deferred;
use crate::status::{self, blocking};
use crate::undo::UndoRecord;
use crate::{Ctx, Element, Next};
use crate::{metrics, params};

/// See the module docs.
#[derive(Debug)]
pub struct BindVf {
    pool: Arc<Pool>,
    sysfs: Sysfs,
    kind: DriverKind,
    lifetime: Duration,
    netdev_timeout: Duration,
}

impl BindVf {
    /// Serves `kind` from `pool` (whose PFs know their `vfKernelDriver`);
    /// leases last `lifetime` unless refreshed.
    pub fn new(pool: Arc<Pool>, sysfs: Sysfs, kind: DriverKind, lifetime: Duration) -> Self {
        Self {
            pool,
            sysfs,
            kind,
            lifetime,
            netdev_timeout: Duration::from_secs(10),
        }
    }

    fn expires_at(&self) -> u64 {
        (SystemTime::now() + self.lifetime)
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(u64::MAX)
    }

    fn driver_for(&self, pf: PciAddress) -> Result<String, Status> {
        match self.kind {
            DriverKind::Vfio => Ok("vfio-pci".to_string()),
            DriverKind::Kernel => self.pool.vf_kernel_driver(pf).ok_or_else(|| {
                Status::internal(format!("no vfKernelDriver configured for PF {pf}"))
            }),
        }
    }

    /// Binds the leased VF and gathers what later elements need (blocking sysfs work).
    fn bind(&self, lease: VfLease) -> Result<VfBinding, Status> {
        let driver = self.driver_for(lease.pf)?;
        let mut previous =
            tracing::info_span!("host.bind", vf.address = %lease.vf, driver = %driver)
                .in_scope(|| self.sysfs.bind(lease.vf, &driver))
                .map_err(status::pci)?;
        // A use recorded before a restart, adopted now: the VF is still on the driver our
        // earlier run bound, so what `bind` found is ours, not what Close must restore. A
        // free VF waits on its PF's kernel driver (unless Allocate bound it to the token,
        // and then vfio-pci is where the pod keeps it).
        if lease.undo.is_some()
            && !lease.bound_at_allocate
            && previous.as_deref() == Some(driver.as_str())
            && let Some(kernel) = self.pool.vf_kernel_driver(lease.pf)
        {
            previous = Some(kernel);
        }
        let undo = |e: Status| {
            if previous.as_deref() != Some(driver.as_str())
                && let Err(re) = self.sysfs.restore_driver(lease.vf, previous.as_deref())
            {
                tracing::warn!(vf = %lease.vf, error = %re, "restoring the VF's driver");
            }
            e
        };
        let vf_index = self
            .sysfs
            .vf_index(lease.pf, lease.vf)
            .map_err(status::pci)
            .map_err(undo)?
            .ok_or_else(|| {
                undo(Status::internal(format!(
                    "VF {} is not a VF of {}",
                    lease.vf, lease.pf
                )))
            })?;
        let pf_netdev = self
            .sysfs
            .netdevs(lease.pf)
            .map_err(status::pci)
            .map_err(undo)?
            .into_iter()
            .next();
        let vf_netdev = match self.kind {
            DriverKind::Vfio => None,
            // A use recorded before a restart whose netdev was moved: it is
            // in the client's namespace, not ours; `inject` adopts it.
            DriverKind::Kernel
                if UndoRecord::of(&lease).is_some_and(|r| r.established && r.moved.is_some()) =>
            {
                None
            }
            DriverKind::Kernel => Some(self.wait_netdev(lease.vf).map_err(undo)?),
        };
        Ok(VfBinding {
            lease,
            vf_index,
            pf_netdev,
            vf_netdev,
            previous_driver: previous,
        })
    }

    /// A kernel driver creates the netdev asynchronously after probe.
    fn wait_netdev(&self, vf: PciAddress) -> Result<String, Status> {
        let start = std::time::Instant::now();
        loop {
            if let Some(n) = self
                .sysfs
                .netdevs(vf)
                .map_err(status::pci)?
                .into_iter()
                .next()
            {
                return Ok(n);
            }
            if start.elapsed() > self.netdev_timeout {
                return Err(Status::unavailable(format!(
                    "VF {vf} has no netdev {} ms after binding its kernel driver",
                    self.netdev_timeout.as_millis()
                )));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Gives the VF back ([`BindVf::unbind`]), unless a later element left a host change it
    /// could not undo ([`UndoLog::kept`]): then the use stays, with the record of that change,
    /// and expires now, so the sweep undoes it from the record before the VF is handed out
    /// again.
    fn release(
        &self,
        binding: &VfBinding,
        connection: &str,
        log: Option<&UndoLog>,
    ) -> Result<(), Status> {
        if !log.is_some_and(UndoLog::kept) {
            return self.unbind(binding, connection);
        }
        tracing::warn!(
            vf = %binding.lease.vf,
            %connection,
            "a host change of this connection could not be undone; its VF stays in use until the sweep undoes it"
        );
        self.pool
            .refresh(connection, 0)
            .map(|_| ())
            .map_err(status::pool)
    }

    fn unbind(&self, binding: &VfBinding, connection: &str) -> Result<(), Status> {
        let driver = self.driver_for(binding.lease.pf)?;
        let restore = if binding.previous_driver.as_deref() != Some(driver.as_str()) {
            tracing::info_span!("host.unbind", vf.address = %binding.lease.vf)
                .in_scope(|| {
                    self.sysfs
                        .restore_driver(binding.lease.vf, binding.previous_driver.as_deref())
                })
                .map_err(status::pci)
        } else {
            Ok(())
        };
        // The VF goes back to the pool even if the driver could not be
        // restored: a stuck driver must not leak the VF forever.
        self.pool.unuse(connection).map_err(status::pool)?;
        restore
    }
}

impl BindVf {
    /// Every later element made and recorded its host changes: the record
    /// says so, and from now on a restart adopts the connection instead of
    /// rolling it back. (A refresh that re-plumbed cleared the mark.)
    async fn establish(ctx: &Ctx) -> Result<(), Status> {
        let Some(log) = ctx.get::<UndoLog>().cloned() else {
            return Ok(());
        };
        if log.established() {
            return Ok(());
        }
        sriov_failpoint::hit("bindvf.before-established");
        log.update(|r| r.established = true).await?;
        // The one sync of the Request: its use and every record before it.
        log.sync().await
    }
}

impl Element for Arc<BindVf> {
    type Needs = (Token,);

    fn name(&self) -> &'static str {
        "bindvf"
    }

    fn provides(&self) -> Vec<Key> {
        vec![Key::of::<VfBinding>(), Key::of::<UndoLog>()]
    }

    async fn request(
        &self,
        ctx: &mut Ctx,
        (Token(token),): (Token,),
        mut request: NetworkServiceRequest,
        next: Next<'_>,
    ) -> Result<Connection, Status> {
        let conn_id = request
            .connection
            .as_ref()
            .map(|c| c.id.clone())
            .unwrap_or_default();
        let fresh = match ctx.get::<VfBinding>() {
            Some(b) if b.lease.token == token => {
                let (pool, id, at) = (self.pool.clone(), conn_id.clone(), self.expires_at());
                blocking(move || pool.refresh(&id, at).map_err(status::pool)).await?;
                false
            }
            Some(_) => {
                return Err(Status::invalid_argument(
                    "a refresh cannot change the connection's tokenID",
                ));
            }
            None => {
                let this = self.clone();
                let (id, at) = (conn_id.clone(), self.expires_at());
                let binding = blocking(move || {
                    let lease = this
                        .pool
                        .use_token(&token, this.kind, &id, at)
                        .map_err(status::pool)?;
                    sriov_failpoint::hit("pool.after-use-token");
                    let bound = this.bind(lease.clone());
                    sriov_failpoint::hit("bindvf.after-bind");
                    bound.inspect_err(|_| {
                        if let Err(e) = this.pool.unuse(&id) {
                            tracing::warn!(error = %e, "returning a VF after a failed bind");
                        }
                    })
                })
                .await?;
                // Adopted after a restart: later parts add to what the
                // pool already records.
                let record = UndoRecord::of(&binding.lease).unwrap_or_default();
                ctx.insert(binding);
                let client = ctx.get::<ClientId>().cloned();
                ctx.insert(UndoLog::new(
                    self.pool.clone(),
                    conn_id.clone(),
                    record,
                    client,
                ));
                true
            }
        };
        if let Some(b) = ctx.get::<VfBinding>() {
            metrics::annotate_call(&b.lease.vf.to_string(), &b.lease.name, Some(!fresh));
        }
        if let (Some(b), Some(m)) = (
            ctx.get::<VfBinding>(),
            request
                .connection
                .as_mut()
                .and_then(|c| c.mechanism.as_mut()),
        ) {
            m.parameters
                .insert(params::PCI_ADDRESS.to_string(), b.lease.vf.to_string());
        }
        let answered = match next.request(ctx, request).await {
            Ok(c) => match BindVf::establish(ctx).await {
                Ok(()) => Ok(c),
                Err(e) => Err(next.fail_after(ctx, c, e).await),
            },
            Err(e) => Err(e),
        };
        match answered {
            Ok(c) => Ok(c),
            Err(e) => {
                if fresh && let Some(b) = ctx.remove::<VfBinding>() {
                    let this = self.clone();
                    let log = ctx.get::<UndoLog>().cloned();
                    if let Err(ue) =
                        blocking(move || this.release(&b, &conn_id, log.as_ref())).await
                    {
                        tracing::warn!(error = %ue, "undoing the VF after a later failure");
                    }
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
        let id = connection.id.clone();
        let rest = next.close(ctx, connection).await;
        if let Some(b) = ctx.remove::<VfBinding>() {
            metrics::annotate_call(&b.lease.vf.to_string(), &b.lease.name, None);
            let this = self.clone();
            let log = ctx.get::<UndoLog>().cloned();
            let unbind = async move { blocking(move || this.release(&b, &id, log.as_ref())).await };
            match ctx.get::<Deferred>().filter(|d| !d.is_empty()) {
                // The VF is still on its way back (`inject`): freed after it is home.
                Some(deferred) => deferred.push(unbind.boxed()),
                None => unbind.await?,
            }
        }
        rest
    }
}
