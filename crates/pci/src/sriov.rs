//! SR-IOV: PF to VFs through `virtfnN`, VF to PF through `physfn`, and changing the VF count.

use serde::Serialize;

use crate::device::parse_dec;
use crate::{PciAddress, PciError, Sysfs};

/// A VF as its PF sees it: the `N` of `virtfnN` and the address it links to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct VirtFn {
    /// The VF index: the number in the link name, compared as a number.
    pub index: u32,
    /// The VF's PCI address.
    pub address: PciAddress,
}

impl Sysfs {
    /// `sriov_totalvfs`, or `None` when the device has no SR-IOV capability.
    pub(crate) fn total_vfs_opt(&self, address: PciAddress) -> Result<Option<u32>, PciError> {
        let path = self.device_dir(address).join("sriov_totalvfs");
        match self.try_read_attr(&path)? {
            None => Ok(None),
            Some(raw) => parse_dec(&path, &raw, "a VF count").map(Some),
        }
    }

    /// `sriov_totalvfs`; [`PciError::NotSriov`] for a device without SR-IOV.
    pub fn total_vfs(&self, pf: PciAddress) -> Result<u32, PciError> {
        self.require(pf)?;
        self.total_vfs_opt(pf)?.ok_or_else(|| PciError::NotSriov {
            address: pf,
            path: self.device_dir(pf).join("sriov_totalvfs"),
        })
    }

    /// `sriov_numvfs`: how many VFs are enabled now.
    pub fn num_vfs(&self, pf: PciAddress) -> Result<u32, PciError> {
        let path = self.device_dir(pf).join("sriov_numvfs");
        match self.try_read_attr(&path)? {
            Some(raw) => parse_dec(&path, &raw, "a VF count"),
            None => Err(PciError::NotSriov { address: pf, path }),
        }
    }

