//! Resource pools: which device belongs to which resource (first match wins, in config
//! order), their health, and what Allocate returns. [`ResourcePool`] is the device plugin's
//! [`Backend`]; [`PoolManager`] owns them all and re-assigns devices on every
//! [`refresh`](PoolManager::refresh).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};

use sriov_deviceplugin::{
    AllocateError, Backend, CdiDevice, ContainerAllocateResponse, Device, DeviceSpec,
};
use sriov_pci::PciAddress;
use tokio::sync::watch;

use crate::config::{Config, DeviceType, ResourceConfig};
use crate::error::PoolError;
use crate::files::{CdiDeviceEntry, CdiDeviceNode, CdiDir, CdiEdits, CdiSpec, DeviceInfoDir};
use crate::health::{HealthCause, LinkHealth, LinkState, Unhealthy};
use crate::host::{Host, HostDevice, SkipReason};
use crate::info::{device_info, device_info_file, env_name};
use crate::selector::{Rejection, matches};

mod vanished;

/// Settings shared by all pools.
#[derive(Debug, Clone)]
pub struct PoolSettings {
    /// `--resource-prefix`.
    pub default_prefix: String,
    /// `--use-cdi`: hand devices out as CDI names instead of device specs, and keep CDI specs.
    pub use_cdi: bool,
    /// `--cdi-devices-field`, with `use_cdi`: name the devices in kubelet's `cdi_devices` field
    /// (kubelet 1.28+, GA in 1.31) instead of SRDP's `cdi.k8s.io/…` annotation. One or the
    /// other, never both, so a runtime does not inject the same devices twice.
    pub cdi_field: bool,
    /// Device-info files.
    pub devinfo: DeviceInfoDir,
    /// CDI specs.
    pub cdi: CdiDir,
}

impl PoolSettings {
    /// SRDP's defaults: prefix `intel.com`, no CDI, the standard directories.
    pub fn new(default_prefix: impl Into<String>) -> Self {
        Self {
            default_prefix: default_prefix.into(),
            use_cdi: false,
            cdi_field: false,
            devinfo: DeviceInfoDir::new(crate::files::DEFAULT_DEVINFO_DIR),
            cdi: CdiDir::new(crate::files::DEFAULT_CDI_DIR),
        }
    }
}

#[derive(Debug, Clone)]
struct Member {
    dev: HostDevice,
    selector: usize,
    unhealthy: Option<Unhealthy>,
}

/// One device of a pool, as [`ResourcePool::members`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolMember {
    /// The device.
    pub device: HostDevice,
    /// Index of the selector object that took it.
    pub selector: usize,
    /// Why it is unhealthy; `None` when healthy.
    pub unhealthy: Option<String>,
}

#[derive(Debug, Default)]
struct State {
    members: BTreeMap<String, Member>,
    allocated: BTreeSet<String>,
    /// Interfaces each device had when last seen, with its driver then: a netdev that
    /// disappears under the same driver means the VF is broken (or was moved by someone else).
    seen_netdevs: HashMap<String, (Option<String>, Vec<String>)>,
}

/// One resource: its devices, kept current, and Allocate.
#[derive(Debug)]
pub struct ResourcePool {
    config: ResourceConfig,
    prefix: String,
    resource: String,
    host: Host,
    settings: Arc<PoolSettings>,
    state: Mutex<State>,
    /// Shared with the pool's successors after a config reload, so kubelet's ListAndWatch
    /// streams outlive the pool object (`reload.rs`).
    devices: Arc<watch::Sender<Vec<Device>>>,
}

impl ResourcePool {
    fn new(config: ResourceConfig, host: Host, settings: Arc<PoolSettings>) -> Self {
        let prefix = config.prefix(&settings.default_prefix).to_string();
        let resource = format!("{prefix}/{}", config.resource_name);
        Self {
            config,
            prefix,
            resource,
            host,
            settings,
            state: Mutex::new(State::default()),
            devices: Arc::new(watch::channel(Vec::new()).0),
        }
    }

