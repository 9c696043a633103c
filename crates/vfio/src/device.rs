use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use crate::error::{Error, Result};

/// A character device's major:minor number, as `devices.allow` and a container's device spec want it.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct DeviceNumber {
    /// Major number (the driver).
    pub major: u32,
    /// Minor number (the instance).
    pub minor: u32,
}

impl DeviceNumber {
    /// A device number from its parts.
    pub const fn new(major: u32, minor: u32) -> Self {
        Self { major, minor }
    }

    /// Splits a raw `st_rdev` with the kernel's encoding (12+20 bit major, 20+12 bit minor).
    pub fn from_rdev(rdev: u64) -> Self {
        // Both halves fit in 32 bits by construction of the encoding.
        let major = u32::try_from(nix::sys::stat::major(rdev)).unwrap_or(u32::MAX);
        let minor = u32::try_from(nix::sys::stat::minor(rdev)).unwrap_or(u32::MAX);
        Self { major, minor }
    }

    /// The cgroup v1 rule giving read and write (never mknod: the node exists) on this character
    /// device: `c MAJ:MIN rw`.
    ///
    /// ```
    /// let container = sriov_vfio::DeviceNumber::new(10, 196);
    /// assert_eq!(container.cgroup_rule(), "c 10:196 rw");
    /// assert_eq!(container.to_string(), "10:196");
    /// ```
    pub fn cgroup_rule(&self) -> String {
        format!("c {}:{} rw", self.major, self.minor)
    }
}

impl std::fmt::Display for DeviceNumber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.major, self.minor)
    }
}

/// Reads the device number of a device node.
///
/// A seam so tests that cannot `mknod` (not root) can stand regular files in for device nodes.
pub trait DeviceNodes: Send + Sync + std::fmt::Debug {
    /// The major:minor of the character device at `path`.
    fn device_number(&self, path: &Path) -> Result<DeviceNumber>;
}

/// The real [`DeviceNodes`]: `stat(2)` and `st_rdev`.
#[derive(Debug, Default, Clone, Copy)]
pub struct StatDeviceNodes;

impl DeviceNodes for StatDeviceNodes {
    fn device_number(&self, path: &Path) -> Result<DeviceNumber> {
        let meta = std::fs::metadata(path).map_err(|source| Error::DeviceNode {
            path: path.to_path_buf(),
            cause: source,
        })?;
        if !meta.file_type().is_char_device() {
            return Err(Error::NotCharDevice {
                path: path.to_path_buf(),
            });
        }
        Ok(DeviceNumber::from_rdev(meta.rdev()))
    }
}
