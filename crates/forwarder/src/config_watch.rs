//! Follows the config file's directory with inotify and reloads when the
//! file's text changed.
//!
//! The directory, not the file: a ConfigMap volume swaps a `..data`
//! symlink to a new directory (the file itself, a symlink through
//! `..data`, never changes), and editors replace files by renaming. Events
//! come in bursts; a burst is let settle before the file is read.

use std::io;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use tokio::io::unix::AsyncFd;

use crate::reload::{Reloader, Trigger};

/// Quiet time after the last event of a burst before the file is read.
const SETTLE: Duration = Duration::from_millis(50);
/// Wait before watching again after the watch failed.
const RETRY: Duration = Duration::from_secs(5);

/// `AsyncFd` wants `AsRawFd`; nix's `Inotify` only offers `AsFd`.
struct InotifyFd(Inotify);

impl AsRawFd for InotifyFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_fd().as_raw_fd()
    }
}

fn watch_dir(dir: &Path) -> io::Result<AsyncFd<InotifyFd>> {
    let ino = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)?;
    ino.add_watch(
        dir,
        AddWatchFlags::IN_CLOSE_WRITE
            | AddWatchFlags::IN_CREATE
            | AddWatchFlags::IN_DELETE
            | AddWatchFlags::IN_MOVED_FROM
            | AddWatchFlags::IN_MOVED_TO
            | AddWatchFlags::IN_ONLYDIR,
    )?;
    // SAFETY: `InotifyFd` owns the inotify descriptor and never gives it
    // away or swaps it, so the fd stays open and the same for the whole
    // life of the `AsyncFd` that owns it, as `register` requires.
    #[allow(unsafe_code)]
    let fd = unsafe { AsyncFd::register(InotifyFd(ino)) }.map_err(io::Error::from)?;
    Ok(fd)
}

/// Waits for events and drains them; `Ok(false)` when the directory went.
async fn next_events(fd: &AsyncFd<InotifyFd>) -> io::Result<bool> {
    loop {
        let mut ready = fd.readable().await?;
        match ready.try_io(|inner| inner.get_ref().0.read_events().map_err(io::Error::from)) {
            Ok(Ok(events)) => {
                let gone = events.iter().any(|e| {
                    e.mask
                        .intersects(AddWatchFlags::IN_IGNORED | AddWatchFlags::IN_DELETE_SELF)
                });
                return Ok(!gone);
            }
            Ok(Err(e)) => return Err(e),
            Err(_would_block) => continue,
        }
    }
}

/// Reloads `file` through `reloader` whenever its directory changes and
/// its text with it, until `stop`.
pub(crate) async fn follow(file: PathBuf, reloader: Arc<Reloader>, stop: impl Future<Output = ()>) {
    tokio::pin!(stop);
    let dir = match file.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    };
    loop {
        let fd = match watch_dir(&dir) {
            Ok(fd) => fd,
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %e,
                    "watching the config file's directory; SIGHUP still reloads, retrying");
                tokio::select! {
                    () = &mut stop => return,
                    () = tokio::time::sleep(RETRY) => continue,
                }
            }
        };
        tracing::debug!(dir = %dir.display(), "following the config file's directory");
        loop {
            let alive = tokio::select! {
                () = &mut stop => return,
                r = next_events(&fd) => r,
            };
            // Let the burst settle (a ConfigMap swap is several events).
            loop {
                tokio::select! {
                    () = &mut stop => return,
                    r = next_events(&fd) => if !matches!(r, Ok(true)) { break },
                    () = tokio::time::sleep(SETTLE) => break,
                }
            }
            // Judged and logged inside; a refusal keeps the running config.
            let _ = reloader.reload(Trigger::FileChanged).await;
            if !matches!(alive, Ok(true)) {
                break;
            }
        }
    }
}
