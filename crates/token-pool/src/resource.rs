//! One pool name as a kubelet device-plugin resource.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use sriov_deviceplugin::{AllocateError, Backend, ContainerAllocateResponse, Device, DeviceSpec};
use sriov_pci::Sysfs;
use sriov_vfio::{VfioDir, VfioNodes};
use tokio::sync::watch;

use crate::{AllocateBinding, Pool, PoolError};

/// Prefix of the env var that carries a container's tokens
/// (`NSM_SRIOV_TOKENS_<serviceDomain/capability>=<id>,<id>`), as NSM
/// clients read it.
pub const TOKENS_ENV_PREFIX: &str = "NSM_SRIOV_TOKENS_";

/// The env var name and value for a container's tokens of `name`.
pub fn tokens_env(name: &str, ids: &[String]) -> (String, String) {
    (format!("{TOKENS_ENV_PREFIX}{name}"), ids.join(","))
}

/// VFIO access given at kubelet's Allocate (cgroup v2, where a container's
/// devices are fixed when its runtime creates it): Allocate binds each
/// token to a VF, moves the VF to vfio-pci, and returns its `/dev/vfio`
/// nodes as device specs; Deallocate (pod-resources showing no pod holds
/// the token) gives the VF back to its driver.
#[derive(Debug, Clone)]
pub struct VfioAtAllocate {
    /// Drivers and IOMMU groups.
    pub sysfs: Sysfs,
    /// `/dev/vfio` as this process sees it (`NSM_VFIO_PATH`), to read the
    /// nodes' numbers; the specs name them at their host paths.
    pub vfio: VfioDir,
}

/// A [`Backend`] serving one name of a [`Pool`].
#[derive(Debug, Clone)]
pub struct PoolResource {
    pool: Arc<Pool>,
    name: String,
    devices: watch::Receiver<Vec<Device>>,
    vfio: Option<VfioAtAllocate>,
}

impl PoolResource {
    /// The resource for `name`; `None` when the pool does not serve it.
    pub fn new(pool: Arc<Pool>, name: &str) -> Option<Self> {
        let devices = pool.devices(name)?;
        Some(Self {
            pool,
            name: name.to_string(),
            devices,
            vfio: None,
        })
    }

    /// A resource the pool no longer serves (a reload removed it), whose
    /// tokens pods may still hold: only to release them as pods go
    /// ([`Backend::allocated`] and [`Backend::release`]); it lists no
    /// devices.
    pub fn retired(pool: Arc<Pool>, name: &str) -> Self {
        Self {
            pool,
            name: name.to_string(),
            devices: watch::channel(Vec::new()).1,
            vfio: None,
        }
    }

    /// The resource name (`serviceDomain/capability`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Binds every token to a VF on vfio-pci at Allocate and returns its
    /// nodes (see [`VfioAtAllocate`]).
    pub fn with_vfio_at_allocate(mut self, vfio: VfioAtAllocate) -> Self {
        self.vfio = Some(vfio);
        self
    }

    /// Records a VF for each token, binds it to vfio-pci and reads its
    /// nodes. On error the caller undoes the bindings of tokens it newly
    /// allocated ([`PoolResource::give_back`]).
    fn bind_vfio(
        &self,
        v: &VfioAtAllocate,
        ids: &[String],
    ) -> Result<BTreeMap<String, VfioNodes>, AllocateError> {
        let driver_of = |vf| v.sysfs.driver(vf).ok().flatten();
        let bindings = self
            .pool
            .bind_at_allocate(&self.name, ids, &driver_of)
            .map_err(to_allocate_error)?;
        let mut nodes = BTreeMap::new();
        for AllocateBinding {
            token,
            binding,
            in_use,
        } in bindings
        {
            let failed = |message: String| AllocateError::Internal {
                id: token.clone(),
                message,
            };
            if !in_use {
                v.sysfs
                    .bind(binding.vf, "vfio-pci")
                    .map_err(|e| failed(e.to_string()))?;
            }
            let found = v
                .vfio
                .nodes_for(v.sysfs.devices_dir(), binding.vf)
                .map_err(|e| failed(e.to_string()))?;
            tracing::info!(resource = %self.name, vf = %binding.vf, group = %found.group,
                "VF bound to vfio-pci at Allocate");
            nodes.insert(token, found);
        }
        Ok(nodes)
    }

