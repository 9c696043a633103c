//! The record of prepared claims: what Prepare changed on the host, so that
//! Unprepare, or a Prepare retried after a crash, can undo exactly that.
//!
//! Every host change is recorded before it is made (the driver a VF had and
//! the one about to be bound, the files about to be written), and the record
//! is updated after. Undoing is idempotent (re-binding the original driver
//! is a no-op when it is already bound, a missing file is already removed),
//! so after a kill at any point the record says enough to finish.
//!
//! The file is JSON, replaced whole ([`sriov_files::write_atomic`]: temp
//! file, fsync, rename, directory fsync). A file that cannot be read, or of
//! another version, is an error naming it: forgetting it would leave VFs on
//! the wrong driver with nothing to put them back.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sriov_pci::PciAddress;

/// The version this code writes and reads.
pub const CHECKPOINT_VERSION: u32 = 1;
/// The file name in the plugin's directory.
pub const CHECKPOINT_FILE: &str = "checkpoint.json";
/// Largest checkpoint read; far above any node's claims, small enough that
/// a garbage file cannot exhaust memory.
pub const MAX_CHECKPOINT_BYTES: u64 = 16 << 20;

/// Every claim this node has prepared, or is preparing or unpreparing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Checkpoint {
    /// [`CHECKPOINT_VERSION`].
    pub version: u32,
    /// By claim UID.
    pub claims: BTreeMap<String, ClaimRecord>,
}

impl Default for Checkpoint {
    fn default() -> Self {
        Self {
            version: CHECKPOINT_VERSION,
            claims: BTreeMap::new(),
        }
    }
}

/// Where a claim stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ClaimState {
    /// Prepare is (or was, when it crashed) under way: the host may hold any
    /// part of the recorded changes.
    Preparing,
    /// Every change is made; the answer is in the devices' records.
    Prepared,
    /// Undo is (or was) under way.
    Unpreparing,
}

/// Where one device stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum DeviceState {
    /// Recorded; its driver not touched yet.
    Planned,
    /// Its driver is being changed to `boundDriver`: it may have the
    /// original driver, none, or the new one.
    Binding,
    /// It has the driver it needs (changed by us when `boundDriver` is set).
    Bound,
    /// Its original driver is back.
    Restored,
}

/// One prepared claim.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClaimRecord {
    /// Its UID (also the key).
    pub uid: String,
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// Where it stands.
    pub state: ClaimState,
    /// Its CDI spec file (one per claim), recorded before it is written.
    pub cdi_spec: Option<PathBuf>,
    /// Its devices, in allocation order.
    pub devices: Vec<DeviceRecord>,
}

impl ClaimRecord {
    /// `namespace/name (uid)`, for messages.
    pub fn describe(&self) -> String {
        format!("{}/{} ({})", self.namespace, self.name, self.uid)
    }
}

/// One device of a prepared claim.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeviceRecord {
    /// Its DRA device name.
    pub device: String,
    /// Its PCI address.
    pub address: PciAddress,
    /// The pool it was allocated from.
    pub pool: String,
    /// Its resource name (`intel.com/sriov`).
    pub resource: String,
    /// The requests it was allocated for.
    pub requests: Vec<String>,
    /// Its driver before we touched it.
    pub original_driver: Option<String>,
    /// The driver we bind it to; `None` when we leave its driver alone.
    pub bound_driver: Option<String>,
    /// Its device-info files, recorded before they are written.
    pub device_info: Vec<PathBuf>,
    /// Its fully qualified CDI device IDs.
    pub cdi_device_ids: Vec<String>,
    /// The configuration it was prepared with.
    pub config: crate::vfconfig::VfConfig,
    /// Where it stands.
    pub state: DeviceState,
}

