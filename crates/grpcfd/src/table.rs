//! The per-connection state shared between a stream and its handles: the
//! descriptors received ([`FdTable`]) and those waiting to be sent
//! ([`FdSender`]).

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use rustix::fs::{Mode, OFlags};

/// `(st_dev, st_ino)`: how grpcfd names a file.
pub(crate) type Key = (u64, u64);

/// The `inode://<dev>/<ino>` URL grpcfd gives a file (`url.go`: the device
/// as the host, the inode as the path, both decimal).
pub fn inode_url(dev: u64, ino: u64) -> String {
    format!("inode://{dev}/{ino}")
}

/// `(dev, ino)` of an `inode://<dev>/<ino>` URL; `None` for anything else
/// (another scheme, signs, non-decimal digits, extra path segments).
pub fn parse_inode_url(url: &str) -> Option<(u64, u64)> {
    let rest = url.strip_prefix("inode://")?;
    let (dev, ino) = rest.split_once('/')?;
    let number = |s: &str| {
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse::<u64>().ok())
            .flatten()
    };
    Some((number(dev)?, number(ino)?))
}

pub(crate) fn key_of(fd: impl AsFd) -> io::Result<Key> {
    let st = rustix::fs::fstat(fd)?;
    Ok((st.st_dev, st.st_ino))
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

#[derive(Debug, Default)]
struct Received {
    fds: HashMap<Key, OwnedFd>,
    /// Set when the stream is dropped: nothing is kept after that.
    closed: bool,
}

/// What happened to a descriptor offered to the table.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Kept {
    New,
    /// The table already held that inode; the new descriptor was closed.
    Duplicate,
    /// The table is full (or closed); the descriptor was closed.
    Refused,
}

/// The descriptors one connection received, by `(st_dev, st_ino)`.
///
/// Cheap to clone; every clone sees the same table. The stream that fills
/// it empties it when dropped, so a handler holding a clone past the
/// connection's end finds nothing: what a handler needs beyond the
/// connection it takes out with [`FdTable::get`].
#[derive(Clone, Debug, Default)]
pub struct FdTable {
    inner: Arc<Mutex<Received>>,
}

impl FdTable {
    /// A duplicate of the descriptor received for `(dev, ino)`, owned by the
    /// caller (it outlives the connection); `Ok(None)` when this connection
    /// sent no such file. Fails only when the duplicate cannot be made
    /// (descriptor limit).
    pub fn get(&self, dev: u64, ino: u64) -> io::Result<Option<OwnedFd>> {
        lock(&self.inner)
            .fds
            .get(&(dev, ino))
            .map(OwnedFd::try_clone)
            .transpose()
    }

    /// Whether this connection sent `(dev, ino)`.
    pub fn contains(&self, dev: u64, ino: u64) -> bool {
        lock(&self.inner).fds.contains_key(&(dev, ino))
    }

    /// How many distinct files the table holds.
    pub fn len(&self) -> usize {
        lock(&self.inner).fds.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Keeps `fd` under `key` unless the key is held already or the table
    /// holds `limit` files; a descriptor not kept is closed here.
    pub(crate) fn offer(&self, key: Key, fd: OwnedFd, limit: usize) -> Kept {
        let mut t = lock(&self.inner);
        if t.closed {
            return Kept::Refused;
        }
        if t.fds.contains_key(&key) {
            return Kept::Duplicate;
        }
        if t.fds.len() >= limit {
            return Kept::Refused;
        }
        t.fds.insert(key, fd);
        Kept::New
    }

    /// Closes everything and refuses what comes later.
    pub(crate) fn close(&self) {
        let fds = {
            let mut t = lock(&self.inner);
            t.closed = true;
            std::mem::take(&mut t.fds)
        };
        drop(fds);
    }
}

/// Why a descriptor could not be queued.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// The file to send could not be opened.
    #[error("opening {path} to send it: {cause}")]
    Open {
        /// The file.
        path: PathBuf,
        /// Why.
        cause: io::Error,
    },
    /// The descriptor's inode could not be read.
    #[error("fstat of the descriptor to send: {cause}")]
    Stat {
        /// Why.
        cause: io::Error,
    },
    /// The connection it was for has ended.
    #[error("the connection has ended; nothing more can be sent on it")]
    Closed,
}

