//! NodePrepareResources and NodeUnprepareResources for our devices: bind the
//! driver a claim's `VfConfig` asks for, write the claim's CDI spec and the
//! device-info files CNIs read, and undo exactly that later.
//!
//! Every host change is recorded in the [`checkpoint`](crate::checkpoint)
//! before it is made, so a kill at any point leaves a record from which
//! [`Preparer::unprepare`], a retried [`Preparer::prepare`] or
//! [`Preparer::recover`] finishes the undo. A Prepare that fails midway
//! undoes its own changes before it returns.
//!
//! What a container gets for each device, in the claim's one CDI spec
//! (`<driver>/vf`, device `<claim uid>-<device>`):
//! - `PCIDEVICE_<PREFIX>_<RESOURCE>=<address>[,<address>...]`, the variable
//!   sriov-network-device-plugin sets (all the claim's devices of that
//!   resource, comma-joined), so applications written for it keep working;
//! - for a VF on vfio-pci: `/dev/vfio/vfio`, its group's node (seen in the
//!   container as `/dev/vfio/<group>`, also in no-IOMMU mode) and the iommufd
//!   character device `/dev/vfio/devices/vfioN` where the kernel made one;
//! - with `addVhostMount`: `/dev/vhost-net` and `/dev/net/tun`, as
//!   dra-driver-sriov gives.
//!
//! Host changes are serialized by one lock; the calls block (sysfs writes
//! wait for the kernel), so async callers run them on a blocking thread.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};

use k8s_openapi::api::resource::v1::ResourceClaim;
use sriov_pci::{PciAddress, PciError, Sysfs};
use sriov_selector_pools::{
    CdiDeviceEntry, CdiDeviceNode, CdiDir, CdiEdits, CdiSpec, DeviceInfoDir, DeviceInfoFile,
    PoolError, Selectors, VFIO_CONTAINER, device_info_file, env_name,
};

use crate::attributes::is_dns_subdomain;
use crate::checkpoint::{
    Checkpoint, CheckpointError, CheckpointFile, ClaimRecord, ClaimState, DeviceRecord, DeviceState,
};
use crate::devices::Inventory;
use crate::vfconfig::{self, VFIO_PCI, VfConfig, VfConfigError};

/// Longest claim UID accepted (Kubernetes makes 36-character UUIDs).
pub const MAX_UID_LEN: usize = 128;

/// Nodes `addVhostMount` gives a container.
const VHOST_NODES: &[&str] = &["/dev/vhost-net", "/dev/net/tun"];

/// What a [`Preparer`] works on.
#[derive(Debug, Clone)]
pub struct PreparerConfig {
    /// The DRA driver name we serve ([`crate::DEFAULT_DRIVER_NAME`]).
    pub driver_name: String,
    /// This node's pool: allocations from any other pool are not ours to prepare.
    pub pool_name: String,
    /// The PCI bus.
    pub sysfs: Sysfs,
    /// Where CDI specs go (`/var/run/cdi`).
    pub cdi_dir: PathBuf,
    /// Where device-info files go (`/var/run/k8s.cni.cncf.io/devinfo/dp`).
    pub device_info_dir: PathBuf,
    /// The checkpoint file (`<plugin dir>/checkpoint.json`).
    pub checkpoint: PathBuf,
}

/// One prepared device, as kubelet's `Device` wants it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreparedDevice {
    /// The requests it was allocated for.
    pub request_names: Vec<String>,
    /// Its pool.
    pub pool_name: String,
    /// Its DRA device name.
    pub device_name: String,
    /// Its CDI device IDs (`<driver>/vf=<claim uid>-<device>`).
    pub cdi_device_ids: Vec<String>,
}

