//! One fixture builder for the VFIO tests: fake sysfs devices, fake /dev/vfio, fake cgroup trees.
#![allow(dead_code, unreachable_pub)]

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use sriov_vfio::{DeviceNodes, DeviceNumber, Error, RuleWriter};

/// A temp dir holding `sys/bus/pci/devices`, `sys/kernel/iommu_groups`, `dev/vfio` and `cgroup`.
pub struct Tree {
    pub tmp: tempfile::TempDir,
}

impl Tree {
    pub fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        for d in [
            "sys/bus/pci/devices",
            "sys/kernel/iommu_groups",
            "dev/vfio",
            "cgroup",
        ] {
            std::fs::create_dir_all(tmp.path().join(d)).unwrap();
        }
        Self { tmp }
    }

    pub fn path(&self) -> &Path {
        self.tmp.path()
    }

    pub fn devices_dir(&self) -> PathBuf {
        self.path().join("sys/bus/pci/devices")
    }

    pub fn vfio_dir(&self) -> PathBuf {
        self.path().join("dev/vfio")
    }

    pub fn cgroup_root(&self) -> PathBuf {
        self.path().join("cgroup")
    }

    /// A PCI device in `group`, linked the way the kernel does (relative link into iommu_groups).
    pub fn device(&self, bdf: &str, group: u32, group_name: Option<&str>) -> PathBuf {
        let dev = self.devices_dir().join(bdf);
        std::fs::create_dir_all(&dev).unwrap();
        let g = self.path().join(format!("sys/kernel/iommu_groups/{group}"));
        std::fs::create_dir_all(&g).unwrap();
        if let Some(name) = group_name {
            std::fs::write(g.join("name"), format!("{name}\n")).unwrap();
        }
        std::os::unix::fs::symlink(
            format!("../../../../kernel/iommu_groups/{group}"),
            dev.join("iommu_group"),
        )
        .unwrap();
        dev
    }

    /// A stand-in device node: a regular file holding `MAJ:MIN`, read by [`FileDeviceNodes`].
    pub fn node(&self, name: &str, dev: DeviceNumber) {
        std::fs::write(self.vfio_dir().join(name), dev.to_string()).unwrap();
    }

    /// A v1 devices cgroup directory (with the two control files the kernel provides).
    pub fn cgroup(&self, rel: &str) -> PathBuf {
        let d = self.cgroup_root().join(rel);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("devices.allow"), "").unwrap();
        std::fs::write(d.join("devices.deny"), "").unwrap();
        d
    }
}

/// [`DeviceNodes`] over regular files whose content is `MAJ:MIN`, so tests run without mknod.
#[derive(Debug)]
pub struct FileDeviceNodes;

impl DeviceNodes for FileDeviceNodes {
    fn device_number(&self, path: &Path) -> sriov_vfio::Result<DeviceNumber> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::DeviceNode {
            path: path.to_path_buf(),
            cause: source,
        })?;
        let (maj, min) = text.trim().split_once(':').unwrap();
        Ok(DeviceNumber::new(
            maj.parse().unwrap(),
            min.parse().unwrap(),
        ))
    }
}

/// A [`RuleWriter`] that behaves like the v1 devices controller: allow adds, deny removes.
/// It records every write and can be told to fail writes to one file name.
#[derive(Debug, Default)]
pub struct KernelLikeWriter {
    pub writes: Mutex<Vec<(PathBuf, String)>>,
    pub allowed: Mutex<HashMap<PathBuf, BTreeSet<String>>>,
    pub fail_rule: Mutex<Option<String>>,
}

impl KernelLikeWriter {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    pub fn is_allowed(&self, cgroup: &Path, dev: DeviceNumber) -> bool {
        let cgroup = cgroup.canonicalize().unwrap_or(cgroup.to_path_buf());
        self.allowed
            .lock()
            .unwrap()
            .get(&cgroup)
            .is_some_and(|s| s.contains(&dev.cgroup_rule()))
    }

    pub fn writes(&self) -> Vec<(String, String)> {
        self.writes
            .lock()
            .unwrap()
            .iter()
            .map(|(p, r)| {
                (
                    p.file_name().unwrap().to_string_lossy().into_owned(),
                    r.clone(),
                )
            })
            .collect()
    }
}

impl RuleWriter for KernelLikeWriter {
    fn write_rule(&self, file: &Path, rule: &str) -> std::io::Result<()> {
        if self.fail_rule.lock().unwrap().as_deref() == Some(rule) {
            return Err(std::io::Error::from(std::io::ErrorKind::PermissionDenied));
        }
        if !file.exists() {
            return Err(std::io::Error::from(std::io::ErrorKind::NotFound));
        }
        self.writes
            .lock()
            .unwrap()
            .push((file.to_path_buf(), rule.to_string()));
        let dir = file.parent().unwrap().to_path_buf();
        let mut allowed = self.allowed.lock().unwrap();
        let set = allowed.entry(dir).or_default();
        match file.file_name().unwrap().to_str().unwrap() {
            "devices.allow" => {
                set.insert(rule.to_string());
            }
            "devices.deny" => {
                set.remove(rule);
            }
            other => panic!("write to unexpected file {other}"),
        }
        Ok(())
    }
}
