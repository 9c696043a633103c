//! Errors of config loading and of pool operations, each naming the field, path or device.

use std::path::PathBuf;

use sriov_pci::{PciAddress, PciError};

/// A config that cannot be used. Every variant names the JSON field it is about
/// (`resourceList[1].selectors[0].pfNames[2]`) or the file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("reading config file {path}: {cause}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        cause: std::io::Error,
    },
    /// The text is not JSON.
    #[error("config is not valid JSON: {0}")]
    Json(serde_json::Error),
    /// A field has the wrong JSON type.
    #[error("{field}: expected {expected}, found {found}")]
    Type {
        /// Where.
        field: String,
        /// The JSON type wanted.
        expected: &'static str,
        /// What was there.
        found: String,
    },
    /// A required field is absent (or null).
    #[error("{field}: required")]
    Missing {
        /// Where.
        field: String,
    },
    /// A field's value is malformed.
    #[error("{field}: {message}")]
    Invalid {
        /// Where.
        field: String,
        /// What is wrong with it.
        message: String,
    },
    /// Two resources share `<prefix>/<name>`.
    #[error("{field}: resource name {resource} is already used by resourceList[{first}]")]
    Duplicate {
        /// Where the second one is.
        field: String,
        /// The full resource name.
        resource: String,
        /// Index of the first one.
        first: usize,
    },
    /// No resource is configured (SRDP exits in this case too).
    #[error("{field}: no resources configured")]
    Empty {
        /// The `resourceList` field.
        field: String,
    },
}

impl ConfigError {
    /// The field the error is about, when it is about one.
    pub fn field(&self) -> Option<&str> {
        match self {
            ConfigError::Read { .. } | ConfigError::Json(_) => None,
            ConfigError::Type { field, .. }
            | ConfigError::Missing { field }
            | ConfigError::Invalid { field, .. }
            | ConfigError::Duplicate { field, .. }
            | ConfigError::Empty { field } => Some(field),
        }
    }
}

/// A failure while discovering devices, writing device-info or CDI files.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    /// Reading sysfs failed.
    #[error(transparent)]
    Pci(#[from] PciError),
    /// Reading a sysfs or proc file outside `sriov-pci`'s reach failed.
    #[error("reading {path}: {cause}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        cause: std::io::Error,
    },
    /// Writing a device-info file failed.
    #[error("writing device-info file {path} for {device}: {cause}")]
    DeviceInfo {
        /// The file.
        path: PathBuf,
        /// The device it describes.
        device: PciAddress,
        /// Why.
        cause: std::io::Error,
    },
    /// Writing or removing a file (CDI spec, cleanup) failed.
    #[error("writing {path}: {cause}")]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        cause: std::io::Error,
    },
}