/// Why Prepare or Unprepare failed.
#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    /// A [`PreparerConfig`] field is unusable.
    #[error("DRA preparer setting {field} {value:?} is invalid: {rule}")]
    Setting {
        /// The field.
        field: &'static str,
        /// Its value.
        value: String,
        /// The rule it breaks.
        rule: &'static str,
    },
    /// The claim's metadata is unusable.
    #[error("claim {claim}: {field} is invalid: {rule}")]
    InvalidClaim {
        /// `namespace/name`.
        claim: String,
        /// The field.
        field: &'static str,
        /// The rule it breaks.
        rule: &'static str,
    },
    /// The claim has no `status.allocation`.
    #[error("claim {claim} is not allocated (no status.allocation)")]
    NotAllocated {
        /// The claim.
        claim: String,
    },
    /// A device allocated to us is not one this node offers.
    #[error("claim {claim}: device {device} is not one of this node's devices")]
    UnknownDevice {
        /// The claim.
        claim: String,
        /// The device.
        device: String,
    },
    /// A device was allocated from another pool than this node's.
    #[error(
        "claim {claim}: device {device} is allocated from pool {pool:?}, not this node's {expected:?}"
    )]
    WrongPool {
        /// The claim.
        claim: String,
        /// The device.
        device: String,
        /// Its pool in the allocation.
        pool: String,
        /// This node's pool.
        expected: String,
    },
    /// The device is prepared for another claim.
    #[error("claim {claim}: device {device} is already prepared for claim {other}")]
    InUse {
        /// The claim asking.
        claim: String,
        /// The device.
        device: String,
        /// The claim holding it.
        other: String,
    },
    /// The configuration of a device is refused.
    #[error("claim {claim}: configuration of device {device} (request {request}): {cause}")]
    Config {
        /// The claim.
        claim: String,
        /// The device.
        device: String,
        /// The request it was allocated for.
        request: String,
        /// Why.
        #[source]
        cause: Box<VfConfigError>,
    },
    /// One device allocated for several requests whose configurations differ.
    #[error(
        "claim {claim}: device {device} is allocated for requests {requests:?} whose VfConfigs differ"
    )]
    ConflictingConfig {
        /// The claim.
        claim: String,
        /// The device.
        device: String,
        /// The requests.
        requests: Vec<String>,
    },
    /// Reading a device's driver failed.
    #[error("device {device} ({address}): cannot read its driver: {cause}")]
    ReadDriver {
        /// The device.
        device: String,
        /// Its address.
        address: PciAddress,
        /// Why.
        #[source]
        cause: Box<PciError>,
    },
    /// Binding the driver the configuration asks for failed.
    #[error("claim {claim}: cannot bind device {device} ({address}) to {driver}: {cause}")]
    Bind {
        /// The claim.
        claim: String,
        /// The device.
        device: String,
        /// Its address.
        address: PciAddress,
        /// The driver.
        driver: String,
        /// Why.
        #[source]
        cause: Box<PciError>,
    },
    /// Putting a device's original driver back failed.
    #[error("claim {claim}: cannot restore device {device} ({address}) to {}: {cause}", .driver.as_deref().unwrap_or("no driver"))]
    Restore {
        /// The claim.
        claim: String,
        /// The device.
        device: String,
        /// Its address.
        address: PciAddress,
        /// Its original driver.
        driver: Option<String>,
        /// Why.
        #[source]
        cause: Box<PciError>,
    },
    /// A vfio-pci device's nodes cannot be found.
    #[error("device {device} ({address}): cannot find its VFIO nodes: {cause}")]
    Vfio {
        /// The device.
        device: String,
        /// Its address.
        address: PciAddress,
        /// Why.
        #[source]
        cause: Box<sriov_vfio::Error>,
    },
    /// Writing the CDI spec or a device-info file failed.
    #[error("claim {claim}: cannot write {path}: {cause}")]
    Write {
        /// The claim.
        claim: String,
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        cause: Box<PoolError>,
    },
    /// Removing a file this plugin wrote failed.
    #[error("claim {claim}: cannot remove {path}: {cause}")]
    Remove {
        /// The claim.
        claim: String,
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        cause: std::io::Error,
    },
    /// The checkpoint cannot be read or written.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// Prepare failed and undoing its changes failed too: the checkpoint
    /// keeps the claim (unpreparing) so Unprepare or a retry can finish.
    #[error("claim {claim}: {cause}; undoing the changes made failed too: {rollback}")]
    RollbackFailed {
        /// The claim.
        claim: String,
        /// Why Prepare failed.
        #[source]
        cause: Box<PrepareError>,
        /// Why the undo failed.
        rollback: Box<PrepareError>,
    },
}

