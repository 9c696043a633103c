//! Capturing the part of a real sysfs that the PCI crate reads, as a fixture.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};

use sriov_pci::PciAddress;

use crate::layout::{Layout, write};
use crate::meta::{DriverSpec, Meta};

/// Device attributes worth copying (everything else sysfs has is ignored).
const ATTRS: &[&str] = &[
    "vendor",
    "device",
    "class",
    "subsystem_vendor",
    "subsystem_device",
    "numa_node",
    "driver_override",
    "sriov_totalvfs",
    "sriov_numvfs",
    "sriov_offset",
    "sriov_stride",
    "sriov_vf_device",
    "sriov_drivers_autoprobe",
];

const NET_ATTRS: &[&str] = &["type", "operstate", "address", "carrier"];

/// Copies the given PFs, their VFs and the drivers and IOMMU groups they
/// use from the sysfs mounted at `sys` (normally `/sys`) into `dest`,
/// keeping the kernel's directory shape and relative links, and writes a
/// `fake-kernel.json` whose ID tables come from the bindings seen. Drivers
/// named in `extra_drivers` (such as `vfio-pci`) are included too.
pub fn capture(
    sys: &Path,
    pfs: &[PciAddress],
    extra_drivers: &[&str],
    dest: &Path,
) -> io::Result<()> {
    let src = Layout::new(sys);
    let out = Layout::new(dest);
    let mut devices = BTreeSet::new();
    for pf in pfs {
        devices.insert(*pf);
        let dir = src.real_dir(*pf)?;
        for e in std::fs::read_dir(&dir)? {
            let e = e?;
            if e.file_name().to_string_lossy().starts_with("virtfn") {
                let t = std::fs::read_link(e.path())?;
                if let Some(vf) = t
                    .file_name()
                    .and_then(|n| n.to_str())
                    .and_then(|n| n.parse().ok())
                {
                    devices.insert(vf);
                }
            }
        }
    }
    let mut meta = Meta::default();
    let mut drivers: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for d in extra_drivers {
        drivers.entry((*d).to_string()).or_default();
    }
    let mut netdev_drivers = BTreeSet::new();
    for dev in &devices {
        let real = src.real_dir(*dev)?;
        let rel = real
            .strip_prefix(sys)
            .map_err(io::Error::other)?
            .to_path_buf();
        let to = dest.join(&rel);
        std::fs::create_dir_all(&to)?;
        for a in ATTRS {
            if let Ok(v) = std::fs::read_to_string(real.join(a)) {
                write(to.join(a), v)?;
            }
        }
        for e in std::fs::read_dir(&real)? {
            let e = e?;
            let name = e.file_name().to_string_lossy().into_owned();
            if name == "driver"
                || name == "iommu_group"
                || name == "physfn"
                || name.starts_with("virtfn")
            {
                std::os::unix::fs::symlink(std::fs::read_link(e.path())?, to.join(&name))?;
            }
        }
        let ids = format!(
            "{}:{}",
            hex4(&std::fs::read_to_string(real.join("vendor"))?),
            hex4(&std::fs::read_to_string(real.join("device"))?)
        );
        let driver = std::fs::read_link(real.join("driver"))
            .ok()
            .and_then(|t| t.file_name().map(|n| n.to_string_lossy().into_owned()));
        if let Ok(rd) = std::fs::read_dir(real.join("net")) {
            for e in rd {
                let e = e?;
                let ifname = e.file_name().to_string_lossy().into_owned();
                for a in NET_ATTRS {
                    if let Ok(v) = std::fs::read_to_string(e.path().join(a)) {
                        write(to.join("net").join(&ifname).join(a), v)?;
                    }
                }
                meta.ifnames.insert(dev.to_string(), ifname);
                if let Some(d) = &driver {
                    netdev_drivers.insert(d.clone());
                }
            }
        }
        if let Some(d) = &driver {
            if d != "vfio-pci" {
                drivers.entry(d.clone()).or_default().insert(ids);
            } else {
                drivers.entry(d.clone()).or_default();
            }
        }
        copy_link(&src.bus_link(*dev), &out.bus_link(*dev))?;
        if let Ok(group) = std::fs::read_link(real.join("iommu_group")) {
            let g = group.file_name().map(PathBuf::from).unwrap_or_default();
            let gdir = out.iommu_groups().join(&g);
            write(
                gdir.join("type"),
                std::fs::read_to_string(src.iommu_groups().join(&g).join("type"))
                    .unwrap_or_else(|_| "DMA\n".into()),
            )?;
            copy_link(
                &src.iommu_groups()
                    .join(&g)
                    .join("devices")
                    .join(dev.to_string()),
                &gdir.join("devices").join(dev.to_string()),
            )?;
        }
    }
    for (d, ids) in &drivers {
        let ddir = out.drivers().join(d);
        for f in ["bind", "unbind", "new_id", "remove_id"] {
            write(ddir.join(f), "")?;
        }
        for dev in &devices {
            let l = src.drivers().join(d).join(dev.to_string());
            if std::fs::symlink_metadata(&l).is_ok() {
                copy_link(&l, &ddir.join(dev.to_string()))?;
            }
        }
        meta.drivers.insert(
            d.clone(),
            DriverSpec {
                ids: ids.iter().cloned().collect(),
                netdev: netdev_drivers.contains(d),
            },
        );
    }
    write(dest.join("bus/pci/drivers_probe"), "")?;
    write(dest.join("bus/pci/drivers_autoprobe"), "1\n")?;
    meta.store(dest)
}

fn hex4(raw: &str) -> String {
    raw.trim().trim_start_matches("0x").to_lowercase()
}

fn copy_link(from: &Path, to: &Path) -> io::Result<()> {
    if let Some(p) = to.parent() {
        std::fs::create_dir_all(p)?;
    }
    crate::layout::symlink(std::fs::read_link(from)?, to)
}
