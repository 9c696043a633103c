//! Discovery: PFs with their VFs, in one pass that reads only what it needs.

use std::collections::HashSet;

use serde::Serialize;

use crate::{PciAddress, PciDevice, PciError, Sysfs};

/// A VF as discovery reports it: what allocation needs, nothing more.
///
/// Vendor, class and NUMA node of a VF are its PF's, and its device ID is
/// the PF's `sriov_vf_device`, so they are not read per VF.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VirtualFunction {
    /// The `N` of the PF's `virtfnN` link.
    pub index: u32,
    /// The VF's address.
    pub address: PciAddress,
    /// The bound driver, if any.
    pub driver: Option<String>,
    /// Its IOMMU group.
    pub iommu_group: Option<u32>,
    /// Its network interfaces (none when bound to vfio-pci or unbound).
    pub netdevs: Vec<String>,
}

/// A PF with its enabled VFs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PhysicalFunction {
    /// The PF's own facts.
    pub device: PciDevice,
    /// `sriov_totalvfs`.
    pub total_vfs: u32,
    /// The VF device ID (`sriov_vf_device`), when the kernel exposes it.
    pub vf_device_id: Option<u16>,
    /// The enabled VFs, by index.
    pub vfs: Vec<VirtualFunction>,
}

/// The whole PCI bus as discovery saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct Inventory {
    /// SR-IOV physical functions, by address.
    pub physical_functions: Vec<PhysicalFunction>,
    /// Devices that are neither PFs nor VFs, by address.
    pub other_devices: Vec<PciDevice>,
}

impl Sysfs {
    /// Discovers every device: PFs with their VFs, and everything else.
    ///
    /// ```
    /// # let fake = sriov_pci_fake::fixtures::node().build()?;
    /// # let sysfs = fake.sysfs();
    /// // A node with an 82576 (no VFs), a two-port X710 and a ConnectX-5.
    /// let inventory = sysfs.discover_all()?;
    /// let pfs: Vec<String> = inventory
    ///     .physical_functions
    ///     .iter()
    ///     .map(|pf| pf.device.address.to_string())
    ///     .collect();
    /// assert_eq!(pfs, ["0000:01:00.0", "0000:3b:00.0", "0000:3b:00.1", "0000:5e:00.0"]);
    /// let vfs: usize = inventory.physical_functions.iter().map(|pf| pf.vfs.len()).sum();
    /// assert_eq!(vfs, 4 + 4 + 2);
    /// // An on-board NIC without SR-IOV and a device no driver claims.
    /// assert_eq!(inventory.other_devices.len(), 2);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn discover_all(&self) -> Result<Inventory, PciError> {
        let dir = self.devices_dir().to_path_buf();
        let names = self
            .list_dir(&dir)?
            .ok_or_else(|| PciError::read(&dir, std::io::ErrorKind::NotFound.into()))?;
        let mut addresses: Vec<PciAddress> = names.iter().filter_map(|n| n.parse().ok()).collect();
        addresses.sort();
        let mut pfs = Vec::new();
        let mut seen_vfs = HashSet::new();
        let mut rest = Vec::new();
        for address in addresses {
            // VFs sort after their PF, so most are known by now and need no stat.
            if seen_vfs.contains(&address) {
                continue;
            }
            self.count(1);
            if self.device_dir(address).join("sriov_totalvfs").exists() {
                let pf = self.physical_function(address)?;
                seen_vfs.extend(pf.vfs.iter().map(|vf| vf.address));
                pfs.push(pf);
            } else {
                rest.push(address);
            }
        }
        let mut other_devices = Vec::new();
        for address in rest {
            // VFs of PFs we walked are already known; a VF whose PF we did
            // not see (only possible in a partial tree) is reported as itself.
            if !seen_vfs.contains(&address) {
                other_devices.push(self.device(address)?);
            }
        }
        Ok(Inventory {
            physical_functions: pfs,
            other_devices,
        })
    }

    /// Discovers only the named PFs (as a config lists them), with their VFs.
    ///
    /// ```
    /// # let fake = sriov_pci_fake::fixtures::node().build()?;
    /// # let sysfs = fake.sysfs();
    /// let pfs = sysfs.discover_pfs(&["0000:3b:00.1".parse()?])?;
    /// assert_eq!(pfs.len(), 1);
    /// assert_eq!(pfs[0].vf_device_id, Some(0x154c));
    /// assert!(pfs[0].vfs.iter().all(|vf| vf.driver.as_deref() == Some("iavf")));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn discover_pfs(&self, pfs: &[PciAddress]) -> Result<Vec<PhysicalFunction>, PciError> {
        let mut sorted = pfs.to_vec();
        sorted.sort();
        sorted.dedup();
        sorted
            .into_iter()
            .map(|pf| self.physical_function(pf))
            .collect()
    }

    /// One PF with its VFs.
    pub fn physical_function(&self, pf: PciAddress) -> Result<PhysicalFunction, PciError> {
        let device = self.device(pf)?;
        let total_vfs = match device.sriov {
            Some(cap) => cap.total_vfs,
            None => {
                return Err(PciError::NotSriov {
                    address: pf,
                    path: self.device_dir(pf).join("sriov_totalvfs"),
                });
            }
        };
        let vf_path = self.device_dir(pf).join("sriov_vf_device");
        let vf_device_id = match self.try_read_attr(&vf_path)? {
            Some(raw) => {
                Some(crate::device::parse_hex(&vf_path, &raw, "a hex VF device id")? as u16)
            }
            None => None,
        };
        let mut vfs = Vec::new();
        for vf in self.vfs(pf)? {
            vfs.push(VirtualFunction {
                index: vf.index,
                address: vf.address,
                driver: self.driver(vf.address)?,
                iommu_group: self.iommu_group(vf.address)?,
                netdevs: self.netdevs(vf.address)?,
            });
        }
        Ok(PhysicalFunction {
            device,
            total_vfs,
            vf_device_id,
            vfs,
        })
    }
}
