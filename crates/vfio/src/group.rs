use std::path::{Path, PathBuf};
use std::str::FromStr;

use sriov_pci::PciAddress;

use crate::error::{Error, Result, shown};

/// The name the VFIO core gives the IOMMU groups it fakes in no-IOMMU mode
/// (`enable_unsafe_noiommu_mode`); their device nodes are `/dev/vfio/noiommu-<N>`.
pub const NOIOMMU_GROUP_NAME: &str = "vfio-noiommu";

/// An IOMMU group: the unit VFIO hands to a container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IommuGroup {
    /// The group number, as in `/sys/kernel/iommu_groups/<id>`.
    pub id: u32,
    /// Whether VFIO created this group without an IOMMU (no DMA isolation).
    pub noiommu: bool,
}

impl IommuGroup {
    /// A group isolated by a real IOMMU.
    pub const fn new(id: u32) -> Self {
        Self { id, noiommu: false }
    }

    /// The file name of its node under `/dev/vfio`: `<id>`, or `noiommu-<id>`.
    pub fn device_file_name(&self) -> String {
        if self.noiommu {
            format!("noiommu-{}", self.id)
        } else {
            self.id.to_string()
        }
    }

    /// The IOMMU group of the PCI device `address` under `devices_dir` (`NSM_PCI_DEVICES_PATH`,
    /// normally `/sys/bus/pci/devices`).
    ///
    /// ```
    /// use sriov_vfio::{IommuGroup, VfioDir};
    ///
    /// // A fake X710 (crate `sriov-pci-fake`); on a host, `Sysfs::default()`.
    /// # let fake = sriov_pci_fake::fixtures::x710_2port(sriov_pci_fake::FakeSysfs::builder()).build()?;
    /// # let sysfs = fake.sysfs();
    /// let vf = "0000:3b:02.0".parse()?;
    /// sysfs.bind(vf, "vfio-pci")?;
    /// let group = IommuGroup::of_device(sysfs.devices_dir(), vf)?;
    /// assert_eq!(Some(group.id), sysfs.iommu_group(vf)?);
    /// assert!(!group.noiommu);
    ///
    /// let node = VfioDir::new("/dev/vfio").group_path(&group);
    /// assert_eq!(node.to_str(), Some(format!("/dev/vfio/{}", group.id).as_str()));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn of_device(devices_dir: &Path, address: PciAddress) -> Result<Self> {
        Self::of_device_dir(&devices_dir.join(address.to_string()))
    }

    /// The IOMMU group of the PCI device whose sysfs directory is `device_dir`
    /// (for example `/sys/bus/pci/devices/0000:01:10.0`).
    ///
    /// Reads the `iommu_group` link (its last component is the number, read by
    /// [`sriov_pci::iommu_group_of`]) and the group's `name` file, which VFIO sets to
    /// [`NOIOMMU_GROUP_NAME`] for no-IOMMU groups.
    pub fn of_device_dir(device_dir: &Path) -> Result<Self> {
        let link = device_dir.join("iommu_group");
        // The number comes from sriov-pci's one reader of the link; VFIO
        // needs a group, so no link is an error here.
        let id = match sriov_pci::iommu_group_of(device_dir) {
            Ok(Some(id)) => id,
            Ok(None) => {
                return Err(Error::IommuGroupLink {
                    link,
                    cause: std::io::ErrorKind::NotFound.into(),
                });
            }
            Err(sriov_pci::PciError::Parse { found, .. }) => {
                // The whole target says more than its last component.
                let target = std::fs::read_link(&link).unwrap_or_else(|_| PathBuf::from(found));
                return Err(Error::IommuGroupTarget { link, target });
            }
            Err(sriov_pci::PciError::Read { cause: source, .. }) => {
                return Err(Error::IommuGroupLink {
                    link,
                    cause: source,
                });
            }
            Err(other) => {
                return Err(Error::IommuGroupLink {
                    link,
                    cause: std::io::Error::other(other.to_string()),
                });
            }
        };
        let name_path: PathBuf = link.join("name");
        let noiommu = match std::fs::read_to_string(&name_path) {
            Ok(name) => name.trim() == NOIOMMU_GROUP_NAME,
            // Most groups have no name; only the VFIO no-IOMMU path sets one.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
            Err(source) => {
                return Err(Error::IommuGroupName {
                    path: name_path,
                    cause: source,
                });
            }
        };
        Ok(Self { id, noiommu })
    }
}

impl std::fmt::Display for IommuGroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.device_file_name())
    }
}

impl FromStr for IommuGroup {
    type Err = Error;

    /// Parses `<id>` or `noiommu-<id>`, refusing anything that could name another file.
    ///
    /// ```
    /// use sriov_vfio::IommuGroup;
    ///
    /// let group: IommuGroup = "noiommu-7".parse()?;
    /// assert_eq!((group.id, group.noiommu), (7, true));
    /// assert_eq!(group.to_string(), "noiommu-7");
    /// assert!("../7".parse::<IommuGroup>().is_err());
    /// assert!("+7".parse::<IommuGroup>().is_err());
    /// # Ok::<(), sriov_vfio::Error>(())
    /// ```
    fn from_str(s: &str) -> Result<Self> {
        let (digits, noiommu) = match s.strip_prefix("noiommu-") {
            Some(rest) => (rest, true),
            None => (s, false),
        };
        // `u32::from_str` accepts a leading `+`; a device file name never has one.
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(Error::InvalidIommuGroup { value: shown(s) });
        }
        let id = digits
            .parse::<u32>()
            .map_err(|_| Error::InvalidIommuGroup { value: shown(s) })?;
        Ok(Self { id, noiommu })
    }
}