/// Why the checkpoint cannot be read or written.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// Reading it failed (other than its absence).
    #[error("cannot read the DRA checkpoint {path}: {cause}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        cause: std::io::Error,
    },
    /// It is larger than [`MAX_CHECKPOINT_BYTES`].
    #[error("the DRA checkpoint {path} is {size} bytes, over the {max}-byte limit")]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its size.
        size: u64,
        /// The limit.
        max: u64,
    },
    /// It is not a checkpoint this code wrote.
    #[error(
        "the DRA checkpoint {path} is corrupt ({cause}); it records host changes to undo, so it is not discarded: inspect it, undo its devices' drivers by hand, then remove it"
    )]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        cause: serde_json::Error,
    },
    /// It is of another version.
    #[error(
        "the DRA checkpoint {path} has version {found}; this plugin reads version {CHECKPOINT_VERSION} only"
    )]
    Version {
        /// The file.
        path: PathBuf,
        /// The version found.
        found: u64,
    },
    /// It parses, but contradicts itself.
    #[error("the DRA checkpoint {path} is inconsistent: {reason}")]
    Inconsistent {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Writing it failed.
    #[error("cannot write the DRA checkpoint {path}: {cause}")]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        cause: std::io::Error,
    },
}

/// The checkpoint's file.
#[derive(Debug, Clone)]
pub struct CheckpointFile {
    path: PathBuf,
}

impl CheckpointFile {
    /// The checkpoint at `path` (normally `<plugin dir>/`[`CHECKPOINT_FILE`]).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads it; an absent file is an empty checkpoint (first start).
    pub fn load(&self) -> Result<Checkpoint, CheckpointError> {
        let bytes = match read_bounded(&self.path) {
            Ok(b) => b,
            Err(ReadError::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Checkpoint::default());
            }
            Err(ReadError::Io(cause)) => {
                return Err(CheckpointError::Read {
                    path: self.path.clone(),
                    cause,
                });
            }
            Err(ReadError::TooLarge(size)) => {
                return Err(CheckpointError::TooLarge {
                    path: self.path.clone(),
                    size,
                    max: MAX_CHECKPOINT_BYTES,
                });
            }
        };
        // The version is read first, so a newer plugin's file is reported
        // as such rather than as a field this version does not know.
        #[derive(Deserialize)]
        struct Versioned {
            version: u64,
        }
        let versioned: Versioned =
            serde_json::from_slice(&bytes).map_err(|cause| CheckpointError::Corrupt {
                path: self.path.clone(),
                cause,
            })?;
        if versioned.version != u64::from(CHECKPOINT_VERSION) {
            return Err(CheckpointError::Version {
                path: self.path.clone(),
                found: versioned.version,
            });
        }
        let checkpoint: Checkpoint =
            serde_json::from_slice(&bytes).map_err(|cause| CheckpointError::Corrupt {
                path: self.path.clone(),
                cause,
            })?;
        self.check(&checkpoint)?;
        Ok(checkpoint)
    }

    /// Replaces it with `checkpoint`, durably, mode 0600.
    pub fn save(&self, checkpoint: &Checkpoint) -> Result<(), CheckpointError> {
        let bytes = serde_json::to_vec_pretty(checkpoint).map_err(|e| CheckpointError::Write {
            path: self.path.clone(),
            cause: e.into(),
        })?;
        sriov_files::write_atomic(&self.path, &bytes, 0o600, || {}).map_err(|cause| {
            CheckpointError::Write {
                path: self.path.clone(),
                cause,
            }
        })
    }

    /// A record's key is its UID, and no device belongs to two claims: what
    /// Unprepare relies on to undo one claim without touching another's.
    fn check(&self, checkpoint: &Checkpoint) -> Result<(), CheckpointError> {
        let inconsistent = |reason: String| CheckpointError::Inconsistent {
            path: self.path.clone(),
            reason,
        };
        let mut owners: BTreeMap<PciAddress, &str> = BTreeMap::new();
        for (uid, claim) in &checkpoint.claims {
            if *uid != claim.uid {
                return Err(inconsistent(format!(
                    "claim {} is recorded under UID {uid:?}",
                    claim.describe()
                )));
            }
            for device in &claim.devices {
                if let Some(other) = owners.insert(device.address, uid) {
                    return Err(inconsistent(format!(
                        "device {} is recorded for claims {other} and {uid}",
                        device.address
                    )));
                }
            }
        }
        Ok(())
    }
}