    /// This resource under a reloaded config: same device channel, same allocations and
    /// memory of netdevs; members are recomputed by the next refresh.
    pub(crate) fn successor(
        &self,
        config: ResourceConfig,
        host: Host,
        settings: Arc<PoolSettings>,
    ) -> Self {
        let mut next = Self::new(config, host, settings);
        next.devices = self.devices.clone();
        let state = self.lock();
        *next.lock() = State {
            members: state.members.clone(),
            allocated: state.allocated.clone(),
            seen_netdevs: state.seen_netdevs.clone(),
        };
        next
    }

    /// Counts `ids` as allocated (held by pods since before this pool object existed).
    pub(crate) fn hold(&self, ids: impl IntoIterator<Item = String>) {
        self.lock().allocated.extend(ids);
    }

    /// `<prefix>/<name>`, the extended resource.
    pub fn resource_name(&self) -> &str {
        &self.resource
    }

    /// Its config entry.
    pub fn config(&self) -> &ResourceConfig {
        &self.config
    }

    /// The env variable with the allocated IDs (`PCIDEVICE_INTEL_COM_SRIOV_NET`).
    pub fn env_name(&self) -> String {
        env_name(&self.prefix, &self.config.resource_name)
    }

    /// The CDI kind, `<prefix>/<class>`.
    pub fn cdi_kind(&self) -> String {
        format!("{}/{}", self.prefix, self.config.device_type.cdi_class())
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain data behind; keep serving it.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Its devices now, by address.
    pub fn members(&self) -> Vec<PoolMember> {
        self.lock()
            .members
            .values()
            .map(|m| PoolMember {
                device: m.dev.clone(),
                selector: m.selector,
                unhealthy: m.unhealthy.as_ref().map(|u| u.why.clone()),
            })
            .collect()
    }

    /// Replaces the members (health included) and publishes the device list if it changed.
    fn set_members(&self, members: BTreeMap<String, Member>) -> bool {
        let list: Vec<Device> = members
            .values()
            .map(|m| Device {
                id: m.dev.id(),
                healthy: m.unhealthy.is_none(),
                numa_node: if self.config.exclude_topology {
                    None
                } else {
                    m.dev.numa_node.map(i64::from)
                },
                group: Some(m.dev.pf.unwrap_or(m.dev.address).to_string()),
            })
            .collect();
        {
            let mut state = self.lock();
            for (id, m) in &members {
                if let Some(old) = state.members.get(id) {
                    crate::metrics::health_flip(&self.resource, &old.unhealthy, &m.unhealthy);
                }
            }
            state.members = members;
        }
        self.devices.send_if_modified(|current| {
            if *current == list {
                false
            } else {
                *current = list;
                true
            }
        })
    }

    fn health(&self, dev: &HostDevice, links: &dyn LinkHealth) -> Option<Unhealthy> {
        let mut state = self.lock();
        let id = dev.id();
        let allocated = state.allocated.contains(&id);
        let previous = state.seen_netdevs.get(&id).cloned();
        // Remember the last non-empty set, so a vanished netdev stays reported until the
        // device is rebound or its netdev returns.
        let rebound = previous.as_ref().is_some_and(|(d, _)| *d != dev.driver);
        if previous.is_none() || rebound || !dev.netdevs.is_empty() {
            state
                .seen_netdevs
                .insert(id, (dev.driver.clone(), dev.netdevs.clone()));
        }
        drop(state);
        if let Some(why) = uplink_health(dev, allocated, links) {
            return Some(why);
        }
        // A VF netdev handed to a pod leaves our namespace on purpose; only a device nobody
        // holds counts as broken when its netdev vanishes.
        if !allocated
            && let Some((driver, names)) = previous
            && driver == dev.driver
        {
            for name in names {
                if !dev.netdevs.contains(&name) && links.state(&name) == LinkState::Absent {
                    return Some(Unhealthy::new(
                        HealthCause::NetdevGone,
                        format!("its netdev {name} is gone"),
                    ));
                }
            }
        }
        None
    }

    /// Whether `dev` (by ID) is held by a pod, as kubelet last told us.
    pub(crate) fn is_allocated(&self, id: &str) -> bool {
        self.lock().allocated.contains(id)
    }

    fn cdi_spec(&self) -> CdiSpec {
        let state = self.lock();
        let devices = state
            .members
            .values()
            // A device kept only to be reported unhealthy has nothing to inject.
            .filter(|m| !vanished::is_kept(m))
            .filter_map(|m| {
                // Members only ever carry an index of one of our selectors.
                let sel = self.config.selectors.get(m.selector)?;
                let info = device_info(&self.host, &self.config, sel, &m.dev);
                Some(CdiDeviceEntry {
                    name: m.dev.id(),
                    container_edits: CdiEdits {
                        device_nodes: info
                            .specs
                            .iter()
                            .map(|s| CdiDeviceNode {
                                path: s.container_path.clone(),
                                host_path: s.host_path.clone(),
                                permissions: "rw".into(),
                            })
                            .collect(),
                        env: Vec::new(),
                    },
                })
            })
            .collect();
        CdiSpec::new(self.cdi_kind(), devices)
    }

    /// Writes this pool's CDI spec (with `--use-cdi`).
    pub fn write_cdi_spec(&self) -> Result<(), PoolError> {
        let spec = self.cdi_spec();
        self.settings.cdi.write(&spec, &self.config.resource_name)?;
        Ok(())
    }

    /// Removes this resource's device-info files.
    pub fn clean_device_info(&self) -> Result<usize, PoolError> {
        self.settings.devinfo.clean(&self.resource)
    }

    fn container(&self, ids: &[String]) -> Result<ContainerAllocateResponse, AllocateError> {
        let state = self.lock();
        let mut members = Vec::new();
        for id in ids {
            let member = state
                .members
                .get(id)
                .ok_or_else(|| AllocateError::UnknownDevice { id: id.clone() })?;
            members.push(member.clone());
        }
        drop(state);
        let mut specs: Vec<DeviceSpec> = Vec::new();
        let mut infos = BTreeMap::new();
        for m in &members {
            let Some(sel) = self.config.selectors.get(m.selector) else {
                continue;
            };
            let info = device_info(&self.host, &self.config, sel, &m.dev);
            for spec in info.specs {
                // Several VFs share /dev/vfio/vfio (and vhost-net, rdma_cm): list each once.
                if !specs.iter().any(|s| s.host_path == spec.host_path) {
                    specs.push(spec);
                }
            }
            infos.insert(m.dev.id(), info.env);
            if m.dev.aux.is_some() || self.config.device_type == DeviceType::Accelerator {
                // As SRDP: only PCI network devices get a device-info file (auxiliary
                // devices and accelerators have none in the device-info spec).
                continue;
            }
            let file = device_info_file(&m.dev, sel);
            self.settings
                .devinfo
                .write(&self.resource, m.dev.address, &file)
                .map_err(|e| AllocateError::Internal {
                    id: m.dev.id(),
                    message: e.to_string(),
                })?;
        }
        let name = self.env_name();
        let info_json = serde_json::to_string(&infos).map_err(|e| AllocateError::Internal {
            id: ids.join(","),
            message: format!("encoding {name}_INFO: {e}"),
        })?;
        let mut resp = ContainerAllocateResponse {
            envs: HashMap::from([
                (name.clone(), ids.join(",")),
                (format!("{name}_INFO"), info_json),
            ]),
            ..Default::default()
        };
        if self.settings.use_cdi {
            let kind = self.cdi_kind();
            let names: Vec<String> = ids.iter().map(|id| format!("{kind}={id}")).collect();
            if self.settings.cdi_field {
                resp.cdi_devices = names.into_iter().map(|name| CdiDevice { name }).collect();
            } else {
                // SRDP's way, which every CDI-enabled runtime reads.
                resp.annotations.insert(
                    format!(
                        "cdi.k8s.io/{}_{}",
                        self.prefix,
                        self.config.device_type.cdi_class()
                    ),
                    names.join(","),
                );
            }
        } else {
            resp.devices = specs;
        }
        Ok(resp)
    }
}

impl Backend for ResourcePool {
    fn devices(&self) -> watch::Receiver<Vec<Device>> {
        self.devices.subscribe()
    }