impl PrepareError {
    /// Whether the claim (or its allocation) is at fault rather than the
    /// node: the gRPC layer answers these without blaming the plugin.
    pub fn is_caller_error(&self) -> bool {
        matches!(
            self,
            Self::InvalidClaim { .. }
                | Self::NotAllocated { .. }
                | Self::UnknownDevice { .. }
                | Self::WrongPool { .. }
                | Self::InUse { .. }
                | Self::Config { .. }
                | Self::ConflictingConfig { .. }
        )
    }
}

/// Prepares and unprepares claims on this node; one per plugin, shared by
/// the gRPC handlers.
#[derive(Debug)]
pub struct Preparer {
    driver_name: String,
    pool_name: String,
    sysfs: Sysfs,
    cdi: CdiDir,
    cdi_dir: PathBuf,
    device_info: DeviceInfoDir,
    file: CheckpointFile,
    state: Mutex<Checkpoint>,
}

// gRPC handlers share one preparer across threads.
const _: fn() = || {
    fn shared<T: Send + Sync>() {}
    shared::<Preparer>();
};

/// A claim's plan before any change: its record and what each device's
/// device-info file will say.
struct Plan {
    record: ClaimRecord,
    infos: Vec<DeviceInfoFile>,
}

impl Preparer {
    /// A preparer over `config`, with the claims its checkpoint records
    /// (none when the file does not exist). A checkpoint that cannot be read
    /// is an error: starting without it would forget host changes to undo.
    pub fn new(config: PreparerConfig) -> Result<Self, PrepareError> {
        if !is_dns_subdomain(&config.driver_name) {
            return Err(PrepareError::Setting {
                field: "driver_name",
                value: config.driver_name,
                rule: "a DNS-1123 subdomain",
            });
        }
        if config.pool_name.is_empty() {
            return Err(PrepareError::Setting {
                field: "pool_name",
                value: config.pool_name,
                rule: "must not be empty",
            });
        }
        let file = CheckpointFile::new(config.checkpoint);
        let checkpoint = file.load()?;
        Ok(Self {
            driver_name: config.driver_name,
            pool_name: config.pool_name,
            sysfs: config.sysfs,
            cdi: CdiDir::new(config.cdi_dir.clone()),
            cdi_dir: config.cdi_dir,
            device_info: DeviceInfoDir::new(config.device_info_dir),
            file,
            state: Mutex::new(checkpoint),
        })
    }

    /// Every claim recorded, in any state: prepared ones, and ones a crash
    /// left half prepared or half unprepared.
    pub fn prepared(&self) -> Vec<ClaimRecord> {
        self.lock().claims.values().cloned().collect()
    }

    /// The names of the devices any recorded claim holds: in use, whatever
    /// the API server's view.
    pub fn devices_in_use(&self) -> BTreeSet<String> {
        self.lock()
            .claims
            .values()
            .flat_map(|c| c.devices.iter().map(|d| d.device.clone()))
            .collect()
    }

    /// Undoes every claim a crash left preparing or unpreparing (kubelet
    /// retries Prepare for the ones it still wants). Returns their UIDs.
    pub fn recover(&self) -> Result<Vec<String>, PrepareError> {
        let mut cp = self.lock();
        let unfinished: Vec<String> = cp
            .claims
            .values()
            .filter(|c| c.state != ClaimState::Prepared)
            .map(|c| c.uid.clone())
            .collect();
        for uid in &unfinished {
            self.undo(&mut cp, uid)?;
        }
        Ok(unfinished)
    }

