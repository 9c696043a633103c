//! Facts about one PCI function, read from its sysfs directory.

use serde::Serialize;

use crate::{PciAddress, PciError, Sysfs};

/// Identification registers of a function (`vendor`, `device`, `class`, `subsystem_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PciIds {
    /// Vendor ID, e.g. 0x8086.
    pub vendor: u16,
    /// Device ID, e.g. 0x10c9.
    pub device: u16,
    /// 24-bit class code, e.g. 0x020000 (Ethernet controller).
    pub class: u32,
    /// Subsystem vendor ID.
    pub subsystem_vendor: u16,
    /// Subsystem device ID.
    pub subsystem_device: u16,
}

impl PciIds {
    /// The base class byte (0x02 network, 0x12 processing accelerator, ...).
    pub fn base_class(&self) -> u8 {
        (self.class >> 16) as u8
    }
}

/// A network interface the function's driver created, as `net/<name>` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NetDev {
    /// Interface name.
    pub name: String,
    /// ARPHRD link type from `type` (1 Ethernet, 32 InfiniBand).
    pub link_type: u16,
    /// `operstate`: `up`, `down`, `unknown`, ...
    pub operstate: String,
    /// MAC address from `address`.
    pub mac: String,
}

/// Everything the crate knows about one function.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PciDevice {
    /// Its address.
    pub address: PciAddress,
    /// Identification registers.
    pub ids: PciIds,
    /// The bound driver, if any.
    pub driver: Option<String>,
    /// NUMA node; `None` when the kernel reports -1 (no affinity) or the file is absent.
    pub numa_node: Option<u32>,
    /// IOMMU group number, if the device is in one.
    pub iommu_group: Option<u32>,
    /// Names of its network interfaces (empty when unbound or bound to vfio-pci).
    pub netdevs: Vec<String>,
    /// SR-IOV capability, for physical functions.
    pub sriov: Option<SriovCapability>,
    /// The PF, for virtual functions.
    pub physfn: Option<PciAddress>,
}

/// The SR-IOV capability of a physical function.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct SriovCapability {
    /// `sriov_totalvfs`.
    pub total_vfs: u32,
    /// `sriov_numvfs`.
    pub num_vfs: u32,
}

pub(crate) fn parse_hex(
    path: &std::path::Path,
    raw: &str,
    expected: &'static str,
) -> Result<u32, PciError> {
    let digits = raw.strip_prefix("0x").unwrap_or(raw);
    u32::from_str_radix(digits, 16).map_err(|_| PciError::Parse {
        path: path.to_path_buf(),
        expected,
        found: raw.to_string(),
    })
}

pub(crate) fn parse_dec(
    path: &std::path::Path,
    raw: &str,
    expected: &'static str,
) -> Result<u32, PciError> {
    raw.parse().map_err(|_| PciError::Parse {
        path: path.to_path_buf(),
        expected,
        found: raw.to_string(),
    })
}

