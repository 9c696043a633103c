use std::collections::HashMap;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::device::DeviceNumber;
use crate::error::{CgroupDirProblem, Error, Result, shown};

/// Default root of the v1 devices hierarchy as seen from the forwarder's container (`NSM_CGROUP_PATH`).
pub const DEFAULT_CGROUP_ROOT: &str = "/host/sys/fs/cgroup/devices";

/// Longest client-supplied cgroup directory accepted, in bytes. Real ones (kubepods slices with a pod
/// UID and a 64-hex container ID) stay under 300; the bound keeps hostile input cheap to refuse.
pub const MAX_CGROUP_DIR_LEN: usize = 1024;

/// Longest component of a cgroup directory, in bytes: the kernel's `NAME_MAX`.
pub const MAX_CGROUP_COMPONENT_LEN: usize = 255;

/// Which cgroup hierarchy the configured root is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupVersion {
    /// The v1 `devices` controller: access is granted by writing `devices.allow`.
    V1,
    /// The unified hierarchy: device access is a BPF program owned by the container runtime.
    V2,
}

/// Writes one rule to a `devices.allow` or `devices.deny` file.
///
/// A seam so tests can observe the rules, or simulate the kernel's allow list.
pub trait RuleWriter: Send + Sync + std::fmt::Debug {
    /// Writes `rule` (like `c 10:196 rwm`) to `file`.
    fn write_rule(&self, file: &Path, rule: &str) -> std::io::Result<()>;
}

/// The real [`RuleWriter`]: one `write(2)` per rule, as the kernel parses one rule per write.
#[derive(Debug, Default, Clone, Copy)]
pub struct FileRuleWriter;

impl RuleWriter for FileRuleWriter {
    fn write_rule(&self, file: &Path, rule: &str) -> std::io::Result<()> {
        // No create: the kernel makes these files, so a missing one means "not a devices cgroup",
        // never "make one". No follow: the last component must not be swapped for a symlink.
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits())
            .open(file)?;
        f.write_all(rule.as_bytes())
    }
}

/// What [`CgroupDevices::revoke`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Revoked {
    /// The last holder let go: the rule was written to `devices.deny`.
    Denied,
    /// Other grants of the same device to the same cgroup remain; nothing was written.
    StillHeld {
        /// Grants still outstanding.
        holders: usize,
    },
    /// The device was not granted to that cgroup through us; nothing was written.
    NotHeld,
    /// The cgroup directory no longer exists (its container is gone); the grant was forgotten.
    CgroupGone,
}

/// Checks the shape of a client-supplied cgroup directory without touching the filesystem, and
/// returns it normalised (no empty or `.` components).
pub fn validate_cgroup_dir(requested: &str) -> Result<PathBuf> {
    let reject = |problem| Error::CgroupDirRejected {
        requested: shown(requested),
        problem,
    };
    if requested.contains('\0') {
        return Err(reject(CgroupDirProblem::Nul));
    }
    if requested.len() > MAX_CGROUP_DIR_LEN {
        return Err(reject(CgroupDirProblem::TooLong {
            len: requested.len(),
        }));
    }
    if requested.starts_with('/') {
        return Err(reject(CgroupDirProblem::Absolute));
    }
    let mut normal = PathBuf::new();
    for component in requested.split('/') {
        match component {
            "" | "." => {}
            ".." => return Err(reject(CgroupDirProblem::ParentComponent)),
            c if c.len() > MAX_CGROUP_COMPONENT_LEN => {
                return Err(reject(CgroupDirProblem::ComponentTooLong { len: c.len() }));
            }
            c => normal.push(c),
        }
    }
    if normal.as_os_str().is_empty() {
        return Err(reject(CgroupDirProblem::Empty));
    }
    Ok(normal)
}

