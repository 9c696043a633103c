//! `vfio`: the client container may use the VF through `/dev/vfio`.
//!
//! For a VF bound to vfio-pci by `bindvf`, it sets the mechanism
//! parameters NSM clients read (`iommuGroup`; `vfioMajor`/`vfioMinor` of
//! `/dev/vfio/vfio`; `deviceMajor`/`deviceMinor` of `/dev/vfio/<group>`;
//! `pciAddress` is already set), ours beside them (`vfioCdevPath`,
//! `vfioCdevMajor`/`vfioCdevMinor` of the iommufd character device where the
//! kernel made one; `vfioNoiommu=true` without an IOMMU) and, on cgroup v1,
//! allows both devices in
//! the client's `cgroupDir` (`c MAJ:MIN rw` to `devices.allow`, unless `devices.list` already allows them). Undone
//! on Close and when a later element fails: the grants are revoked through
//! `devices.deny` (reference-counted, so another connection of the same
//! container keeps its access). A VF bound to the token at kubelet's
//! Allocate (cgroup v2) needs no grant: the container runtime gave the pod
//! its nodes when it created it. Otherwise, on cgroup v2, the request fails
//! with FAILED_PRECONDITION naming the alternative.

use std::sync::Arc;

use sriov_api::nsm::connection::Connection;
use sriov_api::nsm::networkservice::NetworkServiceRequest;
use sriov_pci::Sysfs;
use sriov_vfio::{CgroupDevices, Grant, VfioDir};
use tonic::Status;

use crate::params::{self, VfioParams};
use crate::records::{UndoLog, VfBinding};
use crate::status;
use crate::undo::UndoRecord;
use crate::{Ctx, Element, Next};

/// What was granted where, for a revocation of exactly that; `adopted`
/// when it was granted by the process before a restart (read from the
/// pool's record), whose grant counts died with it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Granted {
    grant: Grant,
    adopted: bool,
}

/// See the module docs.
#[derive(Debug)]
pub struct Vfio {
    sysfs: Sysfs,
    vfio_dir: VfioDir,
    cgroups: Result<Arc<CgroupDevices>, String>,
}

impl Vfio {
    /// Reads groups through `sysfs`, device numbers under `vfio_dir`, and
    /// grants access through `cgroups`.
    /// `cgroups` is the reason it could not be opened, when it could not.
    pub fn new(
        sysfs: Sysfs,
        vfio_dir: VfioDir,
        cgroups: Result<Arc<CgroupDevices>, String>,
    ) -> Self {
        Self {
            sysfs,
            vfio_dir,
            cgroups,
        }
    }
}

impl Element for Vfio {
    type Needs = (VfBinding, VfioParams);

    fn name(&self) -> &'static str {
        "vfio"
    }

    async fn request(
        &self,
        ctx: &mut Ctx,
        (b, p): (VfBinding, VfioParams),
        mut request: NetworkServiceRequest,
        next: Next<'_>,
    ) -> Result<Connection, Status> {
        let nodes = self
            .vfio_dir
            .nodes_for(self.sysfs.devices_dir(), b.lease.vf)
            .map_err(status::vfio)?;
        let (group, container, device) =
            (nodes.group, nodes.container.device, nodes.group_node.device);
        // The cdev too, where there is one: an iommufd client opens it instead of the group.
        let granted: Vec<_> = nodes.all().into_iter().map(|n| n.device).collect();
        if let Some(m) = request
            .connection
            .as_mut()
            .and_then(|c| c.mechanism.as_mut())
        {
            let set = |m: &mut sriov_api::nsm::connection::Mechanism, k: &str, v: String| {
                m.parameters.insert(k.to_string(), v);
            };
            set(m, params::IOMMU_GROUP, group.id.to_string());
            set(m, params::VFIO_MAJOR, container.major.to_string());
            set(m, params::VFIO_MINOR, container.minor.to_string());
            set(m, params::DEVICE_MAJOR, device.major.to_string());
            set(m, params::DEVICE_MINOR, device.minor.to_string());
            if let Some(cdev) = &nodes.cdev {
                let path = cdev.host_path.to_string_lossy().into_owned();
                set(m, params::VFIO_CDEV_PATH, path);
                set(m, params::VFIO_CDEV_MAJOR, cdev.device.major.to_string());
                set(m, params::VFIO_CDEV_MINOR, cdev.device.minor.to_string());
            }
            if group.noiommu {
                set(m, params::VFIO_NOIOMMU, "true".to_string());
            }
        }
        if ctx.get::<Granted>().is_none()
            && let Some(grant) = UndoRecord::of(&b.lease).and_then(|r| r.grant)
        {
            ctx.insert(Granted {
                grant,
                adopted: true,
            });
        }
        // Bound at Allocate: the runtime already gave the container its nodes.
        let fresh = ctx.get::<Granted>().is_none() && !b.lease.bound_at_allocate;
        if fresh {
            let cgroups = self.cgroups.as_ref().map_err(|why| {
                Status::failed_precondition(format!("VFIO device access is unavailable: {why}"))
            })?;
            // Planned and persisted before anything is written, so a
            // restart can revoke it whenever the process is killed.
            let log = ctx.get::<UndoLog>().cloned();
            let mut planned = None;
            if let Some(log) = &log {
                let plan = cgroups
                    .plan_all(&p.cgroup_dir, &granted)
                    .map_err(status::vfio)?;
                planned = Some(plan.clone());
                log.update(|r| r.grant = Some(plan)).await?;
            }
            let grant = tracing::info_span!("host.cgroup_grant", vf.address = %b.lease.vf)
                .in_scope(|| cgroups.grant_all(&p.cgroup_dir, &granted))
                .map_err(status::vfio)?;
            sriov_failpoint::hit("vfio.after-grant");
            let granted = Granted {
                grant: grant.clone(),
                adopted: false,
            };
            // What was written, if the plan and the cgroups disagree now.
            if let Some(log) = log.filter(|_| planned.as_ref() != Some(&grant))
                && let Err(e) = log.update(|r| r.grant = Some(grant)).await
            {
                self.revoke(&granted);
                return Err(e);
            }
            ctx.insert(granted);
        }
        match next.request(ctx, request).await {
            Ok(c) => Ok(c),
            Err(e) => {
                if fresh && let Some(g) = ctx.remove::<Granted>() {
                    self.revoke(&g);
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
        let rest = next.close(ctx, connection).await;
        if let Some(g) = ctx.remove::<Granted>() {
            self.revoke(&g);
        }
        rest
    }
}

impl Vfio {
    fn revoke(&self, g: &Granted) {
        let Ok(cgroups) = self.cgroups.as_ref() else {
            return;
        };
        let _span = tracing::info_span!("host.cgroup_revoke").entered();
        let revoked = if g.adopted {
            cgroups.revoke_recorded(&g.grant)
        } else {
            cgroups.revoke_grant(&g.grant)
        };
        if let Err(e) = revoked {
            tracing::warn!(grant = ?g.grant.rules(), error = %e, "revoking VFIO access");
        }
    }
}