    fn allocate(
        &self,
        containers: &[Vec<String>],
    ) -> Result<Vec<ContainerAllocateResponse>, AllocateError> {
        let responses = containers
            .iter()
            .map(|ids| self.container(ids))
            .collect::<Result<Vec<_>, _>>()?;
        self.lock()
            .allocated
            .extend(containers.iter().flatten().cloned());
        Ok(responses)
    }

    fn allocated(&self) -> Vec<String> {
        self.lock().allocated.iter().cloned().collect()
    }

    fn release(&self, ids: &[String]) {
        let mut state = self.lock();
        for id in ids {
            state.allocated.remove(id);
        }
    }
}

/// The part of a device's health that needs no memory of earlier passes: its uplink's state.
/// The PF's link is what the VF's traffic leaves by; a PF (without VFs) is its own, and once a
/// pod holds it, its netdev is the pod's business.
pub(crate) fn uplink_health(
    dev: &HostDevice,
    allocated: bool,
    links: &dyn LinkHealth,
) -> Option<Unhealthy> {
    let uplink = match (&dev.pf_name, dev.is_vf() || dev.aux.is_some()) {
        (Some(pf), _) => Some(pf.as_str()),
        (None, false) if !allocated => dev.netdevs.first().map(String::as_str),
        _ => None,
    }?;
    match links.state(uplink) {
        LinkState::Unhealthy => Some(Unhealthy::new(
            HealthCause::LinkDown,
            format!("link {uplink} is down"),
        )),
        LinkState::Absent => Some(Unhealthy::new(
            HealthCause::LinkGone,
            format!("link {uplink} is gone"),
        )),
        LinkState::Healthy | LinkState::Unknown => None,
    }
}

/// Why a pool's selector did not take a device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The pool's device type takes another PCI class (or no PCI functions at all).
    DeviceType(String),
    /// A selector object refused it.
    Selector {
        /// Its index.
        index: usize,
        /// Why.
        rejection: Rejection,
    },
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::DeviceType(why) => f.write_str(why),
            Refusal::Selector { index, rejection } => write!(f, "selectors[{index}]: {rejection}"),
        }
    }
}