/// Finds which cgroup version `root` is on.
///
/// v2 shows as a `cgroup.controllers` file or the cgroup2 filesystem magic at the root. On a pure v2
/// host the v1 default root (`.../cgroup/devices`) does not exist at all, so a missing root whose
/// parent is v2 counts as v2 too.
pub fn detect_version(root: &Path) -> Result<CgroupVersion> {
    if is_v2_dir(root) {
        return Ok(CgroupVersion::V2);
    }
    match std::fs::metadata(root) {
        Ok(m) if m.is_dir() => Ok(CgroupVersion::V1),
        Ok(_) => Err(Error::CgroupRoot {
            root: root.to_path_buf(),
            source: std::io::Error::from(std::io::ErrorKind::NotADirectory),
        }),
        Err(source) => {
            if root.parent().is_some_and(is_v2_dir) {
                Ok(CgroupVersion::V2)
            } else {
                Err(Error::CgroupRoot {
                    root: root.to_path_buf(),
                    source,
                })
            }
        }
    }
}

fn is_v2_dir(dir: &Path) -> bool {
    if dir.join("cgroup.controllers").is_file() {
        return true;
    }
    nix::sys::statfs::statfs(dir)
        .map(|s| s.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC)
        .unwrap_or(false)
}

/// Grants and revokes character-device access for containers' v1 devices cgroups, counting grants
/// per (cgroup, device) so a device shared by two connections stays allowed until both close.
#[derive(Debug)]
pub struct CgroupDevices {
    /// The configured root, for messages.
    root: PathBuf,
    /// The root with symlinks resolved: resolved cgroup dirs must stay under it.
    canonical_root: PathBuf,
    version: CgroupVersion,
    writer: Arc<dyn RuleWriter>,
    holders: Mutex<HashMap<(PathBuf, DeviceNumber), usize>>,
}

impl CgroupDevices {
    /// Opens the devices hierarchy at `root` with the real [`FileRuleWriter`].
    ///
    /// A v2 root opens fine (so callers can log the mode and carry on without VFIO); every grant on
    /// it then fails with [`Error::CgroupV2`].
    pub fn open(root: impl Into<PathBuf>) -> Result<Self> {
        Self::with_writer(root, Arc::new(FileRuleWriter))
    }

    /// Like [`CgroupDevices::open`] with a chosen [`RuleWriter`].
    pub fn with_writer(root: impl Into<PathBuf>, writer: Arc<dyn RuleWriter>) -> Result<Self> {
        let root = root.into();
        let version = detect_version(&root)?;
        let canonical_root = match version {
            CgroupVersion::V1 => {
                std::fs::canonicalize(&root).map_err(|source| Error::CgroupRoot {
                    root: root.clone(),
                    source,
                })?
            }
            CgroupVersion::V2 => root.clone(),
        };
        Ok(Self {
            root,
            canonical_root,
            version,
            writer,
            holders: Mutex::new(HashMap::new()),
        })
    }

    /// The configured root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The cgroup version found at the root.
    pub fn version(&self) -> CgroupVersion {
        self.version
    }

    /// Resolves a client-supplied cgroup directory to an existing v1 devices cgroup under the root.
    ///
    /// Refuses bad shapes ([`validate_cgroup_dir`]), directories that do not exist, symlinks that
    /// lead outside the root, the root itself, and directories without `devices.allow`.
    pub fn resolve(&self, requested: &str) -> Result<PathBuf> {
        if self.version == CgroupVersion::V2 {
            return Err(Error::CgroupV2 {
                root: self.root.clone(),
            });
        }
        let relative = validate_cgroup_dir(requested)?;
        let joined = self.canonical_root.join(&relative);
        let resolved =
            std::fs::canonicalize(&joined).map_err(|source| Error::CgroupDirUnresolvable {
                requested: shown(requested),
                path: joined.clone(),
                source,
            })?;
        if !resolved.starts_with(&self.canonical_root) || resolved == self.canonical_root {
            return Err(Error::CgroupDirEscapes {
                requested: shown(requested),
                resolved,
                root: self.root.clone(),
            });
        }
        if !resolved.is_dir() {
            return Err(Error::CgroupDirUnresolvable {
                requested: shown(requested),
                path: resolved,
                source: std::io::Error::from(std::io::ErrorKind::NotADirectory),
            });
        }
        let allow = resolved.join("devices.allow");
        match std::fs::symlink_metadata(&allow) {
            Ok(m) if m.is_file() => Ok(resolved),
            _ => Err(Error::NotDevicesCgroup { path: resolved }),
        }
    }