    /// Prepares our devices of `claim` (allocation results of other drivers
    /// are theirs), checked against this node's `inventory`. Preparing a
    /// claim already prepared returns the same answer without touching the
    /// host.
    pub fn prepare(
        &self,
        claim: &ResourceClaim,
        inventory: &Inventory,
    ) -> Result<Vec<PreparedDevice>, PrepareError> {
        let (uid, namespace, name) = identity(claim)?;
        let mut cp = self.lock();
        if let Some(record) = cp.claims.get(&uid) {
            if record.state == ClaimState::Prepared {
                return Ok(answer(record));
            }
            // A crash left it half done: start again from a clean host.
            self.undo(&mut cp, &uid)?;
        }
        let plan = self.plan(claim, uid, namespace, name, inventory, &cp)?;
        if plan.record.devices.is_empty() {
            return Ok(Vec::new());
        }
        let uid = plan.record.uid.clone();
        let described = plan.record.describe();
        cp.claims.insert(uid.clone(), plan.record);
        if let Err(e) = self.file.save(&cp) {
            // The file still holds the old content: nothing was recorded.
            cp.claims.remove(&uid);
            return Err(e.into());
        }
        match self.apply(&mut cp, &uid, &plan.infos) {
            Ok(answer) => Ok(answer),
            Err(cause) => match self.undo(&mut cp, &uid) {
                Ok(()) => Err(cause),
                Err(rollback) => Err(PrepareError::RollbackFailed {
                    claim: described,
                    cause: Box::new(cause),
                    rollback: Box::new(rollback),
                }),
            },
        }
    }

    /// Undoes the claim `uid`: restores the drivers we changed, removes its
    /// CDI spec and device-info files, then forgets it. An unknown UID has
    /// nothing to undo.
    pub fn unprepare(&self, claim_uid: &str) -> Result<(), PrepareError> {
        let mut cp = self.lock();
        self.undo(&mut cp, claim_uid)
    }

    fn lock(&self) -> MutexGuard<'_, Checkpoint> {
        // Every change is saved as it is made, so the data a panicking
        // holder left is still the truth the file has.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Everything checked and decided before the host is touched.
    fn plan(
        &self,
        claim: &ResourceClaim,
        uid: String,
        namespace: String,
        name: String,
        inventory: &Inventory,
        cp: &Checkpoint,
    ) -> Result<Plan, PrepareError> {
        let described = format!("{namespace}/{name} ({uid})");
        let allocation = claim
            .status
            .as_ref()
            .and_then(|s| s.allocation.as_ref())
            .ok_or_else(|| PrepareError::NotAllocated {
                claim: described.clone(),
            })?;
        let devices = allocation.devices.as_ref();
        let configs = devices
            .and_then(|d| d.config.as_deref())
            .unwrap_or_default();
        let results = devices
            .and_then(|d| d.results.as_deref())
            .unwrap_or_default();

        // One device may serve several requests; it is prepared once.
        let mut order: Vec<&str> = Vec::new();
        let mut requests: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        for result in results.iter().filter(|r| r.driver == self.driver_name) {
            if result.pool != self.pool_name {
                return Err(PrepareError::WrongPool {
                    claim: described,
                    device: result.device.clone(),
                    pool: result.pool.clone(),
                    expected: self.pool_name.clone(),
                });
            }
            let entry = requests.entry(result.device.as_str()).or_insert_with(|| {
                order.push(result.device.as_str());
                Vec::new()
            });
            entry.push(result.request.clone());
        }

        let spec_file = self.spec_file_name(&uid);
        let mut record = ClaimRecord {
            uid: uid.clone(),
            namespace,
            name,
            state: ClaimState::Preparing,
            cdi_spec: None,
            devices: Vec::new(),
        };
        let mut infos = Vec::new();
        for device_name in order {
            let device = inventory
                .get(device_name)
                .ok_or_else(|| PrepareError::UnknownDevice {
                    claim: described.clone(),
                    device: device_name.to_string(),
                })?;
            let address = device.address();
            if let Some(other) = cp
                .claims
                .values()
                .find(|c| c.uid != uid && c.devices.iter().any(|d| d.address == address))
            {
                return Err(PrepareError::InUse {
                    claim: described,
                    device: device_name.to_string(),
                    other: other.describe(),
                });
            }
            let names = requests.remove(device_name).unwrap_or_default();
            let config = self.config_of(&described, device_name, &names, configs)?;
            let original =
                self.sysfs
                    .driver(address)
                    .map_err(|cause| PrepareError::ReadDriver {
                        device: device_name.to_string(),
                        address,
                        cause: Box::new(cause),
                    })?;
            let bound = config
                .wanted_driver()
                .filter(|want| original.as_deref() != Some(*want))
                .map(str::to_string);
            infos.push(device_info_file(&device.host, &Selectors::default()));
            record.devices.push(DeviceRecord {
                device: device_name.to_string(),
                address,
                pool: self.pool_name.clone(),
                resource: device.resource.clone(),
                requests: names,
                original_driver: original,
                bound_driver: bound,
                device_info: vec![self.device_info.path(&device.resource, address)],
                cdi_device_ids: vec![format!(
                    "{}/{}={uid}-{device_name}",
                    self.driver_name,
                    crate::CDI_CLASS
                )],
                config,
                state: DeviceState::Planned,
            });
        }
        if !record.devices.is_empty() {
            record.cdi_spec = Some(self.cdi_dir.join(spec_file));
        }
        Ok(Plan { record, infos })
    }

