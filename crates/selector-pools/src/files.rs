//! Files other components read: device-info files for Multus and SR-IOV CNI, and CDI specs
//! for the container runtime. Both are written atomically (a temp file renamed into place),
//! so a reader never sees half a file.

use std::path::{Path, PathBuf};

use serde::Serialize;
use sriov_pci::PciAddress;

use crate::error::PoolError;
use crate::info::DeviceInfoFile;

/// Where device plugins put device-info files (network-attachment-definition-client's path).
pub const DEFAULT_DEVINFO_DIR: &str = "/var/run/k8s.cni.cncf.io/devinfo/dp";
/// Where SRDP writes its CDI specs.
pub const DEFAULT_CDI_DIR: &str = "/var/run/cdi";
/// File-name prefix of SRDP's CDI specs (SRDP removes every file with it at start and stop).
pub const CDI_SPEC_PREFIX: &str = "sriov-dp-";
/// The newest CDI spec version we may write; each spec says the lowest it needs.
pub const CDI_VERSION: &str = "0.6.0";

/// `<resource with '/' as '->-<device ID>-device.json`, the name CNIs look up.
pub fn device_info_file_name(resource: &str, device: PciAddress) -> String {
    format!("{}-{}-device.json", resource.replace('/', "-"), device)
}

/// Device-info files of the resources this plugin serves.
#[derive(Debug, Clone)]
pub struct DeviceInfoDir {
    dir: PathBuf,
}

impl DeviceInfoDir {
    /// Files under `dir` (normally [`DEFAULT_DEVINFO_DIR`]).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file for one device of `resource`.
    pub fn path(&self, resource: &str, device: PciAddress) -> PathBuf {
        self.dir.join(device_info_file_name(resource, device))
    }

    /// Writes (or replaces) one device's file, mode 0444.
    pub fn write(
        &self,
        resource: &str,
        device: PciAddress,
        info: &DeviceInfoFile,
    ) -> Result<PathBuf, PoolError> {
        let path = self.path(resource, device);
        let bytes = serde_json::to_vec(info).map_err(|e| PoolError::DeviceInfo {
            path: path.clone(),
            device,
            cause: e.into(),
        })?;
        sriov_files::write_atomic(&path, &bytes, 0o444, || {}).map_err(|source| {
            PoolError::DeviceInfo {
                path: path.clone(),
                device,
                cause: source,
            }
        })?;
        Ok(path)
    }

    /// Removes every file of `resource` (any device), returning how many. Other resources'
    /// files (`intel.com-sriov_b-...` when cleaning `intel.com/sriov`) are left alone: the part
    /// between the resource and `-device.json` must be a PCI address.
    pub fn clean(&self, resource: &str) -> Result<usize, PoolError> {
        let head = format!("{}-", resource.replace('/', "-"));
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(source) => {
                return Err(PoolError::Read {
                    path: self.dir.clone(),
                    cause: source,
                });
            }
        };
        let mut removed = 0;
        for entry in entries.filter_map(|e| e.ok()) {
            let name = entry.file_name().to_string_lossy().into_owned();
            let ours = name
                .strip_prefix(&head)
                .and_then(|rest| rest.strip_suffix("-device.json"))
                .is_some_and(|id| id.parse::<PciAddress>().is_ok());
            if ours {
                let path = entry.path();
                std::fs::remove_file(&path).map_err(|source| PoolError::Write {
                    path,
                    cause: source,
                })?;
                removed += 1;
            }
        }
        Ok(removed)
    }
}

/// A CDI spec (the subset SRDP writes: device nodes per device).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct CdiSpec {
    /// The lowest version its fields need ([`CdiSpec::minimum_version`]), at most
    /// [`CDI_VERSION`].
    #[serde(rename = "cdiVersion")]
    pub cdi_version: String,
    /// `<prefix>/<class>`, e.g. `intel.com/net-pci`.
    pub kind: String,
    /// One entry per device.
    pub devices: Vec<CdiDeviceEntry>,
}

impl CdiSpec {
    /// A spec of `kind` with `devices`, stamped with the lowest version that can express it.
    pub fn new(kind: String, devices: Vec<CdiDeviceEntry>) -> Self {
        let mut spec = Self {
            cdi_version: String::new(),
            kind,
            devices,
        };
        spec.cdi_version = spec.minimum_version().into();
        spec
    }

