//! Crash-safe persistence: the snapshot (`sriov-pool.json`) is written to a
//! temp file, fsynced, renamed over the old one and the directory fsynced,
//! so a `kill -9` at any instant leaves the old or the new snapshot, never a
//! torn one; changes between snapshots go to the journal beside it
//! ([`crate::journal`]), replayed over the snapshot on load.
//!
//! The state decides which VFs pods hold, so it is guarded like a secret:
//! the directory is 0700 and must belong to us and be writable by nobody
//! else (otherwise another user could plant a state naming their own
//! tokens), the file is 0600, the temp file gets a random name made with
//! `O_EXCL` (a symlink planted at a predictable name is never followed),
//! and the state file is read without following a symlink. A state file
//! that cannot be read or parsed stops the start: starting empty would
//! hand out tokens kubelet has already given to pods, twice. The operator
//! can choose to start over ([`FileStore::with_reset`], the daemons'
//! `--reset-state`), which keeps the bad file aside.

use std::fs::{DirBuilder, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::error::PoolError;
use crate::state::{STATE_VERSION, State};

/// File name of the state inside the state directory.
pub const STATE_FILE: &str = "sriov-pool.json";

/// The state file in a state directory.
#[derive(Debug, Clone)]
pub struct FileStore {
    path: PathBuf,
    reset: bool,
    /// The running kernel's boot ID; `None` when it cannot be read (then
    /// every state is taken as this boot's, as before boot IDs were kept).
    boot: Option<String>,
}

/// Where the kernel gives its boot ID (a random UUID made at each boot).
const BOOT_ID: &str = "/proc/sys/kernel/random/boot_id";

fn current_boot() -> Option<String> {
    std::fs::read_to_string(BOOT_ID)
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
}

/// What loading found, for the caller to log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoadNote {
    /// No state file: a first start.
    Fresh,
    /// The file was unreadable or corrupt and the operator asked for a
    /// reset: it was moved aside and the pool starts from nothing.
    Reset {
        /// Where the bad file was moved.
        moved_to: PathBuf,
        /// What was wrong.
        reason: String,
    },
    /// Loaded normally.
    Loaded,
    /// Written before the last reboot: the uses it recorded were dropped
    /// (what they record changing on the host is gone with the boot), and
    /// the journal was read up to its first unreadable line, if it had one.
    AfterReboot {
        /// Connections' uses dropped; their tokens stay allocated.
        uses_dropped: usize,
        /// The journal's first line that did not parse, where it was cut.
        journal_cut_at: Option<usize>,
    },
}

fn unsafe_dir(dir: &Path, rule: &'static str) -> PoolError {
    PoolError::UnsafeStateDir {
        dir: dir.to_path_buf(),
        rule,
    }
}

/// Refuses a state directory others could write to or swap.
fn check_dir(dir: &Path) -> Result<(), PoolError> {
    let meta = std::fs::symlink_metadata(dir).map_err(|source| PoolError::Persist {
        path: dir.to_path_buf(),
        cause: source,
    })?;
    if meta.file_type().is_symlink() {
        return Err(unsafe_dir(dir, "it is a symlink"));
    }
    if !meta.is_dir() {
        return Err(unsafe_dir(dir, "it is not a directory"));
    }
    if meta.uid() != nix::unistd::geteuid().as_raw() {
        return Err(unsafe_dir(dir, "it is owned by another user"));
    }
    let mode = meta.permissions().mode();
    if mode & 0o022 != 0 {
        return Err(unsafe_dir(dir, "it is writable by group or others"));
    }
    if mode & 0o077 != 0 {
        // Ours and safe, but readable by others: the state names every
        // tenant's tokens, so close it.
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(
            |source| PoolError::Persist {
                path: dir.to_path_buf(),
                cause: source,
            },
        )?;
    }
    Ok(())
}

