//! Discovery: PFs with their VFs, in one pass that reads only what it needs.

use std::collections::HashSet;

use serde::Serialize;

use crate::{PciAddress, PciDevice, PciError, Sysfs, VirtFn};

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
        // First the shape: which addresses are PFs, and their VFs. Only this
        // pass is in order, since knowing a PF's VFs spares them a stat.
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
                let vfs = self.vfs(address)?;
                seen_vfs.extend(vfs.iter().map(|vf| vf.address));
                pfs.push((address, vfs));
            } else {
                rest.push(address);
            }
        }
        // Then the facts, PFs side by side: the reads are independent and
        // their cost is the kernel's, which two cores halve.
        let physical_functions =
            in_parallel(&pfs, |(pf, vfs)| self.assemble(*pf, vfs.iter().copied()))?;
        let mut other_devices = Vec::new();
        for address in rest {
            // VFs of PFs we walked are already known; a VF whose PF we did
            // not see (only possible in a partial tree) is reported as itself.
            if !seen_vfs.contains(&address) {
                other_devices.push(self.device(address)?);
            }
        }
        Ok(Inventory {
            physical_functions,
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
        in_parallel(&sorted, |pf| self.physical_function(*pf))
    }

    /// One PF with its VFs.
    pub fn physical_function(&self, pf: PciAddress) -> Result<PhysicalFunction, PciError> {
        let vfs = self.vfs(pf)?;
        self.assemble(pf, vfs.into_iter())
    }

    /// One PF with exactly the VFs given, whose index, address and IOMMU
    /// group the caller has read already (reconciling a config reads them
    /// to check its `iommuGroup`s). Only the PF's own facts are read: the
    /// VFs' drivers and netdevs are left unread (`None` and empty), since
    /// they change with every Request and whoever acts on a VF reads them
    /// then. This is what the forwarder's start-up needs of 4096 VFs: two
    /// reads each (in reconciling) instead of nine.
    ///
    /// ```
    /// # let fake = sriov_pci_fake::fixtures::x710_2port(sriov_pci_fake::FakeSysfs::builder()).build()?;
    /// # let sysfs = fake.sysfs();
    /// use sriov_pci::KnownVf;
    ///
    /// let pf = "0000:3b:00.0".parse()?;
    /// let known: Vec<KnownVf> = sysfs.vfs(pf)?[..2]
    ///     .iter()
    ///     .map(|vf| KnownVf { vf: *vf, iommu_group: Some(9 + vf.index) })
    ///     .collect();
    /// let before = sysfs.files_read();
    /// let with = sysfs.physical_function_known(pf, &known)?;
    /// assert_eq!(with.vf_device_id, Some(0x154c));
    /// assert_eq!(with.vfs.len(), 2);
    /// // The caller's facts, nothing read per VF.
    /// assert_eq!(with.vfs[1].iommu_group, Some(10));
    /// assert_eq!((with.vfs[1].driver.as_deref(), with.vfs[1].netdevs.len()), (None, 0));
    /// // The PF's own facts only: no VF was read.
    /// assert!(sysfs.files_read() - before < 20);
    /// assert_eq!(with.device, sysfs.physical_function(pf)?.device);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn physical_function_known(
        &self,
        pf: PciAddress,
        vfs: &[KnownVf],
    ) -> Result<PhysicalFunction, PciError> {
        let mut phys = self.assemble(pf, std::iter::empty())?;
        phys.vfs = vfs
            .iter()
            .map(|k| VirtualFunction {
                index: k.vf.index,
                address: k.vf.address,
                driver: None,
                iommu_group: k.iommu_group,
                netdevs: Vec::new(),
            })
            .collect();
        Ok(phys)
    }

    /// The PF's facts and each VF's.
    fn assemble(
        &self,
        pf: PciAddress,
        vfs: impl ExactSizeIterator<Item = VirtFn>,
    ) -> Result<PhysicalFunction, PciError> {
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
        let mut out = Vec::with_capacity(vfs.len());
        for vf in vfs {
            out.push(VirtualFunction {
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
            vfs: out,
        })
    }
}

/// A VF already read by the caller: the `virtfnN` link and the IOMMU group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KnownVf {
    /// Its index and address, from the PF's `virtfnN` link.
    pub vf: VirtFn,
    /// Its IOMMU group as the caller read it.
    pub iommu_group: Option<u32>,
}

/// How many threads read sysfs side by side: the reads are syscalls, so
/// more threads than cores only queue, and a daemon keeps its footprint.
const MAX_READERS: usize = 4;

/// `f` of every item, in order, on up to min(cores, 4) threads (one when
/// there is one core or one item); the first error in item order wins.
pub fn in_parallel<A: Sync, T: Send, E: Send>(
    items: &[A],
    f: impl Fn(&A) -> Result<T, E> + Sync,
) -> Result<Vec<T>, E> {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(MAX_READERS)
        .min(items.len());
    if threads <= 1 {
        return items.iter().map(&f).collect();
    }
    let per = items.len().div_ceil(threads);
    let f = &f;
    std::thread::scope(|s| {
        let mut chunks = items.chunks(per);
        // This thread takes the first chunk itself.
        let first = chunks.next().unwrap_or_default();
        let rest: Vec<Part<'_, T, E>> = chunks
            .map(|chunk| {
                let work = move || chunk.iter().map(f).collect::<Result<Vec<T>, E>>();
                match std::thread::Builder::new()
                    .name("sysfs-read".into())
                    .spawn_scoped(s, work)
                {
                    Ok(h) => Part::Running(h),
                    // No thread to be had: the reads still happen, here.
                    Err(_) => Part::Done(chunk.iter().map(f).collect()),
                }
            })
            .collect();
        let mut out: Vec<T> = first.iter().map(f).collect::<Result<_, _>>()?;
        for part in rest {
            let part = match part {
                Part::Done(r) => r,
                Part::Running(h) => h
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
            };
            out.extend(part?);
        }
        Ok(out)
    })
}

/// A chunk of [`in_parallel`]'s items: read on its thread, or already here.
enum Part<'scope, T, E> {
    Running(std::thread::ScopedJoinHandle<'scope, Result<Vec<T>, E>>),
    Done(Result<Vec<T>, E>),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fail(i: usize) -> PciError {
        PciError::InvalidDriverName(i.to_string())
    }

    #[test]
    fn in_parallel_keeps_the_items_order() {
        let items: Vec<usize> = (0..1000).collect();
        let out = in_parallel(&items, |i| Ok::<_, PciError>(i * 2)).unwrap();
        assert_eq!(out, items.iter().map(|i| i * 2).collect::<Vec<_>>());
        assert!(
            in_parallel(&[] as &[usize], |i| Ok::<_, PciError>(*i))
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn in_parallel_reports_the_first_failure_in_item_order() {
        let items: Vec<usize> = (0..1000).collect();
        // Failures in every chunk, whichever thread finishes first.
        let err = in_parallel(
            &items,
            |&i| if i % 300 == 299 { Err(fail(i)) } else { Ok(i) },
        )
        .unwrap_err();
        assert!(
            matches!(err, PciError::InvalidDriverName(ref n) if n == "299"),
            "{err}"
        );
        let err =
            in_parallel(&items, |&i| if i >= 900 { Err(fail(i)) } else { Ok(i) }).unwrap_err();
        assert!(
            matches!(err, PciError::InvalidDriverName(ref n) if n == "900"),
            "{err}"
        );
    }
}
