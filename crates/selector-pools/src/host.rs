//! The host as SRDP sees it: every PCI function of class 0x02 or 0x12 with the facts the
//! selectors and info providers need, and why the others were left out.

use std::collections::HashSet;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use std::collections::HashMap;

use sriov_pci::{PciAddress, Sysfs, VirtFn};
use sriov_vfio::{IommuGroup, NOIOMMU_GROUP_NAME};

use crate::error::PoolError;

/// Where the host's facts are read from. Every path can point into a test tree.
#[derive(Debug, Clone)]
pub struct HostPaths {
    /// The PCI tree.
    pub sysfs: Sysfs,
    /// The IPv4 routing table (`/proc/net/route`), for the default-route rule.
    pub proc_net_route: PathBuf,
    /// `/dev`, to check that `/dev/vhost-net` and `/dev/net/tun` exist.
    pub dev_dir: PathBuf,
}

impl Default for HostPaths {
    fn default() -> Self {
        Self {
            sysfs: Sysfs::default(),
            proc_net_route: PathBuf::from("/proc/net/route"),
            dev_dir: PathBuf::from("/dev"),
        }
    }
}

/// Facts SRDP gets from devlink or external tools rather than sysfs. The default knows none;
/// a deployment (or a test) can provide them.
pub trait ExtraFacts: Send + Sync {
    /// The DDP profile loaded on the device's NIC (Intel `ddptool` / devlink `fw.app.name`).
    fn ddp_profile(&self, device: &HostDevice) -> Option<String>;

    /// Whether devlink says RDMA is enabled on the device (`enable_rdma`). Asked only for an
    /// `isRdma` selector's device whose `infiniband/` is empty: with the RDMA subsystem in
    /// exclusive namespace mode, a device handed to a pod takes its RDMA files with it, and SRDP
    /// still counts it as an RDMA device by this parameter.
    fn rdma_enabled(&self, _device: &HostDevice) -> bool {
        false
    }
}

/// Knows no DDP profiles, so `ddpProfiles` selectors match nothing (as SRDP on a NIC without DDP).
#[derive(Debug, Default, Clone, Copy)]
pub struct NoExtraFacts;

impl ExtraFacts for NoExtraFacts {
    fn ddp_profile(&self, _device: &HostDevice) -> Option<String> {
        None
    }
}

/// A vDPA device on top of a PCI function.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VdpaDevice {
    /// Its name (`vdpa0`).
    pub name: String,
    /// `vhost` (bound to vhost_vdpa) or `virtio` (virtio_vdpa); `invalid` otherwise.
    pub kind: String,
    /// The character device for `vhost` devices (`/dev/vhost-vdpa-0`).
    pub path: Option<String>,
}

/// RDMA resources of a function.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RdmaDevice {
    /// The RDMA device names (`mlx5_0`), from `infiniband/`.
    pub names: Vec<String>,
    /// Character devices a container needs, `/dev/infiniband/...`.
    pub char_devices: Vec<String>,
    /// No RDMA device is visible but devlink's `enable_rdma` is on (exclusive RDMA mode, the
    /// device in a pod's namespace): an RDMA device for the selectors, with nothing to mount.
    pub exclusive: bool,
}