/// What happened to one device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Left out before any pool looked.
    Skipped(SkipReason),
    /// Taken by a pool.
    Taken {
        /// The resource.
        resource: String,
        /// The selector object that took it.
        selector: usize,
        /// Why earlier pools did not.
        earlier: Vec<(String, Vec<Refusal>)>,
    },
    /// No pool took it.
    Unclaimed {
        /// Why each pool did not.
        refusals: Vec<(String, Vec<Refusal>)>,
    },
}

/// `--dry-run`'s answer: every network and accelerator function and what happened to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Explanation {
    /// By address.
    pub devices: Vec<(HostDevice, Verdict)>,
    /// Every resource with its members' device IDs, in config order.
    pub pools: Vec<(String, Vec<String>)>,
    /// Devices whose facts could not be read, with why.
    pub unreadable: Vec<(PciAddress, SkipReason)>,
}

impl fmt::Display for Explanation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "Pools:")?;
        for (resource, members) in &self.pools {
            let list: Vec<String> = members.iter().map(|a| a.to_string()).collect();
            writeln!(
                f,
                "  {resource}: {} device(s) [{}]",
                members.len(),
                list.join(", ")
            )?;
        }
        writeln!(f, "Devices:")?;
        for (dev, verdict) in &self.devices {
            writeln!(f, "  {dev}")?;
            let refusals = |f: &mut fmt::Formatter<'_>, list: &[(String, Vec<Refusal>)]| {
                for (resource, why) in list {
                    for r in why {
                        writeln!(f, "      not {resource}: {r}")?;
                    }
                }
                Ok(())
            };
            match verdict {
                Verdict::Skipped(reason) => writeln!(f, "    skipped: {reason}")?,
                Verdict::Taken {
                    resource,
                    selector,
                    earlier,
                } => {
                    writeln!(f, "    -> {resource} (selectors[{selector}])")?;
                    refusals(f, earlier)?;
                }
                Verdict::Unclaimed { refusals: list } => {
                    writeln!(f, "    in no pool")?;
                    refusals(f, list)?;
                }
            }
        }
        for (address, reason) in &self.unreadable {
            writeln!(f, "  {address}\n    skipped: {reason}")?;
        }
        Ok(())
    }
}