    /// The one configuration of a device, however many requests it serves.
    fn config_of(
        &self,
        claim: &str,
        device: &str,
        requests: &[String],
        configs: &[k8s_openapi::api::resource::v1::DeviceAllocationConfiguration],
    ) -> Result<VfConfig, PrepareError> {
        let mut found: Option<VfConfig> = None;
        for request in requests {
            let config =
                vfconfig::resolve(&self.driver_name, configs, request).map_err(|cause| {
                    PrepareError::Config {
                        claim: claim.to_string(),
                        device: device.to_string(),
                        request: request.clone(),
                        cause: Box::new(cause),
                    }
                })?;
            match &found {
                Some(first) if *first != config => {
                    return Err(PrepareError::ConflictingConfig {
                        claim: claim.to_string(),
                        device: device.to_string(),
                        requests: requests.to_vec(),
                    });
                }
                Some(_) => {}
                None => found = Some(config),
            }
        }
        Ok(found.unwrap_or_default())
    }

    /// Makes the recorded changes, recording each step.
    fn apply(
        &self,
        cp: &mut Checkpoint,
        uid: &str,
        infos: &[DeviceInfoFile],
    ) -> Result<Vec<PreparedDevice>, PrepareError> {
        let count = record(cp, uid).map(|r| r.devices.len()).unwrap_or(0);
        for index in 0..count {
            let Some((claim, device)) = device(cp, uid, index) else {
                continue;
            };
            if let Some(driver) = device.bound_driver.clone() {
                set_state(cp, uid, index, DeviceState::Binding);
                self.file.save(cp)?;
                self.sysfs
                    .bind(device.address, &driver)
                    .map_err(|cause| PrepareError::Bind {
                        claim,
                        device: device.device.clone(),
                        address: device.address,
                        driver,
                        cause: Box::new(cause),
                    })?;
            }
            set_state(cp, uid, index, DeviceState::Bound);
        }
        self.file.save(cp)?;

        let Some(rec) = record(cp, uid).cloned() else {
            return Ok(Vec::new());
        };
        let claim = rec.describe();
        for (device, info) in rec.devices.iter().zip(infos) {
            self.device_info
                .write(&device.resource, device.address, info)
                .map_err(|cause| PrepareError::Write {
                    claim: claim.clone(),
                    path: self.device_info.path(&device.resource, device.address),
                    cause: Box::new(cause),
                })?;
        }
        let spec = self.cdi_spec(&rec)?;
        let spec_file = self.spec_file_name(uid);
        self.cdi
            .write_named(&spec, &spec_file)
            .map_err(|cause| PrepareError::Write {
                claim: claim.clone(),
                path: self.cdi_dir.join(&spec_file),
                cause: Box::new(cause),
            })?;
        if let Some(r) = cp.claims.get_mut(uid) {
            r.state = ClaimState::Prepared;
        }
        self.file.save(cp)?;
        Ok(answer(&rec))
    }