/// One PCI function as SRDP's providers describe it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostDevice {
    /// Its address, which is also its device ID.
    pub address: PciAddress,
    /// Vendor ID.
    pub vendor: u16,
    /// Device ID.
    pub device: u16,
    /// 24-bit class code.
    pub class: u32,
    /// Bound driver.
    pub driver: Option<String>,
    /// NUMA node.
    pub numa_node: Option<u32>,
    /// IOMMU group, when it has one.
    pub iommu_group: Option<IommuGroup>,
    /// Its interfaces, sorted; switchdev representors (VF and sub-function ports of its
    /// e-switch, listed under a PF's `net/`) left out: they are never a device's.
    pub netdevs: Vec<String>,
    /// The PF, for VFs.
    pub pf: Option<PciAddress>,
    /// The PF's first interface, for VFs (SRDP's `GetPfName`).
    pub pf_name: Option<String>,
    /// The VF index, for VFs.
    pub vf_index: Option<u32>,
    /// Link type of its first interface, else of its PF's (`ether`, `infiniband`, ...).
    pub link_type: Option<String>,
    /// `acpi_index`.
    pub acpi_index: Option<String>,
    /// RDMA resources.
    pub rdma: RdmaDevice,
    /// Default InfiniBand partition key (index 0 of port 1), for InfiniBand links.
    pub pkey: Option<String>,
    /// DDP profile, when [`ExtraFacts`] knows it.
    pub ddp_profile: Option<String>,
    /// The vDPA device on it.
    pub vdpa: Option<VdpaDevice>,
    /// `uio` device nodes (`/dev/uio0`), for uio and igb_uio.
    pub uio: Vec<String>,
    /// For auxiliary devices (sub-functions): the auxiliary device itself; the PCI facts
    /// above are its parent function's.
    pub aux: Option<AuxDevice>,
}

/// An auxiliary network device on a PCI function (an mlx5 sub-function, `mlx5_core.sf.4`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuxDevice {
    /// Its name on the auxiliary bus, which is also its device ID.
    pub name: String,
    /// The type part of the name (`sf`).
    pub kind: String,
}

impl HostDevice {
    /// Kubelet's device ID: the PCI address, or the auxiliary device name.
    pub fn id(&self) -> String {
        match &self.aux {
            Some(aux) => aux.name.clone(),
            None => self.address.to_string(),
        }
    }

    /// `vendor:device` as `8086:154c`.
    pub fn ids(&self) -> String {
        format!("{:04x}:{:04x}", self.vendor, self.device)
    }

    /// Whether it is a VF.
    pub fn is_vf(&self) -> bool {
        self.pf.is_some()
    }
}

impl fmt::Display for HostDevice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(aux) = &self.aux {
            write!(f, "{} on ", aux.name)?;
        }
        write!(
            f,
            "{} {} driver={}",
            self.address,
            self.ids(),
            self.driver.as_deref().unwrap_or("-")
        )?;
        if !self.netdevs.is_empty() {
            write!(f, " netdev={}", self.netdevs.join(","))?;
        }
        if let (Some(aux), Some(i)) = (&self.aux, self.vf_index) {
            write!(f, " {} {i}", aux.kind)?;
        } else if let (Some(pf), Some(i)) = (self.pf, self.vf_index) {
            write!(
                f,
                " VF {i} of {pf} ({})",
                self.pf_name.as_deref().unwrap_or("no netdev")
            )?;
        }
        Ok(())
    }
}

/// Why discovery left a device out of every pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SkipReason {
    /// One of its interfaces carries the default route: the host uses it.
    DefaultRoute {
        /// The interface.
        netdev: String,
    },
    /// A PF with VFs enabled: its VFs are offered instead.
    PfWithVfs {
        /// `sriov_numvfs`.
        num_vfs: u32,
    },
    /// No driver is bound (SRDP cannot describe such a device and leaves it out).
    NoDriver,
    /// Its sysfs facts could not be read (it may be going away); retried on the next pass.
    Unreadable(String),
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SkipReason::DefaultRoute { netdev } => {
                write!(
                    f,
                    "its interface {netdev} carries the default route (the host uses it)"
                )
            }
            SkipReason::PfWithVfs { num_vfs } => {
                write!(
                    f,
                    "it is a PF with {num_vfs} VFs enabled (its VFs are offered instead)"
                )
            }
            SkipReason::NoDriver => write!(f, "no driver is bound to it"),
            SkipReason::Unreadable(why) => write!(f, "its sysfs facts are unreadable: {why}"),
        }
    }
}

