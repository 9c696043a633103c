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
    /// Writes `rule` (like `c 10:196 rw`) to `file`.
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

/// Most cgroups a trailing `*` may expand to (a pod's containers).
pub const MAX_GLOB_MATCHES: usize = 16;

/// What [`CgroupDevices::grant_all`] wrote: each container cgroup and device it allowed.
/// Serializable, so a forwarder can persist it and revoke it after a restart
/// ([`CgroupDevices::revoke_recorded`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Grant {
    rules: Vec<(PathBuf, DeviceNumber)>,
}

impl Grant {
    /// The (cgroup directory, device) pairs allowed.
    pub fn rules(&self) -> &[(PathBuf, DeviceNumber)] {
        &self.rules
    }
}

/// A pod's cgroup: `pod<uid>` (cgroupfs driver) or `kubepods[-<qos>]-pod<uid>.slice` (systemd).
fn is_pod_cgroup(name: &str) -> bool {
    (name.starts_with("pod") && name.len() > 3)
        || (name.starts_with("kubepods") && name.contains("-pod") && name.ends_with(".slice"))
}

/// `kubepods` itself or a QoS level of it, in either driver's spelling.
fn is_kubepods_level(name: &str) -> bool {
    matches!(
        name,
        "kubepods" | "burstable" | "besteffort" | "guaranteed" | "kubepods.slice"
    ) || (name.starts_with("kubepods-") && name.ends_with(".slice") && !name.contains("-pod"))
}

/// The names of the child cgroups (directories, symlinks excluded) of `dir`.
fn child_cgroups(dir: &Path) -> std::io::Result<Vec<String>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        if e.file_type()?.is_dir() {
            out.push(e.file_name().to_string_lossy().into_owned());
        }
    }
    Ok(out)
}

/// Whether `devices.list` already allows `device` read and write (`a *:* rwm`, `c MAJ:* rw`, …).
fn already_allowed(dir: &Path, device: DeviceNumber) -> bool {
    let Ok(list) = std::fs::read_to_string(dir.join("devices.list")) else {
        return false;
    };
    list.lines().any(|line| {
        let mut f = line.split_whitespace();
        let (Some(kind), Some(numbers), Some(access)) = (f.next(), f.next(), f.next()) else {
            return false;
        };
        let rw = access.contains('r') && access.contains('w');
        if kind == "a" {
            return rw;
        }
        let Some((major, minor)) = numbers.split_once(':') else {
            return false;
        };
        let matches = |want: u32, got: &str| got == "*" || got.parse::<u32>().ok() == Some(want);
        kind == "c" && rw && matches(device.major, major) && matches(device.minor, minor)
    })
}

/// Checks the shape of a client-supplied cgroup directory without touching the filesystem, and
/// returns it normalised (no empty or `.` components).
///
/// ```
/// use std::path::Path;
/// use sriov_vfio::validate_cgroup_dir;
///
/// let dir = validate_cgroup_dir("kubepods//pod1/./ctr")?;
/// assert_eq!(dir, Path::new("kubepods/pod1/ctr"));
/// assert!(validate_cgroup_dir("/kubepods/pod1/ctr").is_err()); // absolute
/// assert!(validate_cgroup_dir("kubepods/../../etc").is_err()); // leaves the root
/// # Ok::<(), sriov_vfio::Error>(())
/// ```
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
            cause: std::io::Error::from(std::io::ErrorKind::NotADirectory),
        }),
        Err(source) => {
            if root.parent().is_some_and(is_v2_dir) {
                Ok(CgroupVersion::V2)
            } else {
                Err(Error::CgroupRoot {
                    root: root.to_path_buf(),
                    cause: source,
                })
            }
        }
    }
}

/// How the node mounts its cgroups, which decides when a container can be given a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CgroupMode {
    /// Every controller on v1, `devices` among them.
    V1,
    /// systemd's hybrid layout: controllers (`devices` among them) on v1, plus the unified
    /// hierarchy at `unified/` for process tracking only. Devices behave as on v1.
    Hybrid,
    /// The unified hierarchy alone: a container's device access is a BPF program its runtime
    /// attaches when it creates the container, and nothing written later changes it.
    V2,
}