/// The IOMMU group number of the PCI device whose sysfs directory is
/// `device_dir` (for example `/sys/bus/pci/devices/0000:01:10.0`), from the
/// last component of its `iommu_group` link; `None` when it has no link (no
/// IOMMU). The one reader of that link: [`Sysfs::iommu_group`] and
/// `sriov-vfio`'s groups both go through it.
pub fn iommu_group_of(device_dir: &std::path::Path) -> Result<Option<u32>, PciError> {
    let path = device_dir.join("iommu_group");
    match std::fs::read_link(&path) {
        Ok(target) => {
            let name = target.file_name().unwrap_or_default().to_string_lossy();
            parse_dec(&path, &name, "an IOMMU group number").map(Some)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(PciError::read(&path, e)),
    }
}

impl Sysfs {
    /// Whether a device directory exists.
    pub fn exists(&self, address: PciAddress) -> bool {
        self.count(1);
        self.device_dir(address).exists()
    }

    /// Fails with [`PciError::NoDevice`] when the device directory is missing.
    pub fn require(&self, address: PciAddress) -> Result<(), PciError> {
        if self.exists(address) {
            Ok(())
        } else {
            Err(PciError::NoDevice {
                address,
                path: self.device_dir(address),
            })
        }
    }

    /// All facts about one device.
    ///
    /// ```
    /// # let fake = sriov_pci_fake::fixtures::x710_2port(sriov_pci_fake::FakeSysfs::builder()).build()?;
    /// # let sysfs = fake.sysfs();
    /// // One port of an Intel X710, 4 of its 64 VFs enabled.
    /// let pf = sysfs.device("0000:3b:00.0".parse()?)?;
    /// assert_eq!((pf.ids.vendor, pf.ids.device), (0x8086, 0x1572));
    /// assert_eq!(pf.driver.as_deref(), Some("i40e"));
    /// assert_eq!(pf.netdevs, ["ens785f0"]);
    /// assert_eq!(pf.sriov.map(|s| (s.total_vfs, s.num_vfs)), Some((64, 4)));
    ///
    /// let vf = sysfs.device("0000:3b:02.0".parse()?)?;
    /// assert_eq!(vf.physfn, Some(pf.address));
    /// assert_eq!(vf.driver.as_deref(), Some("iavf"));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn device(&self, address: PciAddress) -> Result<PciDevice, PciError> {
        self.require(address)?;
        let sriov = match self.total_vfs_opt(address)? {
            Some(total_vfs) => Some(SriovCapability {
                total_vfs,
                num_vfs: self.num_vfs(address)?,
            }),
            None => None,
        };
        Ok(PciDevice {
            address,
            ids: self.ids(address)?,
            driver: self.driver(address)?,
            numa_node: self.numa_node(address)?,
            iommu_group: self.iommu_group(address)?,
            netdevs: self.netdevs(address)?,
            sriov,
            physfn: self.physfn(address)?,
        })
    }

    /// Identification registers.
    pub fn ids(&self, address: PciAddress) -> Result<PciIds, PciError> {
        let dir = self.device_dir(address);
        let hex = |name: &str, expected: &'static str| -> Result<u32, PciError> {
            let path = dir.join(name);
            let raw = self.read_attr(&path)?;
            parse_hex(&path, &raw, expected)
        };
        Ok(PciIds {
            vendor: hex("vendor", "a hex vendor id")? as u16,
            device: hex("device", "a hex device id")? as u16,
            class: hex("class", "a hex class code")?,
            subsystem_vendor: hex("subsystem_vendor", "a hex subsystem vendor id")? as u16,
            subsystem_device: hex("subsystem_device", "a hex subsystem device id")? as u16,
        })
    }

    /// The bound driver's name, from the `driver` link.
    pub fn driver(&self, address: PciAddress) -> Result<Option<String>, PciError> {
        self.link_name(&self.device_dir(address).join("driver"))
    }

    /// NUMA node, `None` for -1 or a missing file (non-NUMA kernels).
    pub fn numa_node(&self, address: PciAddress) -> Result<Option<u32>, PciError> {
        let path = self.device_dir(address).join("numa_node");
        match self.try_read_attr(&path)? {
            None => Ok(None),
            Some(raw) if raw == "-1" => Ok(None),
            Some(raw) => parse_dec(&path, &raw, "a NUMA node number or -1").map(Some),
        }
    }

    /// IOMMU group number, from the `iommu_group` link.
    pub fn iommu_group(&self, address: PciAddress) -> Result<Option<u32>, PciError> {
        self.count(1);
        iommu_group_of(&self.device_dir(address))
    }

    /// Names of the device's network interfaces, sorted.
    pub fn netdevs(&self, address: PciAddress) -> Result<Vec<String>, PciError> {
        let mut names = self
            .list_dir(&self.device_dir(address).join("net"))?
            .unwrap_or_default();
        names.sort();
        Ok(names)
    }

    /// One network interface's type, operstate and MAC, as sysfs shows them.
    pub fn netdev(&self, address: PciAddress, name: &str) -> Result<NetDev, PciError> {
        let dir = self.device_dir(address).join("net").join(name);
        let type_path = dir.join("type");
        let link_type = parse_dec(&type_path, &self.read_attr(&type_path)?, "an ARPHRD number")?;
        Ok(NetDev {
            name: name.to_string(),
            link_type: link_type as u16,
            operstate: self.read_attr(&dir.join("operstate"))?,
            mac: self
                .try_read_attr(&dir.join("address"))?
                .unwrap_or_default(),
        })
    }
}
