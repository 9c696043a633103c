//! Directory events through inotify, awaited on the tokio reactor.
//!
//! Kubelet signals its restarts only through the filesystem: it deletes
//! every plugin socket in the device-plugin dir and creates a new
//! `kubelet.sock`. Waiting on inotify reacts at once and costs nothing
//! while idle, unlike polling with `stat`. The standalone plugin follows its
//! config file the same way ([`DirWatcher::with_writes`]): a directory watch,
//! not a file watch, because a ConfigMap volume swaps a `..data` symlink and
//! never writes the file a watch on it would follow.

use std::ffi::OsString;
use std::io;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::path::{Path, PathBuf};

use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use tokio::io::unix::AsyncFd;

use crate::Error;

/// `AsyncFd` wants `AsRawFd`; nix's `Inotify` only offers `AsFd`.
struct InotifyFd(Inotify);

impl AsRawFd for InotifyFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_fd().as_raw_fd()
    }
}

/// Something happened in the watched directory.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DirEvent {
    /// A file appeared (created or moved in).
    Created(OsString),
    /// A file went away (deleted or moved out).
    Removed(OsString),
    /// A file opened for writing was closed (only with [`DirWatcher::with_writes`]).
    Written(OsString),
    /// Events were lost (queue overflow): recheck everything.
    Rescan,
    /// The directory itself is gone: the watcher must be recreated.
    Gone,
}

/// An inotify watch on one directory.
pub struct DirWatcher {
    fd: AsyncFd<InotifyFd>,
    dir: PathBuf,
}

impl std::fmt::Debug for DirWatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DirWatcher")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl DirWatcher {
    /// Watches `dir` for files appearing and going away.
    pub fn new(dir: &Path) -> Result<Self, Error> {
        Self::watch(dir, AddWatchFlags::empty())
    }

    /// Watches `dir` for files appearing, going away and being written in place
    /// ([`DirEvent::Written`] once the writer closes the file).
    pub fn with_writes(dir: &Path) -> Result<Self, Error> {
        Self::watch(dir, AddWatchFlags::IN_CLOSE_WRITE)
    }

    fn watch(dir: &Path, extra: AddWatchFlags) -> Result<Self, Error> {
        let err = |e: nix::Error| Error::Watch {
            dir: dir.to_owned(),
            cause: io::Error::from(e),
        };
        let ino = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC).map_err(err)?;
        ino.add_watch(
            dir,
            AddWatchFlags::IN_CREATE
                | AddWatchFlags::IN_DELETE
                | AddWatchFlags::IN_MOVED_FROM
                | AddWatchFlags::IN_MOVED_TO
                | AddWatchFlags::IN_DELETE_SELF
                | AddWatchFlags::IN_MOVE_SELF
                | AddWatchFlags::IN_ONLYDIR
                | extra,
        )
        .map_err(err)?;
        // SAFETY: `InotifyFd` owns the inotify descriptor and never gives it
        // away or swaps it, so the fd stays open and the same for the whole
        // life of the `AsyncFd` that owns it (what `register` requires; the
        // safe `new` is deprecated only because arbitrary `T` may not do so).
        #[allow(unsafe_code)]
        let fd = unsafe { AsyncFd::register(InotifyFd(ino)) }.map_err(|e| Error::Watch {
            dir: dir.to_owned(),
            cause: io::Error::from(e),
        })?;
        Ok(Self {
            fd,
            dir: dir.to_owned(),
        })
    }

    /// The watched directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Waits for the next batch of events.
    pub async fn next(&mut self) -> Result<Vec<DirEvent>, Error> {
        loop {
            let mut guard = self.fd.readable().await.map_err(|source| Error::Watch {
                dir: self.dir.clone(),
                cause: source,
            })?;
            match guard.try_io(|fd| fd.get_ref().0.read_events().map_err(io::Error::from)) {
                Ok(Ok(events)) => return Ok(events.into_iter().filter_map(convert).collect()),
                Ok(Err(source)) => {
                    return Err(Error::Watch {
                        dir: self.dir.clone(),
                        cause: source,
                    });
                }
                Err(_would_block) => continue,
            }
        }
    }
}

fn convert(ev: nix::sys::inotify::InotifyEvent) -> Option<DirEvent> {
    let m = ev.mask;
    if m.intersects(AddWatchFlags::IN_Q_OVERFLOW) {
        return Some(DirEvent::Rescan);
    }
    if m.intersects(
        AddWatchFlags::IN_DELETE_SELF | AddWatchFlags::IN_MOVE_SELF | AddWatchFlags::IN_IGNORED,
    ) {
        return Some(DirEvent::Gone);
    }
    let name = ev.name?;
    if m.intersects(AddWatchFlags::IN_CREATE | AddWatchFlags::IN_MOVED_TO) {
        Some(DirEvent::Created(name))
    } else if m.intersects(AddWatchFlags::IN_DELETE | AddWatchFlags::IN_MOVED_FROM) {
        Some(DirEvent::Removed(name))
    } else if m.intersects(AddWatchFlags::IN_CLOSE_WRITE) {
        Some(DirEvent::Written(name))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[tokio::test]
    async fn reports_creation_and_removal_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = DirWatcher::new(dir.path()).unwrap();
        std::fs::write(dir.path().join("kubelet.sock"), b"").unwrap();
        std::fs::remove_file(dir.path().join("kubelet.sock")).unwrap();
        let mut seen = Vec::new();
        while seen.len() < 2 {
            seen.extend(w.next().await.unwrap());
        }
        assert_eq!(
            seen,
            vec![
                DirEvent::Created("kubelet.sock".into()),
                DirEvent::Removed("kubelet.sock".into())
            ]
        );
    }

    #[tokio::test]
    async fn with_writes_reports_a_file_rewritten_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("config.json");
        std::fs::write(&file, b"{}").unwrap();
        let mut plain = DirWatcher::new(dir.path()).unwrap();
        let mut w = DirWatcher::with_writes(dir.path()).unwrap();
        std::fs::write(&file, b"{\"resourceList\": []}").unwrap();
        std::fs::remove_file(&file).unwrap();
        let mut seen = Vec::new();
        while !seen.contains(&DirEvent::Removed("config.json".into())) {
            seen.extend(w.next().await.unwrap());
        }
        assert_eq!(
            seen,
            vec![
                DirEvent::Written("config.json".into()),
                DirEvent::Removed("config.json".into())
            ]
        );
        // Without asking, writes are not reported.
        assert_eq!(
            plain.next().await.unwrap(),
            vec![DirEvent::Removed("config.json".into())]
        );
    }

    #[tokio::test]
    async fn removing_the_directory_reports_gone() {
        let parent = tempfile::tempdir().unwrap();
        let dir = parent.path().join("d");
        std::fs::create_dir(&dir).unwrap();
        let mut w = DirWatcher::new(&dir).unwrap();
        std::fs::remove_dir(&dir).unwrap();
        let mut seen = Vec::new();
        while !seen.contains(&DirEvent::Gone) {
            seen.extend(w.next().await.unwrap());
        }
    }
}
