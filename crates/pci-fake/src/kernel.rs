//! The fake kernel: applies the kernel's reactions to sysfs writes on a tree.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use sriov_pci::{AttrWriter, PciAddress};

use crate::layout::{Layout, remove_if_exists, symlink, write};
use crate::meta::Meta;

fn errno(code: nix_errno::Errno) -> io::Error {
    io::Error::from_raw_os_error(code as i32)
}

/// The errno values the kernel answers sysfs writes with.
mod nix_errno {
    #[derive(Debug, Clone, Copy)]
    #[repr(i32)]
    pub(crate) enum Errno {
        Enoent = 2,
        Ebusy = 16,
        Enodev = 19,
        Einval = 22,
        Erange = 34,
    }
}
use nix_errno::Errno;

/// A write the fake kernel received, in order (for tests that assert on
/// what was asked, not only on the resulting tree).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedWrite {
    /// The attribute written.
    pub path: PathBuf,
    /// The value written.
    pub value: String,
    /// Whether the kernel accepted it.
    pub accepted: bool,
}

/// Reacts to writes on a sysfs tree the way the Linux PCI core does.
///
/// - `sriov_numvfs`: creates or removes VF directories, `virtfnN` and
///   `physfn` links, IOMMU groups and `bus/pci/devices` entries, and
///   autoprobes the VFs' driver by ID table; refuses values above
///   `sriov_totalvfs` (ERANGE), a change between two non-zero counts
///   (EBUSY), garbage (EINVAL), and a PF with no driver (ENOENT).
/// - `driver_override`, `drivers_probe`, `drivers/<d>/bind`,
///   `drivers/<d>/unbind`: move the `driver` link (and the driver's back
///   link, and `net/<ifname>` for network drivers) with the kernel's
///   matching rules: an override restricts matching to that driver;
///   binding a bound device is EBUSY; a driver that does not match is ENODEV.
#[derive(Debug)]
pub struct FakeKernel {
    layout: Layout,
    meta: Meta,
    lock: Mutex<Vec<RecordedWrite>>,
}

impl FakeKernel {
    /// Attaches to a tree, reading its `fake-kernel.json`.
    pub fn attach(root: impl Into<PathBuf>) -> io::Result<Self> {
        let layout = Layout::new(root);
        let meta = Meta::load(&layout.root)?;
        Ok(Self::with_meta(layout, meta))
    }

    pub(crate) fn with_meta(layout: Layout, meta: Meta) -> Self {
        Self {
            layout,
            meta,
            lock: Mutex::new(Vec::new()),
        }
    }

    /// The tree's root.
    pub fn root(&self) -> &Path {
        &self.layout.root
    }