enum ReadError {
    Io(std::io::Error),
    TooLarge(u64),
}

fn read_bounded(path: &Path) -> Result<Vec<u8>, ReadError> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(ReadError::Io)?;
    let mut bytes = Vec::new();
    // One byte over the limit tells a file at the limit from a larger one
    // without trusting the size metadata reports.
    file.take(MAX_CHECKPOINT_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(ReadError::Io)?;
    let size = bytes.len() as u64;
    if size > MAX_CHECKPOINT_BYTES {
        return Err(ReadError::TooLarge(size));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(uid: &str, address: &str) -> ClaimRecord {
        ClaimRecord {
            uid: uid.into(),
            namespace: "ns".into(),
            name: format!("claim-{uid}"),
            state: ClaimState::Prepared,
            cdi_spec: Some(PathBuf::from("/var/run/cdi/x.json")),
            devices: vec![DeviceRecord {
                device: address.replace([':', '.'], "-"),
                address: address.parse().unwrap(),
                pool: "node-a".into(),
                resource: "intel.com/sriov".into(),
                requests: vec!["vf".into()],
                original_driver: Some("iavf".into()),
                bound_driver: Some("vfio-pci".into()),
                device_info: vec![PathBuf::from("/devinfo/a.json")],
                cdi_device_ids: vec!["d/vf=x".into()],
                config: Default::default(),
                state: DeviceState::Bound,
            }],
        }
    }

    #[test]
    fn a_saved_checkpoint_loads_back_equal_and_private() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let file = CheckpointFile::new(dir.path().join("sub").join(CHECKPOINT_FILE));
        assert_eq!(file.load().unwrap(), Checkpoint::default());
        let mut cp = Checkpoint::default();
        cp.claims.insert("u1".into(), record("u1", "0000:3b:02.0"));
        cp.claims.insert("u2".into(), record("u2", "0000:3b:02.1"));
        file.save(&cp).unwrap();
        assert_eq!(file.load().unwrap(), cp);
        assert_eq!(
            std::fs::metadata(file.path()).unwrap().mode() & 0o777,
            0o600
        );
    }

    #[test]
    fn a_corrupt_or_foreign_checkpoint_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(CHECKPOINT_FILE);
        let file = CheckpointFile::new(&path);
        let shown = path.display().to_string();

        std::fs::write(&path, b"{\"version\": 1, \"claims\": {").unwrap();
        let err = file.load().unwrap_err();
        assert!(matches!(err, CheckpointError::Corrupt { .. }), "{err:?}");
        assert!(err.to_string().contains(&shown), "{err}");

        std::fs::write(&path, b"{\"version\": 7, \"claims\": {}, \"more\": 1}").unwrap();
        let err = file.load().unwrap_err();
        assert!(
            matches!(err, CheckpointError::Version { found: 7, .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains(&shown));

        std::fs::write(&path, b"{\"version\": 1, \"claims\": {}, \"more\": 1}").unwrap();
        assert!(matches!(file.load(), Err(CheckpointError::Corrupt { .. })));
    }

    #[test]
    fn a_device_recorded_for_two_claims_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = CheckpointFile::new(dir.path().join(CHECKPOINT_FILE));
        let mut cp = Checkpoint::default();
        cp.claims.insert("u1".into(), record("u1", "0000:3b:02.0"));
        cp.claims.insert("u2".into(), record("u2", "0000:3b:02.0"));
        file.save(&cp).unwrap();
        let err = file.load().unwrap_err();
        assert!(
            matches!(err, CheckpointError::Inconsistent { .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains("u1") && err.to_string().contains("u2"));
    }
}