impl CgroupMode {
    /// The mode of the node whose v1 devices hierarchy would be at `devices_root`
    /// (`NSM_CGROUP_PATH`, normally `<cgroup mount>/devices`): v2 when the root or its parent is
    /// the unified hierarchy (on a pure v2 node the devices directory does not exist), hybrid
    /// when it is a v1 hierarchy beside `unified/` on v2, v1 otherwise.
    ///
    /// ```
    /// use sriov_vfio::CgroupMode;
    /// # let tmp = tempfile::tempdir()?;
    /// // A fake v2 mount: the unified hierarchy has `cgroup.controllers` at its root.
    /// std::fs::write(tmp.path().join("cgroup.controllers"), "cpu io memory pids\n")?;
    /// let mode = CgroupMode::detect(&tmp.path().join("devices"))?;
    /// assert_eq!(mode, CgroupMode::V2);
    /// assert!(!mode.grants_at_request());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn detect(devices_root: &Path) -> Result<Self> {
        match detect_version(devices_root)? {
            CgroupVersion::V2 => Ok(Self::V2),
            CgroupVersion::V1 => {
                let unified = devices_root.parent().map(|p| p.join("unified"));
                if unified.as_deref().is_some_and(is_v2_dir) {
                    Ok(Self::Hybrid)
                } else {
                    Ok(Self::V1)
                }
            }
        }
    }

    /// Whether access can be granted to a running container by writing `devices.allow` (v1 and
    /// hybrid), rather than only when the runtime creates it (v2).
    pub fn grants_at_request(self) -> bool {
        !matches!(self, Self::V2)
    }
}

impl std::fmt::Display for CgroupMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::V1 => "cgroup v1",
            Self::Hybrid => "cgroup hybrid (devices on v1)",
            Self::V2 => "cgroup v2",
        })
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
///
/// The count covers every live grant: those this process made ([`CgroupDevices::grant_all`])
/// and those an earlier process made and this one took over ([`CgroupDevices::adopt`]). Two
/// VFIO connections of one container share `/dev/vfio/vfio`, so after a restart the rule stays
/// until the last of them, made before or after the restart, is closed.
#[derive(Debug)]
pub struct CgroupDevices {
    /// The configured root, for messages.
    root: PathBuf,
    /// The root with symlinks resolved: resolved cgroup dirs must stay under it.
    canonical_root: PathBuf,
    version: CgroupVersion,
    writer: Arc<dyn RuleWriter>,
    holders: Mutex<HashMap<(PathBuf, DeviceNumber), usize>>,
    /// The live grants counted in `holders`, so a recorded grant can be told apart from one
    /// whose holder died with an earlier process. Locked before `holders`, never after.
    live: Mutex<Vec<LiveGrant>>,
}

/// A grant counted in [`CgroupDevices`]'s holders, and which of its rules still are (all of
/// them, until a revoke's deny fails for some).
#[derive(Debug)]
struct LiveGrant {
    grant: Grant,
    counted: Vec<(PathBuf, DeviceNumber)>,
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
                    cause: source,
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
            live: Mutex::new(Vec::new()),
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