impl FileStore {
    /// A store at `<dir>/sriov-pool.json`. The directory is created 0700 if
    /// missing; an existing one is refused when it is a symlink, not ours,
    /// or writable by group or others.
    pub fn in_dir(dir: impl AsRef<Path>) -> Result<Self, PoolError> {
        let dir = dir.as_ref();
        if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|source| PoolError::Persist {
                path: parent.to_path_buf(),
                cause: source,
            })?;
        }
        match DirBuilder::new().mode(0o700).create(dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(source) => {
                return Err(PoolError::Persist {
                    path: dir.to_path_buf(),
                    cause: source,
                });
            }
        }
        check_dir(dir)?;
        Ok(Self {
            path: dir.join(STATE_FILE),
            reset: false,
            boot: current_boot(),
        })
    }

    /// The tokens recorded in `dir`, read without creating or changing
    /// anything (for operator commands beside a running daemon); an empty
    /// list when there is no state yet.
    pub fn read_tokens(dir: impl AsRef<Path>) -> Result<Vec<crate::Token>, PoolError> {
        let store = Self {
            path: dir.as_ref().join(STATE_FILE),
            reset: false,
            boot: current_boot(),
        };
        let (state, _) = store.load()?;
        Ok(state.tokens.into_values().collect())
    }

    /// On an unreadable or corrupt state file, move it aside and start
    /// empty instead of refusing to start (the operator's explicit choice).
    pub fn with_reset(mut self) -> Self {
        self.reset = true;
        self
    }

    /// Takes `boot` as the running kernel's boot ID instead of reading it
    /// (tests: a reboot is a new ID).
    pub fn with_boot(mut self, boot: impl Into<String>) -> Self {
        self.boot = Some(boot.into());
        self
    }

    /// The state file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn read(&self) -> Result<Option<Vec<u8>>, String> {
        let file = OpenOptions::new()
            .read(true)
            .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK)
            .open(&self.path);
        let mut file = match file {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) if e.raw_os_error() == Some(nix::libc::ELOOP) => {
                return Err("it is a symlink, which is not followed".into());
            }
            Err(e) => return Err(e.to_string()),
        };
        let meta = file.metadata().map_err(|e| e.to_string())?;
        if !meta.is_file() {
            return Err("it is not a regular file".into());
        }
        let mut raw = Vec::new();
        file.read_to_end(&mut raw).map_err(|e| e.to_string())?;
        Ok(Some(raw))
    }

    /// The journal beside the state file.
    pub(crate) fn journal_path(&self) -> PathBuf {
        self.path.with_file_name(crate::journal::JOURNAL_FILE)
    }

    /// The snapshot with the journal replayed over it, and whether it was
    /// written in an earlier boot (then read as [`LoadNote::AfterReboot`]
    /// says).
    fn read_state(&self) -> Result<Option<(State, LoadNote)>, String> {
        let snapshot = self.read().and_then(|raw| match raw {
            None => Ok(None),
            Some(raw) => serde_json::from_slice::<State>(&raw)
                .map_err(|e| e.to_string())
                .and_then(|s| {
                    if s.version == STATE_VERSION {
                        Ok(Some(s))
                    } else {
                        Err(format!(
                            "unsupported state version {} (this build reads {STATE_VERSION})",
                            s.version
                        ))
                    }
                }),
        })?;
        let journal = crate::journal::read(&self.journal_path())?;
        let rebooted = match (&snapshot, &self.boot) {
            (Some(s), Some(now)) => s.boot.as_ref().is_some_and(|then| then != now),
            _ => false,
        };
        if journal.is_empty() && !rebooted {
            return Ok(snapshot.map(|s| (s, LoadNote::Loaded)));
        }
        let mut state = snapshot.unwrap_or_default();
        if !rebooted {
            crate::journal::replay(&mut state, &journal)?;
            return Ok(Some((state, LoadNote::Loaded)));
        }
        let (_, journal_cut_at) = crate::journal::replay_from_an_earlier_boot(&mut state, &journal);
        let uses_dropped = state.forget_uses();
        Ok(Some((
            state,
            LoadNote::AfterReboot {
                uses_dropped,
                journal_cut_at,
            },
        )))
    }

    /// The running kernel's boot ID, recorded in every snapshot written.
    pub(crate) fn boot(&self) -> Option<&str> {
        self.boot.as_deref()
    }

    pub(crate) fn load(&self) -> Result<(State, LoadNote), PoolError> {
        match self.read_state() {
            Ok(Some(loaded)) => Ok(loaded),
            Ok(None) => Ok((State::default(), LoadNote::Fresh)),
            Err(reason) if self.reset => {
                let secs = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or_default();
                let aside = |path: &Path| {
                    let mut name = path.as_os_str().to_owned();
                    name.push(format!(".corrupt-{secs}"));
                    PathBuf::from(name)
                };
                let moved_to = aside(&self.path);
                for (from, to) in [
                    (self.path.clone(), moved_to.clone()),
                    (self.journal_path(), aside(&self.journal_path())),
                ] {
                    match std::fs::rename(&from, &to) {
                        Ok(()) => {}
                        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                        Err(source) => {
                            return Err(PoolError::Persist {
                                path: from,
                                cause: source,
                            });
                        }
                    }
                }
                Ok((State::default(), LoadNote::Reset { moved_to, reason }))
            }
            Err(reason) => Err(PoolError::CorruptState {
                path: self.path.clone(),
                reason,
            }),
        }
    }

    pub(crate) fn save(&self, state: &State) -> io::Result<()> {
        let raw = serde_json::to_vec_pretty(state).map_err(io::Error::other)?;
        // Random name, O_EXCL, 0600: nothing planted is followed or reused.
        sriov_files::write_atomic(&self.path, &raw, 0o600, || {
            sriov_failpoint::hit("store.before-rename")
        })
    }
}