    /// Gives each token's VF bound at Allocate back to its driver and
    /// forgets the binding; a token whose VF could not be given back keeps
    /// its record (and stays allocated) for the next release to retry.
    fn give_back(&self, ids: &[String]) {
        let Some(v) = &self.vfio else {
            return;
        };
        for id in ids {
            let binding = match self.pool.binding(id) {
                Ok(Some(b)) => b,
                Ok(None) => continue,
                Err(e) => {
                    tracing::warn!(resource = %self.name, error = %e, "reading a token's VF");
                    continue;
                }
            };
            // A connection still uses the VF: its Close restores what it
            // changed, and the next release gives the VF back.
            if self
                .pool
                .uses()
                .is_ok_and(|u| u.iter().any(|(_, l)| &l.token == id))
            {
                continue;
            }
            if let Err(e) = v
                .sysfs
                .restore_driver(binding.vf, binding.previous_driver.as_deref())
            {
                tracing::warn!(resource = %self.name, vf = %binding.vf, error = %e,
                    "giving a VF bound at Allocate back to its driver; retried at the next release");
                continue;
            }
            if let Err(e) = self.pool.forget_binding(id) {
                tracing::warn!(resource = %self.name, error = %e, "forgetting a VF bound at Allocate");
            }
        }
    }
}

/// The device specs of one container: `/dev/vfio/vfio` once, then each
/// VF's group node and character device.
fn device_specs<'a>(nodes: impl Iterator<Item = &'a VfioNodes>) -> Vec<DeviceSpec> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for n in nodes.flat_map(VfioNodes::all) {
        if seen.insert(n.host_path.clone()) {
            out.push(DeviceSpec {
                container_path: n.container_path.to_string_lossy().into_owned(),
                host_path: n.host_path.to_string_lossy().into_owned(),
                permissions: "rw".into(),
            });
        }
    }
    out
}

fn to_allocate_error(e: PoolError) -> AllocateError {
    match e {
        PoolError::UnknownToken(id) => AllocateError::UnknownDevice { id },
        PoolError::WrongName { token, .. } => AllocateError::UnknownDevice { id: token },
        PoolError::BoundVfUnusable { token, vf, reason } => AllocateError::Unavailable {
            id: token,
            reason: format!("VF {vf} {reason}"),
        },
        PoolError::Exhausted { token, pf, reason } => AllocateError::Unavailable {
            id: token,
            reason: format!("PF {pf}: {reason}"),
        },
        other => AllocateError::Internal {
            id: String::new(),
            message: other.to_string(),
        },
    }
}

impl Backend for PoolResource {
    fn devices(&self) -> watch::Receiver<Vec<Device>> {
        self.devices.clone()
    }

    fn allocate(
        &self,
        containers: &[Vec<String>],
    ) -> Result<Vec<ContainerAllocateResponse>, AllocateError> {
        let all: Vec<String> = containers.iter().flatten().cloned().collect();
        let before: BTreeSet<String> = self
            .pool
            .allocated(&self.name)
            .map_err(to_allocate_error)?
            .into_iter()
            .collect();
        self.pool
            .allocate(&self.name, &all)
            .map_err(to_allocate_error)?;
        let nodes = match &self.vfio {
            None => BTreeMap::new(),
            Some(v) => match self.bind_vfio(v, &all) {
                Ok(nodes) => nodes,
                Err(e) => {
                    // All or none: what this call allocated goes back.
                    let fresh: Vec<String> =
                        all.into_iter().filter(|id| !before.contains(id)).collect();
                    self.give_back(&fresh);
                    if let Err(re) = self.pool.release(&fresh) {
                        tracing::warn!(resource = %self.name, error = %re, "undoing a failed Allocate");
                    }
                    return Err(e);
                }
            },
        };
        Ok(containers
            .iter()
            .map(|ids| {
                let (k, v) = tokens_env(&self.name, ids);
                ContainerAllocateResponse {
                    envs: HashMap::from([(k, v)]),
                    devices: device_specs(ids.iter().filter_map(|id| nodes.get(id))),
                    ..Default::default()
                }
            })
            .collect())
    }

    fn allocated(&self) -> Vec<String> {
        self.pool.allocated(&self.name).unwrap_or_default()
    }

    fn release(&self, ids: &[String]) {
        // Tokens whose VF stays bound (in use, or not given back) are left
        // allocated by the pool; in-use ones are marked abandoned.
        self.give_back(ids);
        if let Err(e) = self.pool.release(ids) {
            tracing::warn!(resource = %self.name, error = %e, "releasing tokens failed");
        }
    }
}