#[derive(Debug, Default)]
pub(crate) struct Outbox {
    pub(crate) queued: Vec<OwnedFd>,
    pub(crate) closed: bool,
}

/// Queues descriptors to go with the next bytes its connection writes.
///
/// Cheap to clone. A descriptor queued is the sender's own (it is closed
/// once written, or when the connection ends unwritten), so callers keep
/// theirs. Nothing is written by queueing: the next gRPC call (or any
/// HTTP/2 frame) on the connection carries it, ahead of that call's
/// bytes, which is what the receiving side relies on.
#[derive(Clone, Debug, Default)]
pub struct FdSender {
    pub(crate) outbox: Arc<Mutex<Outbox>>,
}

impl FdSender {
    /// Queues `fd`; returns the `(st_dev, st_ino)` the peer will know it by
    /// (see [`inode_url`]).
    pub fn send(&self, fd: OwnedFd) -> Result<(u64, u64), SendError> {
        let key = key_of(&fd).map_err(|cause| SendError::Stat { cause })?;
        let mut out = lock(&self.outbox);
        if out.closed {
            return Err(SendError::Closed);
        }
        out.queued.push(fd);
        Ok(key)
    }

    /// Opens `path` with `O_PATH` and queues it, as grpcfd's `SendFilename`
    /// does: `O_PATH` opens what `open(2)` cannot (a unix socket, whose
    /// receiver connects through `/proc/self/fd/<n>`) and never reads or
    /// blocks on the file (a FIFO). Symlinks on the path are followed, so
    /// `/proc/<pid>/ns/net` sends the namespace itself.
    pub fn send_file(&self, path: &Path) -> Result<(u64, u64), SendError> {
        let fd =
            rustix::fs::open(path, OFlags::PATH | OFlags::CLOEXEC, Mode::empty()).map_err(|e| {
                SendError::Open {
                    path: path.to_owned(),
                    cause: e.into(),
                }
            })?;
        self.send(fd)
    }

    /// How many descriptors wait for the next write.
    pub fn queued(&self) -> usize {
        lock(&self.outbox).queued.len()
    }

    /// Whether the connection has ended.
    pub fn is_closed(&self) -> bool {
        lock(&self.outbox).closed
    }

    /// Takes up to `max` queued descriptors for one write.
    pub(crate) fn take(&self, max: usize) -> Vec<OwnedFd> {
        let mut out = lock(&self.outbox);
        let n = out.queued.len().min(max);
        out.queued.drain(..n).collect()
    }

    /// Puts back descriptors a write did not carry, ahead of newer ones.
    pub(crate) fn put_back(&self, mut fds: Vec<OwnedFd>) {
        let mut out = lock(&self.outbox);
        if out.closed {
            return;
        }
        fds.append(&mut out.queued);
        out.queued = fds;
    }

    pub(crate) fn close(&self) {
        let fds = {
            let mut out = lock(&self.outbox);
            out.closed = true;
            std::mem::take(&mut out.queued)
        };
        drop(fds);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn inode_urls_round_trip_and_foreign_ones_are_refused() {
        assert_eq!(inode_url(4, 4026531992), "inode://4/4026531992");
        assert_eq!(
            parse_inode_url("inode://4/4026531992"),
            Some((4, 4026531992))
        );
        for bad in [
            "file:///proc/1/ns/net",
            "inode://4",
            "inode:///4",
            "inode://4/",
            "inode://+4/1",
            "inode://4/1/2",
            "inode://4/99999999999999999999999",
        ] {
            assert_eq!(parse_inode_url(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_table_keeps_one_fd_per_inode_up_to_its_limit() {
        let t = FdTable::default();
        let open = || OwnedFd::from(std::fs::File::open("/dev/null").unwrap());
        let null = key_of(open()).unwrap();
        assert_eq!(t.offer(null, open(), 1), Kept::New);
        assert_eq!(t.offer(null, open(), 1), Kept::Duplicate);
        let me = key_of(OwnedFd::from(
            std::fs::File::open("/proc/self/stat").unwrap(),
        ))
        .unwrap();
        assert_eq!(t.offer(me, open(), 1), Kept::Refused);
        assert_eq!(t.len(), 1);
        assert!(t.get(null.0, null.1).unwrap().is_some());
        t.close();
        assert!(t.is_empty());
        assert_eq!(t.offer(null, open(), 1), Kept::Refused);
    }
}
