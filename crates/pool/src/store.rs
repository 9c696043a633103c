//! Crash-safe persistence: write a temp file, fsync it, rename it over the
//! state file, fsync the directory. A `kill -9` at any instant leaves
//! either the old or the new state, never a torn one.

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::state::{STATE_VERSION, State};

/// File name of the state inside the state directory.
pub const STATE_FILE: &str = "sriov-pool.json";

/// The state file in a state directory.
#[derive(Debug, Clone)]
pub struct FileStore {
    path: PathBuf,
}

/// What loading found, for the caller to log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoadNote {
    /// No state file: a first start.
    Fresh,
    /// The file was unreadable or corrupt; it was moved aside and the
    /// pool starts from nothing (kubelet's view then re-establishes allocations).
    Corrupt {
        /// Where the bad file was moved.
        moved_to: PathBuf,
        /// What was wrong.
        reason: String,
    },
    /// Loaded normally.
    Loaded,
}

impl FileStore {
    /// A store at `<dir>/sriov-pool.json`; the directory is created if missing.
    pub fn in_dir(dir: impl AsRef<Path>) -> io::Result<Self> {
        std::fs::create_dir_all(dir.as_ref())?;
        Ok(Self {
            path: dir.as_ref().join(STATE_FILE),
        })
    }

    /// The state file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn load(&self) -> io::Result<(State, LoadNote)> {
        let raw = match std::fs::read(&self.path) {
            Ok(raw) => raw,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Ok((State::default(), LoadNote::Fresh));
            }
            Err(e) => return Err(e),
        };
        let parsed: Result<State, String> = serde_json::from_slice::<State>(&raw)
            .map_err(|e| e.to_string())
            .and_then(|s| {
                if s.version == STATE_VERSION {
                    Ok(s)
                } else {
                    Err(format!("unsupported state version {}", s.version))
                }
            });
        match parsed {
            Ok(s) => Ok((s, LoadNote::Loaded)),
            Err(reason) => {
                let moved_to = self.path.with_extension("json.corrupt");
                std::fs::rename(&self.path, &moved_to)?;
                Ok((State::default(), LoadNote::Corrupt { moved_to, reason }))
            }
        }
    }

    pub(crate) fn save(&self, state: &State) -> io::Result<()> {
        let tmp = self.path.with_extension("json.tmp");
        let raw = serde_json::to_vec_pretty(state).map_err(io::Error::other)?;
        {
            let mut f = File::create(&tmp)?;
            f.write_all(&raw)?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, &self.path)?;
        if let Some(dir) = self.path.parent() {
            File::open(dir)?.sync_all()?;
        }
        Ok(())
    }
}