    /// The PF's VFs, ordered by VF index as a number (`virtfn10` after
    /// `virtfn9`: the Go original sorts the names as strings and so applies
    /// per-VF settings to the wrong VF from VF 10 on).
    ///
    /// ```
    /// # let fake = sriov_pci_fake::fixtures::x710_2port(sriov_pci_fake::FakeSysfs::builder()).build()?;
    /// # let sysfs = fake.sysfs();
    /// let pf = "0000:3b:00.0".parse()?;
    /// let vfs = sysfs.vfs(pf)?;
    /// assert_eq!(vfs.iter().map(|vf| vf.index).collect::<Vec<_>>(), [0, 1, 2, 3]);
    /// assert_eq!(vfs[0].address.to_string(), "0000:3b:02.0");
    /// assert_eq!(sysfs.physfn(vfs[0].address)?, Some(pf));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn vfs(&self, pf: PciAddress) -> Result<Vec<VirtFn>, PciError> {
        match self.vfs_by_stride(pf)? {
            Some(vfs) => Ok(vfs),
            None => self.listed_vfs(pf),
        }
    }

    /// [`Sysfs::vfs`] from every `virtfnN` link.
    fn listed_vfs(&self, pf: PciAddress) -> Result<Vec<VirtFn>, PciError> {
        let dir = self.device_dir(pf);
        let names = self.list_dir(&dir)?.ok_or_else(|| PciError::NoDevice {
            address: pf,
            path: dir.clone(),
        })?;
        let mut vfs = Vec::new();
        for name in names {
            let Some(index) = name
                .strip_prefix("virtfn")
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            let link = dir.join(&name);
            let Some(target) = self.link_name(&link)? else {
                continue; // removed between readdir and readlink
            };
            let address = target.parse().map_err(|_| PciError::Parse {
                path: link.clone(),
                expected: "a link to a PCI device directory",
                found: target.clone(),
            })?;
            vfs.push(VirtFn { index, address });
        }
        vfs.sort();
        Ok(vfs)
    }

    /// The PF's VFs worked out from `sriov_numvfs`, `sriov_offset` and
    /// `sriov_stride` (VF `N`'s routing ID is the PF's plus the offset plus
    /// `N` strides, as the kernel numbers them), checked against the first
    /// and the last `virtfnN` link: five reads for the PF instead of one
    /// link per VF, which is most of what start-up reads on a node of
    /// 4096 VFs. `None` (list the links instead) when a file is missing or
    /// a link disagrees.
    fn vfs_by_stride(&self, pf: PciAddress) -> Result<Option<Vec<VirtFn>>, PciError> {
        let number = |name: &str| self.pf_number(pf, name);
        let Some(count) = number("sriov_numvfs")? else {
            return Ok(None);
        };
        if count == 0 {
            return Ok(Some(Vec::new()));
        }
        let (Some(offset), Some(stride)) = (number("sriov_offset")?, number("sriov_stride")?)
        else {
            return Ok(None);
        };
        let mut vfs = Vec::with_capacity(count as usize);
        for index in 0..count {
            let rid = u32::from(pf.routing_id()) + offset + index * stride;
            let Ok(rid) = u16::try_from(rid) else {
                return Ok(None);
            };
            vfs.push(VirtFn {
                index,
                address: pf.with_routing_id(rid),
            });
        }
        for vf in [vfs.first(), vfs.last()].into_iter().flatten() {
            if !self.virtfn_is(pf, vf)? {
                return Ok(None);
            }
        }
        Ok(Some(vfs))
    }

    /// A decimal attribute of `pf` (`sriov_offset`, ...); `None` when the
    /// file is missing.
    fn pf_number(&self, pf: PciAddress, name: &str) -> Result<Option<u32>, PciError> {
        let path = self.device_dir(pf).join(name);
        match self.try_read_attr(&path)? {
            Some(raw) => parse_dec(&path, &raw, "a number").map(Some),
            None => Ok(None),
        }
    }

    /// Whether `pf`'s `virtfnN` link, `N` being `vf.index`, names `vf.address`.
    fn virtfn_is(&self, pf: PciAddress, vf: &VirtFn) -> Result<bool, PciError> {
        let link = self.device_dir(pf).join(format!("virtfn{}", vf.index));
        Ok(self
            .link_name(&link)?
            .is_some_and(|target| target.parse::<PciAddress>().ok() == Some(vf.address)))
    }

    /// The index (`N` of `virtfnN`) of `vf` on `pf`; `None` when `vf` is
    /// not one of its VFs.
    ///
    /// Worked out from the PF's `sriov_offset` and `sriov_stride` (a VF's
    /// routing ID is the PF's plus the offset plus `N` strides) and checked
    /// against the `virtfnN` link: three small reads, where listing the
    /// PF's VFs reads one link per VF (256 on a large PF). A PF without
    /// those files, or whose link disagrees, is listed instead.
    ///
    /// ```
    /// # let fake = sriov_pci_fake::fixtures::x710_2port(sriov_pci_fake::FakeSysfs::builder()).build()?;
    /// # let sysfs = fake.sysfs();
    /// let pf = "0000:3b:00.0".parse()?;
    /// assert_eq!(sysfs.vf_index(pf, "0000:3b:02.3".parse()?)?, Some(3));
    /// assert_eq!(sysfs.vf_index(pf, pf)?, None);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn vf_index(&self, pf: PciAddress, vf: PciAddress) -> Result<Option<u32>, PciError> {
        if let Some(n) = self.vf_index_by_stride(pf, vf)? {
            return Ok(Some(n));
        }
        // Offset and stride were read and found wanting: the links, not them again.
        Ok(self
            .listed_vfs(pf)?
            .into_iter()
            .find(|v| v.address == vf)
            .map(|v| v.index))
    }

    /// [`Sysfs::vf_index`] from the offset and stride, when they agree
    /// with the `virtfnN` link.
    fn vf_index_by_stride(&self, pf: PciAddress, vf: PciAddress) -> Result<Option<u32>, PciError> {
        if pf.domain() != vf.domain() {
            return Ok(None);
        }
        let (Some(offset), Some(stride)) = (
            self.pf_number(pf, "sriov_offset")?,
            self.pf_number(pf, "sriov_stride")?,
        ) else {
            return Ok(None);
        };
        let distance = u32::from(vf.routing_id()).checked_sub(u32::from(pf.routing_id()));
        let n = match (distance.and_then(|d| d.checked_sub(offset)), stride) {
            (Some(d), s) if s > 0 && d % s == 0 => d / s,
            (Some(0), 0) => 0,
            _ => return Ok(None),
        };
        let candidate = VirtFn {
            index: n,
            address: vf,
        };
        Ok(self.virtfn_is(pf, &candidate)?.then_some(n))
    }

    /// The PF of a VF, from its `physfn` link; `None` for anything else.
    pub fn physfn(&self, vf: PciAddress) -> Result<Option<PciAddress>, PciError> {
        let path = self.device_dir(vf).join("physfn");
        match self.link_name(&path)? {
            None => Ok(None),
            Some(target) => target.parse().map(Some).map_err(|_| PciError::Parse {
                path,
                expected: "a link to a PCI device directory",
                found: target,
            }),
        }
    }

    /// Sets the number of enabled VFs and waits until the kernel shows them.
    ///
    /// The kernel refuses to change a non-zero count to another non-zero
    /// count (EBUSY), so a change goes through 0 first. Asking for more than
    /// `sriov_totalvfs` fails before anything is written. Returns the VFs.
    ///
    /// ```
    /// # let fake = sriov_pci_fake::fixtures::x710_2port(sriov_pci_fake::FakeSysfs::builder()).build()?;
    /// # let sysfs = fake.sysfs();
    /// let pf = "0000:3b:00.0".parse()?;
    /// assert_eq!(sysfs.num_vfs(pf)?, 4);
    /// let vfs = sysfs.set_num_vfs(pf, 12)?; // 4 -> 0 -> 12
    /// assert_eq!(vfs.len(), 12);
    /// assert_eq!(vfs[10].index, 10); // virtfn10 comes after virtfn9
    /// assert!(sysfs.set_num_vfs(pf, 65).is_err()); // above sriov_totalvfs (64)
    /// assert_eq!(sysfs.num_vfs(pf)?, 12);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn set_num_vfs(&self, pf: PciAddress, count: u32) -> Result<Vec<VirtFn>, PciError> {
        let total = self.total_vfs(pf)?;
        if count > total {
            return Err(PciError::TooManyVfs {
                address: pf,
                requested: count,
                total,
            });
        }
        let current = self.num_vfs(pf)?;
        if current == count {
            return self.vfs(pf);
        }
        let path = self.device_dir(pf).join("sriov_numvfs");
        if current != 0 {
            self.write_attr(&path, "0")?;
            self.wait_vf_count(pf, 0)?;
        }
        if count != 0 {
            self.write_attr(&path, &count.to_string())?;
            self.wait_vf_count(pf, count)?;
        }
        self.vfs(pf)
    }

    fn wait_vf_count(&self, pf: PciAddress, count: u32) -> Result<(), PciError> {
        let path = self.device_dir(pf);
        self.wait_for(pf, &path, &format!("{count} virtfn links"), || {
            let n = self.vfs(pf)?.len() as u32;
            Ok((n == count, format!("{n} virtfn links")))
        })
    }
}