/// Every pool of a config, and the assignment of devices to them.
pub struct PoolManager {
    pub(crate) host: Host,
    pub(crate) settings: Arc<PoolSettings>,
    pools: Vec<Arc<ResourcePool>>,
    pub(crate) links: Arc<dyn LinkHealth>,
    /// The config's skipped resources and warnings, for `explain`: a resource left out for
    /// bad selectors has no pool to report on.
    pub(crate) config_notes: Vec<String>,
    /// Allocations of resources a reload removed, withheld from every pool until released.
    pub(crate) retired: Vec<Arc<crate::reload::RetiredPool>>,
}

impl fmt::Debug for PoolManager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PoolManager")
            .field("host", &self.host)
            .field("pools", &self.pools)
            .finish_non_exhaustive()
    }
}

impl PoolManager {
    /// One pool per resource of `config`, all empty until the first [`refresh`](Self::refresh).
    pub fn new(
        config: &Config,
        host: Host,
        settings: PoolSettings,
        links: Arc<dyn LinkHealth>,
    ) -> Self {
        let settings = Arc::new(settings);
        let want_ddp = config
            .resources
            .iter()
            .flat_map(|r| &r.selectors)
            .any(|s| !s.ddp_profiles.is_empty());
        let want_rdma_param = config
            .resources
            .iter()
            .flat_map(|r| &r.selectors)
            .any(|s| s.is_rdma);
        let host = host.with_ddp(want_ddp).with_rdma_param(want_rdma_param);
        let pools = config
            .resources
            .iter()
            .map(|rc| {
                Arc::new(ResourcePool::new(
                    rc.clone(),
                    host.clone(),
                    settings.clone(),
                ))
            })
            .collect();
        let config_notes = config
            .skipped
            .iter()
            .chain(&config.warnings)
            .map(ToString::to_string)
            .collect();
        Self {
            host,
            settings,
            pools,
            links,
            config_notes,
            retired: Vec::new(),
        }
    }

    /// Puts a reloaded config's pools (successors of the running ones, in config order) and the
    /// withheld allocations in place of the ones [`new`](Self::new) made.
    pub(crate) fn replace_pools(
        &mut self,
        pools: Vec<Arc<ResourcePool>>,
        retired: Vec<Arc<crate::reload::RetiredPool>>,
    ) {
        self.pools = pools;
        self.retired = retired;
    }

    /// The pools, in config order.
    pub fn pools(&self) -> &[Arc<ResourcePool>] {
        &self.pools
    }

    /// The pool of `resource` (`<prefix>/<name>`).
    pub fn pool(&self, resource: &str) -> Option<&Arc<ResourcePool>> {
        self.pools.iter().find(|p| p.resource_name() == resource)
    }

    /// Why `pool` (by index) does or does not take `dev`: the first selector taking it, or
    /// every refusal.
    pub(crate) fn judge(
        &self,
        pool: &ResourcePool,
        dev: &HostDevice,
    ) -> Result<usize, Vec<Refusal>> {
        let dt = pool.config.device_type;
        match (dt, &dev.aux) {
            (DeviceType::AuxNetDevice, None) => {
                return Err(vec![Refusal::DeviceType(
                    "auxNetDevice pools take auxiliary devices (sub-functions), not PCI functions"
                        .into(),
                )]);
            }
            (DeviceType::NetDevice | DeviceType::Accelerator, Some(_)) => {
                return Err(vec![Refusal::DeviceType(format!(
                    "deviceType {dt} takes PCI functions, not auxiliary devices"
                ))]);
            }
            _ => {}
        }
        let class = (dev.class >> 16) as u8;
        if class != dt.pci_class() {
            return Err(vec![Refusal::DeviceType(format!(
                "deviceType {dt} takes PCI class {:#04x}, this is {class:#04x}",
                dt.pci_class()
            ))]);
        }
        let mut refusals = Vec::new();
        for (index, sel) in pool.config.selectors.iter().enumerate() {
            match matches(sel, dev, dt) {
                Ok(()) => return Ok(index),
                Err(rejection) => refusals.push(Refusal::Selector { index, rejection }),
            }
        }
        Err(refusals)
    }