/// What discovery found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Discovery {
    /// Devices pools may take, by address.
    pub devices: Vec<HostDevice>,
    /// Devices left out, with why.
    pub skipped: Vec<(HostDevice, SkipReason)>,
    /// Devices that could not even be described.
    pub unreadable: Vec<(PciAddress, SkipReason)>,
    /// Auxiliary network devices (sub-functions) of network functions with a driver, for
    /// auxNetDevice pools. SRDP applies no default-route or PF rule to these.
    pub aux_devices: Vec<HostDevice>,
}

/// Per discovery pass: each PF's VFs and first interface name.
type PfCache = HashMap<PciAddress, (Vec<VirtFn>, Option<String>)>;

/// Reads the host.
#[derive(Clone)]
pub struct Host {
    paths: HostPaths,
    extra: Arc<dyn ExtraFacts>,
    want_ddp: bool,
    want_rdma_param: bool,
}

impl fmt::Debug for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Host")
            .field("paths", &self.paths)
            .finish_non_exhaustive()
    }
}

impl Host {
    /// A host read from `paths`, knowing no extra facts.
    pub fn new(paths: HostPaths) -> Self {
        Self {
            paths,
            extra: Arc::new(NoExtraFacts),
            want_ddp: true,
            want_rdma_param: true,
        }
    }

    /// Uses `extra` for facts sysfs does not have.
    pub fn with_extra_facts(mut self, extra: Arc<dyn ExtraFacts>) -> Self {
        self.extra = extra;
        self
    }

    /// Whether to ask [`ExtraFacts`] for DDP profiles (which may run a tool per device); the
    /// [`PoolManager`](crate::PoolManager) turns it off unless a selector uses `ddpProfiles`.
    pub fn with_ddp(mut self, want: bool) -> Self {
        self.want_ddp = want;
        self
    }

    /// Whether to ask [`ExtraFacts`] for devlink's `enable_rdma` (a tool run per device without
    /// RDMA files); the [`PoolManager`](crate::PoolManager) turns it off unless a selector uses
    /// `isRdma`.
    pub fn with_rdma_param(mut self, want: bool) -> Self {
        self.want_rdma_param = want;
        self
    }

    /// Where it reads.
    pub fn paths(&self) -> &HostPaths {
        &self.paths
    }

    /// Whether `/dev/<rel>` exists.
    pub fn dev_exists(&self, rel: &str) -> bool {
        self.paths.dev_dir.join(rel).exists()
    }