    /// Resolves a client-supplied cgroup directory to the existing v1 devices cgroups it names under
    /// the root (one, or every match of a trailing `*` component).
    ///
    /// The path is walked component by component without following any symlink. Each result must
    /// be a container's cgroup: a leaf (no child cgroups) whose parent is a pod cgroup (`pod<uid>`
    /// with the cgroupfs driver, `kubepods-…pod<uid>.slice` with the systemd driver), so the root,
    /// `kubepods`, a QoS level or a pod are never granted to, nor revoked from, for every pod below.
    pub fn resolve_all(&self, requested: &str) -> Result<Vec<PathBuf>> {
        if self.version == CgroupVersion::V2 {
            return Err(Error::CgroupV2 {
                root: self.root.clone(),
            });
        }
        let relative = validate_cgroup_dir(requested)?;
        let parts: Vec<&str> = relative
            .iter()
            .map(|c| c.to_str().unwrap_or_default())
            .collect();
        let refuse = |rule: &'static str| Error::CgroupDirRefused {
            requested: shown(requested),
            rule,
        };
        let (glob, fixed) = match parts.split_last() {
            Some((&"*", rest)) => (true, rest),
            _ => (false, parts.as_slice()),
        };
        if fixed.iter().any(|c| c.contains('*')) {
            return Err(refuse("only one trailing `*` component is expanded"));
        }
        let mut dir = self.canonical_root.clone();
        for c in fixed {
            dir.push(c);
            let meta =
                std::fs::symlink_metadata(&dir).map_err(|source| Error::CgroupDirUnresolvable {
                    requested: shown(requested),
                    path: dir.clone(),
                    cause: source,
                })?;
            if meta.file_type().is_symlink() {
                return Err(refuse("a component is a symlink, which is not followed"));
            }
            if !meta.is_dir() {
                return Err(Error::CgroupDirUnresolvable {
                    requested: shown(requested),
                    path: dir.clone(),
                    cause: std::io::Error::from(std::io::ErrorKind::NotADirectory),
                });
            }
        }
        let dirs = if glob {
            let mut found: Vec<PathBuf> = child_cgroups(&dir)
                .map_err(|source| Error::CgroupDirUnresolvable {
                    requested: shown(requested),
                    path: dir.clone(),
                    cause: source,
                })?
                .into_iter()
                .map(|name| dir.join(name))
                .collect();
            found.sort();
            if found.is_empty() {
                return Err(refuse("its trailing `*` matches no cgroup"));
            }
            if found.len() > MAX_GLOB_MATCHES {
                return Err(refuse(
                    "its trailing `*` matches more cgroups than a pod has containers",
                ));
            }
            found
        } else {
            vec![dir]
        };
        for d in &dirs {
            self.check_container(requested, d)?;
        }
        Ok(dirs)
    }

    /// The container-leaf rule of [`CgroupDevices::resolve_all`] for one directory.
    fn check_container(&self, requested: &str, dir: &Path) -> Result<()> {
        let refuse = |rule: &'static str| Error::CgroupDirRefused {
            requested: shown(requested),
            rule,
        };
        let relative = dir.strip_prefix(&self.canonical_root).unwrap_or(dir);
        let parts: Vec<&str> = relative
            .iter()
            .map(|c| c.to_str().unwrap_or_default())
            .collect();
        let Some((leaf, above)) = parts.split_last() else {
            return Err(refuse("it names the cgroup root"));
        };
        if is_pod_cgroup(leaf) || is_kubepods_level(leaf) {
            return Err(refuse(
                "it names a pod, QoS or kubepods cgroup: access goes to one container's cgroup, \
                 below its pod",
            ));
        }
        if !above.last().is_some_and(|p| is_pod_cgroup(p)) {
            return Err(refuse(
                "it must be a container cgroup directly below a pod cgroup",
            ));
        }
        let meta =
            std::fs::symlink_metadata(dir).map_err(|source| Error::CgroupDirUnresolvable {
                requested: shown(requested),
                path: dir.to_path_buf(),
                cause: source,
            })?;
        if meta.file_type().is_symlink() || !meta.is_dir() {
            return Err(refuse("a component is a symlink, which is not followed"));
        }
        let children = child_cgroups(dir).map_err(|source| Error::CgroupDirUnresolvable {
            requested: shown(requested),
            path: dir.to_path_buf(),
            cause: source,
        })?;
        if !children.is_empty() {
            return Err(refuse(
                "it has child cgroups: a container's cgroup is a leaf",
            ));
        }
        // cgroupfs shows regular files; a FIFO is how the end-to-end chaos
        // campaign stands in for one (it keeps every rule written, as the
        // kernel does, where a plain file keeps only the last).
        match std::fs::symlink_metadata(dir.join("devices.allow")) {
            Ok(m) if m.is_file() || std::os::unix::fs::FileTypeExt::is_fifo(&m.file_type()) => {
                Ok(())
            }
            _ => Err(Error::NotDevicesCgroup {
                path: dir.to_path_buf(),
            }),
        }
    }

    /// Resolves a client-supplied cgroup directory naming exactly one container cgroup.
    pub fn resolve(&self, requested: &str) -> Result<PathBuf> {
        let mut dirs = self.resolve_all(requested)?;
        match (dirs.pop(), dirs.is_empty()) {
            (Some(d), true) => Ok(d),
            _ => Err(Error::CgroupDirRefused {
                requested: shown(requested),
                rule: "it matches more than one cgroup",
            }),
        }
    }

    /// The rules [`CgroupDevices::grant_all`] would write for `requested` and `devices`, worked
    /// out without writing anything: the same checks on `requested`, minus cgroups whose
    /// `devices.list` already allows a device. Callers persist it before granting, so a process
    /// killed mid-grant leaves a record that [`CgroupDevices::revoke_recorded`] can act on
    /// (denying a rule that was never allowed takes nothing away).
    pub fn plan_all(&self, requested: &str, devices: &[DeviceNumber]) -> Result<Grant> {
        let dirs = self.resolve_all(requested)?;
        let mut grant = Grant::default();
        for dir in &dirs {
            for device in devices {
                let held = self.lock().contains_key(&(dir.clone(), *device));
                if held || !already_allowed(dir, *device) {
                    grant.rules.push((dir.clone(), *device));
                }
            }
        }
        Ok(grant)
    }

    /// Allows `device` (read and write: never mknod, the node exists) to every cgroup `requested`
    /// names, or to none: a failure revokes what this call granted. A cgroup whose
    /// `devices.list` already allows the device (a privileged pod's `a *:* rwm`) is left alone and
    /// not recorded, so the revoke never takes away access we did not give. The returned
    /// [`Grant`] says exactly what was written where, for [`CgroupDevices::revoke_grant`].
    pub fn grant_all(&self, requested: &str, devices: &[DeviceNumber]) -> Result<Grant> {
        let dirs = self.resolve_all(requested)?;
        let mut grant = Grant::default();
        for dir in &dirs {
            for device in devices {
                match self.grant_in(dir, *device) {
                    Ok(true) => grant.rules.push((dir.clone(), *device)),
                    Ok(false) => {}
                    Err(e) => {
                        if let (_, Err(undo)) = self.release(&grant.rules) {
                            tracing::warn!(error = %undo, "undoing a partial device grant failed");
                        }
                        return Err(e);
                    }
                }
            }
        }
        if !grant.rules.is_empty() {
            self.live().push(LiveGrant {
                grant: grant.clone(),
                counted: grant.rules.clone(),
            });
        }
        Ok(grant)
    }

    /// Takes over a grant an earlier process made (read back from its state) for a connection
    /// that is still live: its rules count as held, as if this process had granted them, so
    /// that undoing another connection of the same container leaves them alone. Nothing is
    /// written. Adopting the same grant twice counts it once; returns whether it was new.
    pub fn adopt(&self, grant: &Grant) -> bool {
        let mut live = self.live();
        if grant.rules.is_empty() || live.iter().any(|l| l.grant == *grant) {
            return false;
        }
        let mut holders = self.lock();
        for (dir, device) in &grant.rules {
            *holders.entry((dir.clone(), *device)).or_insert(0) += 1;
        }
        live.push(LiveGrant {
            grant: grant.clone(),
            counted: grant.rules.clone(),
        });
        true
    }

    /// Revokes exactly what `grant` recorded, where it was granted, in reverse order: each rule
    /// is denied once no other live grant holds it. Every rule is attempted; the first failure
    /// is returned, and a retry attempts the rules that failed. A grant already revoked is not
    /// revoked twice.
    pub fn revoke_grant(&self, grant: &Grant) -> Result<()> {
        self.revoke_live(grant).unwrap_or(Ok(()))
    }

    /// Revokes a grant read back from the state, made by this process or an earlier one.
    ///
    /// A live grant (granted here, or [adopted](CgroupDevices::adopt)) is revoked like
    /// [`CgroupDevices::revoke_grant`]. Otherwise its holder died with the process that made
    /// it: each rule no live grant holds is denied outright (denying a rule never allowed takes
    /// nothing away), and a rule another live grant holds (the `/dev/vfio/vfio` another
    /// connection of the same container uses) is left alone. Cgroups gone with their pod are
    /// skipped. Every rule is attempted; the first failure is returned.
    pub fn revoke_recorded(&self, grant: &Grant) -> Result<()> {
        if let Some(result) = self.revoke_live(grant) {
            return result;
        }
        let mut first = None;
        for (dir, device) in grant.rules.iter().rev() {
            let held = self.lock().contains_key(&(dir.clone(), *device));
            let result = if held {
                tracing::debug!(cgroup = %dir.display(), %device, "held by a live grant; left alone");
                Ok(())
            } else if !dir.is_dir() {
                Ok(())
            } else {
                let file = dir.join("devices.deny");
                let rule = device.cgroup_rule();
                match self.writer.write_rule(&file, &rule) {
                    Ok(()) => Ok(()),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                    Err(source) => Err(Error::WriteRule {
                        path: file,
                        rule,
                        cause: source,
                    }),
                }
            };
            if let Err(e) = result {
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }

    /// Releases the rules `grant` still holds, if it is live; `None` when it is not. Rules
    /// whose deny failed stay counted and the grant live with them, for a retry.
    fn revoke_live(&self, grant: &Grant) -> Option<Result<()>> {
        let counted = {
            let mut live = self.live();
            let at = live.iter().position(|l| l.grant == *grant)?;
            live.swap_remove(at).counted
        };
        let (failed, result) = self.release(&counted);
        if !failed.is_empty() {
            self.live().push(LiveGrant {
                grant: grant.clone(),
                counted: failed,
            });
        }
        Some(result)
    }

    /// Drops one count of each rule, in reverse order, denying those no grant holds any more.
    /// Returns the rules whose deny failed (still counted) and the first failure.
    fn release(
        &self,
        rules: &[(PathBuf, DeviceNumber)],
    ) -> (Vec<(PathBuf, DeviceNumber)>, Result<()>) {
        let mut first = None;
        let mut failed = Vec::new();
        for (dir, device) in rules.iter().rev() {
            if let Err(e) = self.revoke_in(dir, *device) {
                failed.push((dir.clone(), *device));
                first.get_or_insert(e);
            }
        }
        (failed, first.map_or(Ok(()), Err))
    }

    /// Allows one device to one container cgroup: `Ok(false)` when nothing was needed.
    pub fn grant(&self, requested: &str, device: DeviceNumber) -> Result<usize> {
        let dir = self.resolve(requested)?;
        self.grant_in(&dir, device)?;
        Ok(self.lock().get(&(dir, device)).copied().unwrap_or(0))
    }

    fn grant_in(&self, dir: &Path, device: DeviceNumber) -> Result<bool> {
        let mut holders = self.lock();
        let key = (dir.to_path_buf(), device);
        if let Some(count) = holders.get_mut(&key) {
            *count += 1;
            return Ok(true);
        }
        if already_allowed(dir, device) {
            tracing::debug!(cgroup = %dir.display(), %device, "already allowed by a wider rule; left alone");
            return Ok(false);
        }
        let file = dir.join("devices.allow");
        let rule = device.cgroup_rule();
        self.writer
            .write_rule(&file, &rule)
            .map_err(|source| Error::WriteRule {
                path: file,
                rule,
                cause: source,
            })?;
        tracing::debug!(cgroup = %dir.display(), %device, "device allowed");
        holders.insert(key, 1);
        Ok(true)
    }

    /// Drops one grant of `device` to the single cgroup `requested` names; writes `devices.deny`
    /// when the last one goes.
    pub fn revoke(&self, requested: &str, device: DeviceNumber) -> Result<Revoked> {
        let dir = match self.resolve(requested) {
            Ok(dir) => dir,
            Err(Error::CgroupDirUnresolvable { cause: source, .. })
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                // The pod is gone and its cgroup with it: the kernel has dropped the rules already.
                self.canonical_root.join(validate_cgroup_dir(requested)?)
            }
            Err(e) => return Err(e),
        };
        self.revoke_in(&dir, device)
    }

    fn revoke_in(&self, dir: &Path, device: DeviceNumber) -> Result<Revoked> {
        let mut holders = self.lock();
        let key = (dir.to_path_buf(), device);
        let Some(count) = holders.get_mut(&key) else {
            return Ok(Revoked::NotHeld);
        };
        if *count > 1 {
            *count -= 1;
            return Ok(Revoked::StillHeld { holders: *count });
        }
        if !dir.is_dir() {
            holders.remove(&key);
            return Ok(Revoked::CgroupGone);
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
                cause: source,
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

    fn live(&self) -> MutexGuard<'_, Vec<LiveGrant>> {
        // As for `holders`: every update is one step.
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<(PathBuf, DeviceNumber), usize>> {
        // A panic while holding the lock leaves the map consistent (every update is one step).
        self.holders.lock().unwrap_or_else(|p| p.into_inner())
    }
}