    /// Allows `device` (read, write, mknod) to the cgroup; writes `devices.allow` only for the first
    /// holder. Returns the number of holders after this grant.
    pub fn grant(&self, requested: &str, device: DeviceNumber) -> Result<usize> {
        let dir = self.resolve(requested)?;
        let mut holders = self.lock();
        let count = holders.entry((dir.clone(), device)).or_insert(0);
        if *count == 0 {
            let file = dir.join("devices.allow");
            let rule = device.cgroup_rule();
            if let Err(source) = self.writer.write_rule(&file, &rule) {
                holders.remove(&(dir, device));
                return Err(Error::WriteRule {
                    path: file,
                    rule,
                    source,
                });
            }
            tracing::debug!(cgroup = %dir.display(), %device, "device allowed");
        }
        *count += 1;
        Ok(*count)
    }

    /// Grants every device or none: when one grant fails, the ones before it are revoked again.
    pub fn grant_all(&self, requested: &str, devices: &[DeviceNumber]) -> Result<()> {
        for (i, device) in devices.iter().enumerate() {
            if let Err(e) = self.grant(requested, *device) {
                for done in devices[..i].iter().rev() {
                    if let Err(undo) = self.revoke(requested, *done) {
                        tracing::warn!(error = %undo, "undoing a partial device grant failed");
                    }
                }
                return Err(e);
            }
        }
        Ok(())
    }

    /// Drops one grant of `device` to the cgroup; writes `devices.deny` when the last one goes.
    pub fn revoke(&self, requested: &str, device: DeviceNumber) -> Result<Revoked> {
        let dir = match self.resolve(requested) {
            Ok(dir) => dir,
            Err(Error::CgroupDirUnresolvable { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                // The pod is gone and its cgroup with it: the kernel has dropped the rules already.
                let relative = validate_cgroup_dir(requested)?;
                let key = (self.canonical_root.join(relative), device);
                return Ok(match self.lock().remove(&key) {
                    Some(_) => Revoked::CgroupGone,
                    None => Revoked::NotHeld,
                });
            }
            Err(e) => return Err(e),
        };
        let mut holders = self.lock();
        let key = (dir.clone(), device);
        let Some(count) = holders.get_mut(&key) else {
            return Ok(Revoked::NotHeld);
        };
        if *count > 1 {
            *count -= 1;
            return Ok(Revoked::StillHeld { holders: *count });
        }
        let file = dir.join("devices.deny");
        let rule = device.cgroup_rule();
        match self.writer.write_rule(&file, &rule) {
            Ok(()) => {
                holders.remove(&key);
                tracing::debug!(cgroup = %dir.display(), %device, "device denied");
                Ok(Revoked::Denied)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                holders.remove(&key);
                Ok(Revoked::CgroupGone)
            }
            // The count stays so a retry writes the deny again.
            Err(source) => Err(Error::WriteRule {
                path: file,
                rule,
                source,
            }),
        }
    }

    /// How many grants of `device` to the cgroup are outstanding (0 for an unknown or bad name).
    pub fn holders(&self, requested: &str, device: DeviceNumber) -> usize {
        let Ok(dir) = self.resolve(requested) else {
            return 0;
        };
        self.lock().get(&(dir, device)).copied().unwrap_or(0)
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<(PathBuf, DeviceNumber), usize>> {
        // A panic while holding the lock leaves the map consistent (every update is one step).
        self.holders.lock().unwrap_or_else(|p| p.into_inner())
    }
}