    /// Every function of class 0x02 and 0x12, with SRDP's exclusions applied to class 0x02:
    /// interfaces carrying the default route, and PFs with VFs enabled.
    pub fn discover(&self) -> Result<Discovery, PoolError> {
        let sysfs = &self.paths.sysfs;
        let dir = sysfs.devices_dir();
        let entries = std::fs::read_dir(dir).map_err(|source| PoolError::Read {
            path: dir.to_path_buf(),
            cause: source,
        })?;
        let mut addresses: Vec<PciAddress> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse().ok()))
            .collect();
        addresses.sort();
        let routed = default_route_interfaces(&self.paths.proc_net_route)?;
        let mut out = Discovery::default();
        let mut pfs = PfCache::new();
        for address in addresses {
            let ids = match sysfs.ids(address) {
                Ok(ids) => ids,
                // A device removed between readdir and read (VFs going away) is simply gone.
                Err(_) if !sysfs.exists(address) => continue,
                Err(e) => {
                    tracing::warn!(device = %address, "cannot read device ids: {e}");
                    out.unreadable
                        .push((address, SkipReason::Unreadable(e.to_string())));
                    continue;
                }
            };
            let class = ids.base_class();
            if class != 0x02 && class != 0x12 {
                continue;
            }
            let dev = match self.describe_with(address, &mut pfs) {
                Ok(dev) => dev,
                Err(e) => {
                    tracing::warn!(device = %address, "cannot describe device: {e}");
                    out.unreadable
                        .push((address, SkipReason::Unreadable(e.to_string())));
                    continue;
                }
            };
            if dev.driver.is_none() {
                out.skipped.push((dev, SkipReason::NoDriver));
                continue;
            }
            if class == 0x02 {
                out.aux_devices.extend(self.aux_devices_of(&dev));
                if let Some(netdev) = dev.netdevs.iter().find(|n| routed.contains(*n)) {
                    let netdev = netdev.clone();
                    out.skipped.push((dev, SkipReason::DefaultRoute { netdev }));
                    continue;
                }
                let num_vfs = self.num_vfs(address);
                if num_vfs > 0 {
                    out.skipped.push((dev, SkipReason::PfWithVfs { num_vfs }));
                    continue;
                }
            }
            out.devices.push(dev);
        }
        Ok(out)
    }

    fn num_vfs(&self, address: PciAddress) -> u32 {
        // As SRDP: a PF whose count cannot be read counts as having none.
        self.paths.sysfs.num_vfs(address).unwrap_or(0)
    }

    /// All facts about one device.
    pub fn describe(&self, address: PciAddress) -> Result<HostDevice, PoolError> {
        self.describe_with(address, &mut PfCache::new())
    }

    /// [`describe`](Self::describe), reading each PF's VF list and name once per pass (a PF
    /// with 128 VFs would otherwise have its 128 `virtfn` links read for every VF).
    fn describe_with(
        &self,
        address: PciAddress,
        pfs: &mut PfCache,
    ) -> Result<HostDevice, PoolError> {
        let sysfs = &self.paths.sysfs;
        let ids = sysfs.ids(address)?;
        let dir = sysfs.device_dir(address);
        let netdevs = crate::switchdev::without_representors(&dir, sysfs.netdevs(address)?);
        let pf = sysfs.physfn(address)?;
        let (pf_name, vf_index) = match pf {
            Some(pf) => {
                let (vfs, name) = match pfs.get(&pf) {
                    Some(known) => known,
                    None => {
                        let name = uplink_name(&sysfs.device_dir(pf), sysfs.netdevs(pf)?);
                        pfs.entry(pf).or_insert((sysfs.vfs(pf)?, name))
                    }
                };
                let index = vfs
                    .iter()
                    .find(|vf| vf.address == address)
                    .map(|vf| vf.index);
                (name.clone(), index)
            }
            None => (None, None),
        };
        let link_type = match (netdevs.first(), pf, &pf_name) {
            (Some(name), _, _) => link_type(&dir.join("net").join(name)),
            (None, Some(pf), Some(name)) => link_type(&sysfs.device_dir(pf).join("net").join(name)),
            _ => None,
        };
        let iommu_group = match sysfs.iommu_group(address)? {
            None => None,
            Some(id) => {
                let name = read_trimmed(&dir.join("iommu_group/name"));
                Some(IommuGroup {
                    id,
                    noiommu: name.as_deref() == Some(NOIOMMU_GROUP_NAME),
                })
            }
        };
        let rdma = rdma_of(&dir);
        let pkey = if link_type.as_deref() == Some("infiniband") {
            rdma.names
                .first()
                .and_then(|n| read_trimmed(&dir.join("infiniband").join(n).join("ports/1/pkeys/0")))
        } else {
            None
        };
        let mut dev = HostDevice {
            address,
            vendor: ids.vendor,
            device: ids.device,
            class: ids.class,
            driver: sysfs.driver(address)?,
            numa_node: sysfs.numa_node(address)?,
            iommu_group,
            netdevs,
            pf,
            pf_name,
            vf_index,
            link_type,
            acpi_index: read_trimmed(&dir.join("acpi_index")),
            rdma,
            pkey,
            ddp_profile: None,
            vdpa: vdpa_of(&dir),
            uio: list_sorted(&dir.join("uio"))
                .into_iter()
                .map(|n| format!("/dev/{n}"))
                .collect(),
            aux: None,
        };
        if self.want_ddp {
            dev.ddp_profile = self.extra.ddp_profile(&dev);
        }
        // Network functions only: SRDP asks no RDMA questions of accelerators.
        if self.want_rdma_param && dev.rdma.names.is_empty() && dev.class >> 16 == 0x02 {
            dev.rdma.exclusive = self.extra.rdma_enabled(&dev);
        }
        Ok(dev)
    }
}

