//! Errors of the PCI crate. Every variant names the path or device it is about.

use std::io;
use std::path::PathBuf;

use crate::PciAddress;

/// A string that is not a PCI address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid PCI address {input:?}: {reason}")]
pub struct AddressError {
    /// The rejected input, as given.
    pub input: String,
    /// What is wrong with it.
    pub reason: String,
}

impl AddressError {
    pub(crate) fn new(input: &str, reason: impl Into<String>) -> Self {
        Self {
            input: input.to_string(),
            reason: reason.into(),
        }
    }
}

/// Failures reading or changing PCI functions through sysfs.
#[derive(Debug, thiserror::Error)]
pub enum PciError {
    /// No directory for this device under the devices dir.
    #[error("PCI device {address} not found at {path}")]
    NoDevice {
        /// The device looked for.
        address: PciAddress,
        /// Where it was looked for.
        path: PathBuf,
    },
    /// A sysfs file or link could not be read.
    #[error("reading {path}: {cause}")]
    Read {
        /// The file or link.
        path: PathBuf,
        /// The OS error.
        cause: io::Error,
    },
    /// A sysfs attribute held something we cannot interpret.
    #[error("{path}: expected {expected}, found {found:?}")]
    Parse {
        /// The attribute file.
        path: PathBuf,
        /// What the attribute should hold.
        expected: &'static str,
        /// What it held.
        found: String,
    },
    /// The kernel refused a write.
    #[error("writing {value:?} to {path}: {cause}")]
    Write {
        /// The attribute file.
        path: PathBuf,
        /// What was written.
        value: String,
        /// The OS error the kernel returned.
        cause: io::Error,
    },
    /// The device has no SR-IOV capability (no `sriov_totalvfs`).
    #[error("PCI device {address} is not an SR-IOV physical function ({path} missing)")]
    NotSriov {
        /// The device.
        address: PciAddress,
        /// The attribute that is missing.
        path: PathBuf,
    },
    /// More VFs were asked for than the PF supports.
    #[error("PCI device {address}: {requested} VFs requested but sriov_totalvfs is {total}")]
    TooManyVfs {
        /// The PF.
        address: PciAddress,
        /// The requested count.
        requested: u32,
        /// The PF's maximum.
        total: u32,
    },
    /// A driver directory does not exist, so nothing can bind to it.
    #[error("PCI driver {driver:?} not found at {path} (module not loaded?)")]
    NoDriver {
        /// The driver name.
        driver: String,
        /// Where it was looked for.
        path: PathBuf,
    },
    /// A driver name that cannot be a directory name under the drivers dir.
    #[error("invalid PCI driver name {0:?}")]
    InvalidDriverName(String),
    /// The kernel did not reach the expected state in time.
    #[error(
        "PCI device {address}: timed out after {waited_ms} ms waiting for {expected} at {path}; last saw {saw}"
    )]
    Timeout {
        /// The device.
        address: PciAddress,
        /// The file or link that was polled.
        path: PathBuf,
        /// The state waited for.
        expected: String,
        /// The last state seen.
        saw: String,
        /// How long we waited.
        waited_ms: u64,
    },
}

impl PciError {
    pub(crate) fn read(path: impl Into<PathBuf>, source: io::Error) -> Self {
        Self::Read {
            path: path.into(),
            cause: source,
        }
    }
}