    /// The lowest CDI version whose schema holds this spec, by the CDI library's own rule
    /// (`specs-go` `MinimumRequiredVersion`), so runtimes with older CDI libraries accept it:
    /// 0.6.0 for a `.` in the kind's class, 0.5.0 for a device name starting with a digit (a PCI
    /// address) or a device node with `hostPath`, else 0.3.0. (Mount types, annotations, Intel
    /// RDT and extra GIDs, which raise it further, are fields we never write.)
    pub fn minimum_version(&self) -> &'static str {
        let class_has_dot = self
            .kind
            .split_once('/')
            .is_some_and(|(_, class)| class.contains('.'));
        if class_has_dot {
            return "0.6.0";
        }
        let digit_name = self
            .devices
            .iter()
            .any(|d| d.name.starts_with(|c: char| c.is_ascii_digit()));
        let host_path = self.devices.iter().any(|d| {
            d.container_edits
                .device_nodes
                .iter()
                .any(|n| !n.host_path.is_empty())
        });
        if digit_name || host_path {
            return "0.5.0";
        }
        "0.3.0"
    }
}

/// One device of a CDI spec.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct CdiDeviceEntry {
    /// The device ID (PCI address).
    pub name: String,
    /// What the runtime adds to the container.
    #[serde(rename = "containerEdits")]
    pub container_edits: CdiEdits,
}

/// A CDI device's container edits.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct CdiEdits {
    /// Device nodes.
    #[serde(rename = "deviceNodes")]
    pub device_nodes: Vec<CdiDeviceNode>,
    /// `NAME=value` entries (DRA mode's `PCIDEVICE_*`); left out when empty, so SRDP-mode
    /// specs stay as SRDP writes them.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<String>,
}

/// One device node.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct CdiDeviceNode {
    /// Path in the container.
    pub path: String,
    /// Path on the host.
    #[serde(rename = "hostPath")]
    pub host_path: String,
    /// `rw`.
    pub permissions: String,
}

/// CDI spec files of this plugin.
#[derive(Debug, Clone)]
pub struct CdiDir {
    dir: PathBuf,
}

impl CdiDir {
    /// Specs under `dir` (normally [`DEFAULT_CDI_DIR`]).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// The spec file of one resource: `sriov-dp-<prefix>-<class>-<name>.json`.
    pub fn path(&self, kind: &str, resource_name: &str) -> PathBuf {
        self.dir.join(format!(
            "{CDI_SPEC_PREFIX}{}-{resource_name}.json",
            kind.replace('/', "-")
        ))
    }

    /// Writes (or replaces) one resource's spec.
    pub fn write(&self, spec: &CdiSpec, resource_name: &str) -> Result<PathBuf, PoolError> {
        self.write_file(spec, self.path(&spec.kind, resource_name))
    }

    /// Writes (or replaces) a spec under the file name `file_name` (DRA mode's one spec per
    /// claim, which must not carry [`CDI_SPEC_PREFIX`] lest [`CdiDir::clean`] remove it). The
    /// caller vouches that `file_name` is one plain component.
    pub fn write_named(&self, spec: &CdiSpec, file_name: &str) -> Result<PathBuf, PoolError> {
        self.write_file(spec, self.dir.join(file_name))
    }

    fn write_file(&self, spec: &CdiSpec, path: PathBuf) -> Result<PathBuf, PoolError> {
        let bytes = serde_json::to_vec_pretty(spec).map_err(|e| PoolError::Write {
            path: path.clone(),
            cause: e.into(),
        })?;
        sriov_files::write_atomic(&path, &bytes, 0o644, || {}).map_err(|source| {
            PoolError::Write {
                path: path.clone(),
                cause: source,
            }
        })?;
        Ok(path)
    }

    /// Removes every `sriov-dp-*` spec, as SRDP does at start and stop.
    pub fn clean(&self) -> Result<usize, PoolError> {
        self.remove_except(&[])
    }

    /// Removes every `sriov-dp-*` spec but the files in `keep` (the current resources' specs),
    /// so a resource a reload removed, or whose device type changed its spec's name, leaves
    /// no spec behind.
    pub fn remove_except(&self, keep: &[PathBuf]) -> Result<usize, PoolError> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(source) => {
                return Err(PoolError::Read {
                    path: self.dir.clone(),
                    cause: source,
                });
            }
        };
        let mut removed = 0;
        for entry in entries.filter_map(|e| e.ok()) {
            let path = entry.path();
            if entry
                .file_name()
                .to_string_lossy()
                .starts_with(CDI_SPEC_PREFIX)
                && !keep.contains(&path)
            {
                std::fs::remove_file(&path).map_err(|source| PoolError::Write {
                    path,
                    cause: source,
                })?;
                removed += 1;
            }
        }
        Ok(removed)
    }
}