impl Host {
    /// The auxiliary network devices under a network function with a netdev (sriovnet's
    /// `GetAuxNetDevicesFromPci`: entries named `<driver>.<type>.<N>`), each described with
    /// its parent's PCI facts, its own netdevs, its index (`sfnum`) and RDMA devices.
    fn aux_devices_of(&self, parent: &HostDevice) -> Vec<HostDevice> {
        if parent.driver.is_none() || parent.netdevs.is_empty() {
            return Vec::new();
        }
        let dir = self.paths.sysfs.device_dir(parent.address);
        let mut out = Vec::new();
        for name in list_sorted(&dir) {
            let parts: Vec<&str> = name.split('.').collect();
            // `<driver>.<kind>.<number>`, every part non-empty.
            let kind = match parts.as_slice() {
                [driver, kind, number]
                    if !driver.is_empty()
                        && !kind.is_empty()
                        && !number.is_empty()
                        && number.bytes().all(|b| b.is_ascii_digit()) =>
                {
                    kind.to_string()
                }
                _ => continue,
            };
            let adir = dir.join(&name);
            // As SRDP (sriovnet's GetSfIndexByAuxDev): only sub-functions have an index; other
            // auxiliary devices (mlx5_core.eth.0, mlx5_core.vnet.2, ...) are not offered.
            let Some(index) = read_trimmed(&adir.join("sfnum")).and_then(|n| n.parse().ok()) else {
                continue;
            };
            let netdevs = list_sorted(&adir.join("net"));
            let pf_name = uplink_name(&dir, parent.netdevs.clone());
            let link_type = match (netdevs.first(), &pf_name) {
                (Some(n), _) => link_type(&adir.join("net").join(n)),
                (None, Some(n)) => link_type(&dir.join("net").join(n)),
                _ => None,
            };
            let mut dev = parent.clone();
            dev.netdevs = netdevs;
            dev.pf = Some(parent.address);
            dev.pf_name = pf_name;
            dev.vf_index = Some(index);
            dev.link_type = link_type;
            dev.rdma = rdma_of(&adir);
            dev.iommu_group = None;
            dev.uio = Vec::new();
            dev.vdpa = None;
            dev.pkey = None;
            dev.aux = Some(AuxDevice { kind, name });
            out.push(dev);
        }
        out
    }
}

/// The PF's name as SRDP reports it: in switchdev mode the PF's `net/` also lists VF
/// representors, and the uplink representor (`phys_port_name` `p<N>`) is the PF; otherwise
/// the first (only) interface.
fn uplink_name(pf_dir: &Path, netdevs: Vec<String>) -> Option<String> {
    let uplink = netdevs.iter().find(|n| {
        read_trimmed(&pf_dir.join("net").join(n.as_str()).join("phys_port_name")).is_some_and(|p| {
            p.len() > 1 && p.starts_with('p') && p[1..].bytes().all(|b| b.is_ascii_digit())
        })
    });
    // Without an uplink, never a representor: it names no PF.
    uplink.cloned().or_else(|| {
        crate::switchdev::without_representors(pf_dir, netdevs)
            .into_iter()
            .next()
    })
}

fn read_trimmed(path: &Path) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