    /// Undoes whatever the record of `uid` says was (or may have been)
    /// done, then drops it. Idempotent, so it finishes a crashed undo.
    fn undo(&self, cp: &mut Checkpoint, uid: &str) -> Result<(), PrepareError> {
        let Some(rec) = cp.claims.get_mut(uid) else {
            return Ok(());
        };
        rec.state = ClaimState::Unpreparing;
        let rec = rec.clone();
        self.file.save(cp)?;
        let claim = rec.describe();
        // The spec first: no container may be started with a device that
        // is about to change hands.
        if let Some(spec) = &rec.cdi_spec {
            remove_file(&claim, spec)?;
        }
        for (index, device) in rec.devices.iter().enumerate().rev() {
            for path in &device.device_info {
                remove_file(&claim, path)?;
            }
            let touched = matches!(device.state, DeviceState::Binding | DeviceState::Bound);
            if device.bound_driver.is_some() && touched {
                self.sysfs
                    .restore_driver(device.address, device.original_driver.as_deref())
                    .map_err(|cause| PrepareError::Restore {
                        claim: claim.clone(),
                        device: device.device.clone(),
                        address: device.address,
                        driver: device.original_driver.clone(),
                        cause: Box::new(cause),
                    })?;
                set_state(cp, uid, index, DeviceState::Restored);
                self.file.save(cp)?;
            }
        }
        let removed = cp.claims.remove(uid);
        if let Err(e) = self.file.save(cp) {
            // The file still has the record; so must memory, to match it.
            if let Some(r) = removed {
                cp.claims.insert(uid.to_string(), r);
            }
            return Err(e.into());
        }
        Ok(())
    }

    /// The claim's spec: `<driver>-vf_<uid>.json`, the CDI library's name
    /// for a transient spec, as dra-driver-sriov writes it (the UID is
    /// checked to be a safe file-name part).
    fn spec_file_name(&self, uid: &str) -> String {
        format!("{}-{}_{uid}.json", self.driver_name, crate::CDI_CLASS)
    }

    fn cdi_spec(&self, rec: &ClaimRecord) -> Result<CdiSpec, PrepareError> {
        // Every device of a resource gets the whole list, so the variable
        // is right whichever device's edits the runtime applies last.
        let mut by_resource: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        for d in &rec.devices {
            by_resource
                .entry(d.resource.as_str())
                .or_default()
                .push(d.address.to_string());
        }
        let mut entries = Vec::new();
        for d in &rec.devices {
            let env_var = match d.resource.split_once('/') {
                Some((prefix, name)) => env_name(prefix, name),
                None => env_name("", &d.resource),
            };
            let list = by_resource
                .get(d.resource.as_str())
                .map(|l| l.join(","))
                .unwrap_or_default();
            let mut nodes = Vec::new();
            let driver = d.bound_driver.as_ref().or(d.original_driver.as_ref());
            if driver.map(String::as_str) == Some(VFIO_PCI) {
                nodes.extend(self.vfio_nodes(d)?);
            }
            if d.config.add_vhost_mount {
                nodes.extend(VHOST_NODES.iter().map(|n| node(n, n)));
            }
            entries.push(CdiDeviceEntry {
                name: format!("{}-{}", rec.uid, d.device),
                container_edits: CdiEdits {
                    device_nodes: nodes,
                    env: vec![format!("{env_var}={list}")],
                },
            });
        }
        Ok(CdiSpec::new(
            format!("{}/{}", self.driver_name, crate::CDI_CLASS),
            entries,
        ))
    }