    /// Every device and what happens to it under this config.
    pub fn explain(&self) -> Result<Explanation, PoolError> {
        let discovery = self.host.discover()?;
        let mut devices = Vec::new();
        let mut pools: Vec<(String, Vec<String>)> = self
            .pools
            .iter()
            .map(|p| (p.resource_name().to_string(), Vec::new()))
            .collect();
        for dev in discovery.devices.into_iter().chain(discovery.aux_devices) {
            let mut refusals = Vec::new();
            let mut verdict = None;
            for (i, pool) in self.pools.iter().enumerate() {
                match self.judge(pool, &dev) {
                    Ok(selector) => {
                        if let Some((_, ids)) = pools.get_mut(i) {
                            ids.push(dev.id());
                        }
                        verdict = Some(Verdict::Taken {
                            resource: pool.resource_name().to_string(),
                            selector,
                            earlier: std::mem::take(&mut refusals),
                        });
                        break;
                    }
                    Err(why) => refusals.push((pool.resource_name().to_string(), why)),
                }
            }
            let verdict = verdict.unwrap_or(Verdict::Unclaimed { refusals });
            devices.push((dev, verdict));
        }
        for (dev, reason) in discovery.skipped {
            devices.push((dev, Verdict::Skipped(reason)));
        }
        devices.sort_by_key(|(d, _)| (d.address, d.aux.as_ref().map(|a| a.name.clone())));
        Ok(Explanation {
            devices,
            pools,
            unreadable: discovery.unreadable,
        })
    }

    /// Rediscovers the host, re-assigns devices (first pool, then first selector, that takes
    /// a device wins), recomputes health and publishes every pool whose list changed. Devices
    /// that appeared since the last call (more VFs, a driver rebind) join their pool here.
    /// Returns whether any pool changed; with `--use-cdi`, changed pools' specs are rewritten.
    pub fn refresh(&self) -> Result<bool, PoolError> {
        let discovery = self.host.discover()?;
        let seen = vanished::Seen::of(&discovery);
        let mut assigned: Vec<BTreeMap<String, Member>> =
            self.pools.iter().map(|_| BTreeMap::new()).collect();
        let holders = crate::reload::holders(&self.pools, &self.retired);
        for dev in discovery.devices.into_iter().chain(discovery.aux_devices) {
            // A device a pod holds is offered by the pool that handed it out or by none.
            let holder = holders.get(&dev.id());
            for (i, (pool, members)) in self.pools.iter().zip(assigned.iter_mut()).enumerate() {
                if holder.is_some_and(|h| *h != Some(i)) {
                    continue;
                }
                if let Ok(selector) = self.judge(pool, &dev) {
                    let unhealthy = pool.health(&dev, self.links.as_ref());
                    members.insert(
                        dev.id(),
                        Member {
                            dev,
                            selector,
                            unhealthy,
                        },
                    );
                    break;
                }
            }
        }
        vanished::keep(&self.pools, &mut assigned, &seen);
        let mut changed = false;
        for (pool, members) in self.pools.iter().zip(assigned) {
            let before: Vec<String> = pool.lock().members.keys().cloned().collect();
            let after: Vec<String> = members.keys().cloned().collect();
            if before != after {
                tracing::info!(
                    resource = pool.resource_name(),
                    before = before.len(),
                    after = after.len(),
                    "pool membership changed"
                );
            }
            let published = pool.set_members(members);
            if published && self.settings.use_cdi {
                pool.write_cdi_spec()?;
            }
            changed |= published;
        }
        Ok(changed)
    }

    /// Removes every pool's device-info files and, with `--use-cdi`, every `sriov-dp-*` CDI
    /// spec; done at start and at stop.
    pub fn clean_files(&self) -> Result<(), PoolError> {
        for pool in &self.pools {
            pool.clean_device_info()?;
        }
        if self.settings.use_cdi {
            self.settings.cdi.clean()?;
        }
        Ok(())
    }
}