fn list_sorted(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// iproute2's names for ARPHRD numbers (what netlink's `EncapType` gives SRDP).
fn link_type(netdev_dir: &Path) -> Option<String> {
    let n: u32 = read_trimmed(&netdev_dir.join("type"))?.parse().ok()?;
    Some(
        match n {
            0 => "netrom",
            1 => "ether",
            24 => "ieee1394",
            32 => "infiniband",
            512 => "ppp",
            768 => "ipip",
            772 => "loopback",
            776 => "sit",
            778 => "gre",
            823 => "ip6gre",
            65534 => "none",
            _ => return Some(format!("arphrd-{n}")),
        }
        .to_string(),
    )
}

/// RDMA devices from `infiniband/`, and their character devices from the class directories
/// the kernel puts under the PCI function (`infiniband_verbs/uverbsN`, `infiniband_mad/umadN`
/// and `issmN`), plus the shared `rdma_cm`.
fn rdma_of(dir: &Path) -> RdmaDevice {
    let names = list_sorted(&dir.join("infiniband"));
    if names.is_empty() {
        return RdmaDevice::default();
    }
    let mut char_devices: Vec<String> = list_sorted(&dir.join("infiniband_verbs"))
        .into_iter()
        .filter(|n| n.starts_with("uverbs"))
        .map(|n| format!("/dev/infiniband/{n}"))
        .collect();
    let mad = list_sorted(&dir.join("infiniband_mad"));
    for prefix in ["umad", "issm"] {
        char_devices.extend(
            mad.iter()
                .filter(|n| n.starts_with(prefix))
                .map(|n| format!("/dev/infiniband/{n}")),
        );
    }
    char_devices.push("/dev/infiniband/rdma_cm".to_string());
    RdmaDevice {
        names,
        char_devices,
        exclusive: false,
    }
}

/// The vDPA device a function's driver created (`vdpaN/` under the PCI function), typed by
/// the vDPA bus driver bound to it.
fn vdpa_of(dir: &Path) -> Option<VdpaDevice> {
    let is_vdpa = |n: &str| {
        n.len() > 4 && n.starts_with("vdpa") && n[4..].bytes().all(|b| b.is_ascii_digit())
    };
    let entries = list_sorted(dir);
    // mlx5 puts the vDPA device under an auxiliary device of the VF (`mlx5_core.vnet.2/vdpa0`).
    let vdir = entries
        .iter()
        .find(|n| is_vdpa(n))
        .map(|n| dir.join(n))
        .or_else(|| {
            entries
                .iter()
                .filter(|n| n.matches('.').count() == 2)
                .find_map(|aux| {
                    let sub = dir.join(aux);
                    list_sorted(&sub)
                        .into_iter()
                        .find(|n| is_vdpa(n))
                        .map(|n| sub.join(n))
                })
        })?;
    let name = vdir.file_name()?.to_string_lossy().into_owned();
    let driver = std::fs::read_link(vdir.join("driver"))
        .ok()
        .and_then(|t| t.file_name().map(|n| n.to_string_lossy().into_owned()));
    let (kind, path) = match driver.as_deref() {
        Some("vhost_vdpa") => (
            "vhost",
            list_sorted(&vdir.join("vhost-vdpa"))
                .into_iter()
                .next()
                .map(|n| format!("/dev/{n}")),
        ),
        Some("virtio_vdpa") => ("virtio", None),
        _ => ("invalid", None),
    };
    Some(VdpaDevice {
        name,
        kind: kind.to_string(),
        path,
    })
}

/// Interfaces with an IPv4 default route in the main table, from `/proc/net/route`
/// (destination and mask both 0). A missing file means no routes, as in an empty namespace.
pub fn default_route_interfaces(path: &Path) -> Result<HashSet<String>, PoolError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(HashSet::new()),
        Err(source) => {
            return Err(PoolError::Read {
                path: path.to_path_buf(),
                cause: source,
            });
        }
    };
    let mut out = HashSet::new();
    for line in text.lines().skip(1) {
        let cols: Vec<&str> = line.split_whitespace().collect();
        // Iface Destination Gateway Flags RefCnt Use Metric Mask MTU Window IRTT
        if let [iface, "00000000", _, _, _, _, _, "00000000", ..] = cols.as_slice() {
            out.insert(iface.to_string());
        }
    }
    Ok(out)
}