    /// Every write received so far, in order.
    ///
    /// ```
    /// use sriov_pci_fake::{FakeSysfs, fixtures};
    ///
    /// let fake = fixtures::igb_82576(FakeSysfs::builder()).build()?;
    /// let pf = "0000:01:00.0".parse()?;
    /// // 9 is above the 82576's sriov_totalvfs (7): sriov-pci refuses before writing.
    /// assert!(fake.sysfs().set_num_vfs(pf, 9).is_err());
    /// fake.sysfs().set_num_vfs(pf, 2)?;
    /// let writes = fake.kernel().writes();
    /// assert_eq!(writes.len(), 1);
    /// assert!(writes[0].path.ends_with("sriov_numvfs"));
    /// assert_eq!((writes[0].value.as_str(), writes[0].accepted), ("2", true));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn writes(&self) -> Vec<RecordedWrite> {
        self.lock.lock().map(|w| w.clone()).unwrap_or_default()
    }

    fn apply(&self, path: &Path, value: &str) -> io::Result<()> {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let parent = path.parent().unwrap_or(Path::new(""));
        let parent_name = parent.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let in_drivers = parent
            .parent()
            .is_some_and(|p| p.file_name().is_some_and(|n| n == "drivers"));
        match name {
            "sriov_numvfs" => {
                let pf = parse_addr(parent_name)?;
                self.write_numvfs(pf, value)
            }
            "driver_override" => {
                let dev = parse_addr(parent_name)?;
                self.write_override(dev, value)
            }
            "drivers_probe" => {
                let dev = parse_addr(value.trim()).map_err(|_| errno(Errno::Enodev))?;
                self.probe(dev)
            }
            "bind" if in_drivers => {
                let dev = parse_addr(value.trim()).map_err(|_| errno(Errno::Enodev))?;
                self.bind_store(parent_name, dev)
            }
            "unbind" if in_drivers => {
                let dev = parse_addr(value.trim()).map_err(|_| errno(Errno::Enodev))?;
                if self.driver_of(dev)?.as_deref() != Some(parent_name) {
                    return Err(errno(Errno::Enodev));
                }
                self.unbind(dev)
            }
            _ => {
                // Any other attribute: a plain store, but it must exist.
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .truncate(true)
                    .open(path)?;
                io::Write::write_all(&mut f, value.as_bytes())
            }
        }
    }

    fn dev_dir(&self, dev: PciAddress) -> io::Result<PathBuf> {
        self.layout.real_dir(dev).map_err(|_| errno(Errno::Enodev))
    }

    fn read(&self, dev: PciAddress, attr: &str) -> io::Result<String> {
        Ok(std::fs::read_to_string(self.dev_dir(dev)?.join(attr))?
            .trim()
            .to_string())
    }

    fn read_num(&self, dev: PciAddress, attr: &str) -> io::Result<u32> {
        let raw = self.read(dev, attr)?;
        let digits = raw.strip_prefix("0x").unwrap_or(&raw);
        let radix = if raw.starts_with("0x") { 16 } else { 10 };
        u32::from_str_radix(digits, radix).map_err(io::Error::other)
    }

    pub(crate) fn driver_of(&self, dev: PciAddress) -> io::Result<Option<String>> {
        match std::fs::read_link(self.dev_dir(dev)?.join("driver")) {
            Ok(t) => Ok(t.file_name().map(|n| n.to_string_lossy().into_owned())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn write_numvfs(&self, pf: PciAddress, value: &str) -> io::Result<()> {
        let n: u32 = value.trim().parse().map_err(|_| errno(Errno::Einval))?;
        let total = self.read_num(pf, "sriov_totalvfs")?;
        let current = self.read_num(pf, "sriov_numvfs")?;
        if n == current {
            return Ok(());
        }
        if n > total {
            return Err(errno(Errno::Erange));
        }
        if self.driver_of(pf)?.is_none() {
            return Err(errno(Errno::Enoent));
        }
        if n == 0 {
            self.disable_vfs(pf)
        } else if current != 0 {
            Err(errno(Errno::Ebusy))
        } else {
            self.enable_vfs(pf, n)
        }
    }

    /// Creates `n` VFs as the PCI core does when `sriov_numvfs` goes from 0 to `n`.
    pub(crate) fn enable_vfs(&self, pf: PciAddress, n: u32) -> io::Result<()> {
        let pf_dir = self.dev_dir(pf)?;
        let parent = pf_dir.parent().map(Path::to_path_buf).unwrap_or_default();
        let offset = self.read_num(pf, "sriov_offset")? as u16;
        let stride = self.read_num(pf, "sriov_stride")? as u16;
        let vendor = self.read(pf, "vendor")?;
        let vf_device = self.read(pf, "sriov_vf_device")?;
        let autoprobe = self
            .read(pf, "sriov_drivers_autoprobe")
            .unwrap_or_else(|_| "1".into())
            == "1";
        for i in 0..n {
            let rid = pf
                .routing_id()
                .wrapping_add(offset)
                .wrapping_add(stride.wrapping_mul(i as u16));
            let vf = pf.with_routing_id(rid);
            let spec = DeviceAttrs {
                vendor: vendor.clone(),
                device: format!("0x{vf_device}"),
                class: self.read(pf, "class")?,
                subsystem_vendor: self.read(pf, "subsystem_vendor")?,
                subsystem_device: self.read(pf, "subsystem_device")?,
                numa_node: self.read(pf, "numa_node").unwrap_or_else(|_| "-1".into()),
            };
            let dir = parent.join(vf.to_string());
            self.add_device(vf, &dir, &spec)?;
            symlink(format!("../{pf}"), dir.join("physfn"))?;
            symlink(format!("../{vf}"), pf_dir.join(format!("virtfn{i}")))?;
            let group = self.next_iommu_group()?;
            self.join_iommu_group(vf, group)?;
            if autoprobe {
                self.probe(vf)?;
            }
        }
        write(pf_dir.join("sriov_numvfs"), format!("{n}\n"))
    }

    fn disable_vfs(&self, pf: PciAddress) -> io::Result<()> {
        let pf_dir = self.dev_dir(pf)?;
        for entry in std::fs::read_dir(&pf_dir)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if !name.starts_with("virtfn") {
                continue;
            }
            let target = std::fs::read_link(entry.path())?;
            let vf = parse_addr(
                &target
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
            )?;
            if self.driver_of(vf)?.is_some() {
                self.unbind(vf)?;
            }
            let dir = self.dev_dir(vf)?;
            if let Ok(group) = std::fs::read_link(dir.join("iommu_group")) {
                let gdir = crate::layout::normalize(&dir.join(group));
                remove_if_exists(&gdir.join("devices").join(vf.to_string()))?;
                if std::fs::read_dir(gdir.join("devices"))?.next().is_none() {
                    remove_if_exists(&gdir)?;
                }
            }
            remove_if_exists(&self.layout.bus_link(vf))?;
            remove_if_exists(&dir)?;
            remove_if_exists(&entry.path())?;
        }
        write(pf_dir.join("sriov_numvfs"), "0\n")
    }

    fn write_override(&self, dev: PciAddress, value: &str) -> io::Result<()> {
        if value.len() >= 4096 {
            return Err(errno(Errno::Einval));
        }
        let v = value.strip_suffix('\n').unwrap_or(value);
        let stored = if v.is_empty() { "(null)" } else { v };
        write(
            self.dev_dir(dev)?.join("driver_override"),
            format!("{stored}\n"),
        )
    }

    fn override_of(&self, dev: PciAddress) -> io::Result<Option<String>> {
        let v = self.read(dev, "driver_override")?;
        Ok((v != "(null)" && !v.is_empty()).then_some(v))
    }

    /// `pci_bus_match`: an override names the only driver that may bind;
    /// otherwise the driver's ID table decides.
    fn matches(&self, driver: &str, dev: PciAddress) -> io::Result<bool> {
        if let Some(o) = self.override_of(dev)? {
            return Ok(o == driver);
        }
        let vendor = self.read_num(dev, "vendor")? as u16;
        let device = self.read_num(dev, "device")? as u16;
        Ok(self.meta.matching_driver(vendor, device) == Some(driver))
    }

    /// `drivers_probe`: binds an unbound device to the first matching driver.
    fn probe(&self, dev: PciAddress) -> io::Result<()> {
        if self.driver_of(dev)?.is_some() {
            return Ok(());
        }
        let candidate = match self.override_of(dev)? {
            Some(o) => Some(o),
            None => {
                let vendor = self.read_num(dev, "vendor")? as u16;
                let device = self.read_num(dev, "device")? as u16;
                self.meta
                    .matching_driver(vendor, device)
                    .map(str::to_string)
            }
        };
        match candidate {
            Some(d) if self.layout.drivers().join(&d).is_dir() => self.attach_driver(dev, &d),
            _ => Ok(()), // nothing matched: the kernel leaves it unbound, and succeeds
        }
    }

    fn bind_store(&self, driver: &str, dev: PciAddress) -> io::Result<()> {
        if !self.matches(driver, dev)? {
            return Err(errno(Errno::Enodev));
        }
        if self.driver_of(dev)?.is_some() {
            return Err(errno(Errno::Ebusy));
        }
        self.attach_driver(dev, driver)
    }

    /// Creates the `driver` link, the driver's back link and, for network
    /// drivers, `net/<ifname>`.
    pub(crate) fn attach_driver(&self, dev: PciAddress, driver: &str) -> io::Result<()> {
        let dir = self.dev_dir(dev)?;
        let ddir = self.layout.drivers().join(driver);
        symlink(self.layout.relative(&dir, &ddir), dir.join("driver"))?;
        symlink(
            self.layout.relative(&ddir, &dir),
            ddir.join(dev.to_string()),
        )?;
        if self.meta.drivers.get(driver).is_some_and(|d| d.netdev) {
            let ifname = self.ifname(dev);
            let net = dir.join("net").join(&ifname);
            write(net.join("type"), "1\n")?;
            write(net.join("operstate"), "down\n")?;
            write(net.join("carrier"), "0\n")?;
            write(net.join("address"), format!("{}\n", mac_for(dev)))?;
        }
        Ok(())
    }

    fn unbind(&self, dev: PciAddress) -> io::Result<()> {
        let dir = self.dev_dir(dev)?;
        if let Some(d) = self.driver_of(dev)? {
            remove_if_exists(&self.layout.drivers().join(d).join(dev.to_string()))?;
        }
        remove_if_exists(&dir.join("driver"))?;
        remove_if_exists(&dir.join("net"))
    }

    /// The interface name a network driver gives a function: the name
    /// recorded in the tree's metadata, or systemd's predictable path name.
    fn ifname(&self, dev: PciAddress) -> String {
        if let Some(name) = self.meta.ifnames.get(&dev.to_string()) {
            return name.clone();
        }
        let mut name = format!("enp{}s{}", dev.bus(), dev.device());
        if dev.function() != 0 {
            name.push_str(&format!("f{}", dev.function()));
        }
        name
    }

    pub(crate) fn add_device(
        &self,
        dev: PciAddress,
        dir: &Path,
        attrs: &DeviceAttrs,
    ) -> io::Result<()> {
        std::fs::create_dir_all(dir)?;
        write(dir.join("vendor"), format!("{}\n", attrs.vendor))?;
        write(dir.join("device"), format!("{}\n", attrs.device))?;
        write(dir.join("class"), format!("{}\n", attrs.class))?;
        write(
            dir.join("subsystem_vendor"),
            format!("{}\n", attrs.subsystem_vendor),
        )?;
        write(
            dir.join("subsystem_device"),
            format!("{}\n", attrs.subsystem_device),
        )?;
        write(dir.join("numa_node"), format!("{}\n", attrs.numa_node))?;
        write(dir.join("driver_override"), "(null)\n")?;
        let bus = self.layout.bus_devices();
        std::fs::create_dir_all(&bus)?;
        symlink(self.layout.relative(&bus, dir), self.layout.bus_link(dev))
    }

    fn next_iommu_group(&self) -> io::Result<u32> {
        let dir = self.layout.iommu_groups();
        let mut max = None;
        if let Ok(rd) = std::fs::read_dir(&dir) {
            for e in rd {
                if let Ok(n) = e?.file_name().to_string_lossy().parse::<u32>() {
                    max = Some(max.map_or(n, |m: u32| m.max(n)));
                }
            }
        }
        Ok(max.map_or(0, |m| m + 1))
    }

    pub(crate) fn join_iommu_group(&self, dev: PciAddress, group: u32) -> io::Result<()> {
        let dir = self.dev_dir(dev)?;
        let gdir = self.layout.iommu_groups().join(group.to_string());
        let devices = gdir.join("devices");
        std::fs::create_dir_all(&devices)?;
        write(gdir.join("type"), "DMA\n")?;
        symlink(
            self.layout.relative(&devices, &dir),
            devices.join(dev.to_string()),
        )?;
        symlink(self.layout.relative(&dir, &gdir), dir.join("iommu_group"))
    }
}

/// A locally administered MAC derived from the address, stable across rebinds.
pub(crate) fn mac_for(dev: PciAddress) -> String {
    format!(
        "02:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        (dev.domain() & 0xff) as u8,
        dev.bus(),
        dev.device(),
        dev.function(),
        0x5a
    )
}

/// The identification attributes of a new device, as sysfs prints them.
#[derive(Debug, Clone)]
pub(crate) struct DeviceAttrs {
    pub(crate) vendor: String,
    pub(crate) device: String,
    pub(crate) class: String,
    pub(crate) subsystem_vendor: String,
    pub(crate) subsystem_device: String,
    pub(crate) numa_node: String,
}

fn parse_addr(s: &str) -> io::Result<PciAddress> {
    s.parse().map_err(|_| errno(Errno::Einval))
}

impl AttrWriter for FakeKernel {
    fn write(&self, path: &Path, value: &str) -> io::Result<()> {
        // One write at a time, like the device lock the kernel takes.
        let mut log = self
            .lock
            .lock()
            .map_err(|_| io::Error::other("fake kernel lock poisoned"))?;
        let result = self.apply(path, value);
        log.push(RecordedWrite {
            path: path.to_path_buf(),
            value: value.to_string(),
            accepted: result.is_ok(),
        });
        result
    }
}