    fn vfio_nodes(&self, d: &DeviceRecord) -> Result<Vec<CdiDeviceNode>, PrepareError> {
        let vfio_err = |cause| PrepareError::Vfio {
            device: d.device.clone(),
            address: d.address,
            cause: Box::new(cause),
        };
        let dir = self.sysfs.device_dir(d.address);
        let group = sriov_vfio::IommuGroup::of_device_dir(&dir).map_err(vfio_err)?;
        let mut nodes = vec![
            node(VFIO_CONTAINER, VFIO_CONTAINER),
            node(
                &format!("/dev/vfio/{}", group.device_file_name()),
                &format!("/dev/vfio/{}", group.id),
            ),
        ];
        if let Some(cdev) = sriov_vfio::vfio_cdev_name(&dir).map_err(vfio_err)? {
            let path = format!("/dev/vfio/devices/{cdev}");
            nodes.push(node(&path, &path));
        }
        Ok(nodes)
    }
}

fn node(host: &str, container: &str) -> CdiDeviceNode {
    CdiDeviceNode {
        path: container.to_string(),
        host_path: host.to_string(),
        permissions: "rw".to_string(),
    }
}

fn answer(rec: &ClaimRecord) -> Vec<PreparedDevice> {
    rec.devices
        .iter()
        .map(|d| PreparedDevice {
            request_names: d.requests.clone(),
            pool_name: d.pool.clone(),
            device_name: d.device.clone(),
            cdi_device_ids: d.cdi_device_ids.clone(),
        })
        .collect()
}

fn record<'a>(cp: &'a Checkpoint, uid: &str) -> Option<&'a ClaimRecord> {
    cp.claims.get(uid)
}

fn device(cp: &Checkpoint, uid: &str, index: usize) -> Option<(String, DeviceRecord)> {
    let rec = cp.claims.get(uid)?;
    Some((rec.describe(), rec.devices.get(index)?.clone()))
}

fn set_state(cp: &mut Checkpoint, uid: &str, index: usize, state: DeviceState) {
    if let Some(d) = cp
        .claims
        .get_mut(uid)
        .and_then(|r| r.devices.get_mut(index))
    {
        d.state = state;
    }
}

fn remove_file(claim: &str, path: &std::path::Path) -> Result<(), PrepareError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        // A path whose directory is gone or is not a directory holds no file.
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
            ) =>
        {
            Ok(())
        }
        Err(cause) => Err(PrepareError::Remove {
            claim: claim.to_string(),
            path: path.to_path_buf(),
            cause,
        }),
    }
}

/// The claim's UID, namespace and name, checked: the UID becomes part of a
/// file name and of CDI device names.
fn identity(claim: &ResourceClaim) -> Result<(String, String, String), PrepareError> {
    let meta = &claim.metadata;
    let namespace = meta.namespace.clone().unwrap_or_default();
    let name = meta.name.clone().unwrap_or_default();
    let described = format!("{namespace}/{name}");
    let invalid = |field, rule| PrepareError::InvalidClaim {
        claim: described.clone(),
        field,
        rule,
    };
    let uid = meta.uid.clone().unwrap_or_default();
    if uid.is_empty() || uid.len() > MAX_UID_LEN {
        return Err(invalid("metadata.uid", "1 to 128 characters"));
    }
    if !uid.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        || !uid.starts_with(|c: char| c.is_ascii_alphanumeric())
    {
        return Err(invalid(
            "metadata.uid",
            "letters, digits and '-', starting with a letter or digit",
        ));
    }
    if name.is_empty() {
        return Err(invalid("metadata.name", "must not be empty"));
    }
    Ok((uid, namespace, name))
}
