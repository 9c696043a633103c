//! The append-only journal beside the state snapshot, with group commit.
//!
//! Rewriting the whole snapshot (temp file, two fsyncs, rename) for every
//! change costs milliseconds and serialises every Request behind the pool's
//! lock; a Request makes four or five changes. Instead each change appends
//! one line to `sriov-pool.journal`, the tokens it changed with their new
//! values (`{"s":seq,"t":{"<id>":<token or null>}}`), written under the
//! pool's lock so the file's order is the order of the changes, then made
//! durable with `fdatasync` *outside* the lock. Concurrent committers share
//! one sync (group commit): whoever finds no sync running starts one that
//! covers every line written so far, the others wait for it. So unrelated
//! Requests do not wait for each other's disk writes, and throughput grows
//! with concurrency.
//!
//! On load the snapshot is read and the journal replayed over it. A line is
//! complete only with its newline, and only the last one can be torn (a
//! crash during a write that was never acknowledged): it is ignored. Lines
//! set tokens to values, so replaying lines already folded into a snapshot
//! changes nothing; the pool writes a fresh snapshot and empties the journal
//! at start and whenever the journal passes [`COMPACT_AFTER`] lines.
//!
//! A failed write or sync poisons the journal: every later change fails
//! too, since what is in memory may then be ahead of what is on disk (the
//! restarted daemon reads back only what reached the disk).

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex, MutexGuard};

use serde::{Deserialize, Serialize};

use crate::state::{State, Token};

/// File name of the journal inside the state directory.
pub const JOURNAL_FILE: &str = "sriov-pool.journal";

/// Lines after which the pool folds the journal into a new snapshot.
pub(crate) const COMPACT_AFTER: usize = 4096;

/// One change: the tokens it set (`None`: removed).
#[derive(Debug, Serialize, Deserialize)]
struct Delta {
    s: u64,
    t: BTreeMap<String, Option<Token>>,
}

/// The tokens whose value differs between `old` and `new`.
pub(crate) fn delta(old: &State, new: &State) -> BTreeMap<String, Option<Token>> {
    let mut out = BTreeMap::new();
    for (id, t) in &new.tokens {
        if old.tokens.get(id) != Some(t) {
            out.insert(id.clone(), Some(t.clone()));
        }
    }
    for id in old.tokens.keys() {
        if !new.tokens.contains_key(id) {
            out.insert(id.clone(), None);
        }
    }
    out
}

/// Applies the journal `raw` to `state`; returns how many lines it applied.
/// A last line without its newline, or a last complete line that does not
/// parse, is a torn write and ignored; an earlier line that does not parse
/// is corruption.
pub(crate) fn replay(state: &mut State, raw: &[u8]) -> Result<usize, String> {
    let complete = match raw.iter().rposition(|b| *b == b'\n') {
        Some(end) => raw.get(..end).unwrap_or_default(),
        None => return Ok(0),
    };
    let lines: Vec<&[u8]> = complete.split(|b| *b == b'\n').collect();
    let mut applied = 0;
    for (n, line) in lines.iter().enumerate() {
        match serde_json::from_slice::<Delta>(line) {
            Ok(d) => {
                for (id, t) in d.t {
                    match t {
                        Some(t) => state.tokens.insert(id, t),
                        None => state.tokens.remove(&id),
                    };
                }
                applied += 1;
            }
            Err(_) if n + 1 == lines.len() => {}
            Err(e) => return Err(format!("journal line {}: {e}", n + 1)),
        }
    }
    Ok(applied)
}

/// Reads the journal at `path` without following a symlink; empty when
/// there is none.
pub(crate) fn read(path: &Path) -> Result<Vec<u8>, String> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK)
        .open(path);
    let mut file = match file {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) if e.raw_os_error() == Some(nix::libc::ELOOP) => {
            return Err(format!(
                "{}: a symlink, which is not followed",
                path.display()
            ));
        }
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    if !file.metadata().map_err(|e| e.to_string())?.is_file() {
        return Err(format!("{}: not a regular file", path.display()));
    }
    let mut raw = Vec::new();
    file.read_to_end(&mut raw).map_err(|e| e.to_string())?;
    Ok(raw)
}

struct Writer {
    file: File,
    seq: u64,
    lines: usize,
}

#[derive(Default)]
struct Synced {
    upto: u64,
    running: bool,
    failed: Option<String>,
}

/// The open journal: appends under the pool's lock, syncs outside it.
pub(crate) struct Journal {
    path: PathBuf,
    writer: Mutex<Writer>,
    sync_file: File,
    synced: Mutex<Synced>,
    done: Condvar,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal").field("path", &self.path).finish()
    }
}

fn poisoned(path: &Path, why: &str) -> io::Error {
    io::Error::other(format!(
        "journal {} failed earlier ({why}); no change is accepted until restart",
        path.display()
    ))
}

impl Journal {
    /// Opens (creating, 0600) the journal at `path` for appending, empty:
    /// the caller has just written a snapshot holding everything in it.
    pub(crate) fn open_empty(path: &Path) -> io::Result<Self> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .custom_flags(nix::libc::O_NOFOLLOW)
            .open(path)?;
        let meta = file.metadata()?;
        if !meta.is_file() || meta.uid() != nix::unistd::geteuid().as_raw() {
            return Err(io::Error::other(format!(
                "{}: not a regular file of ours",
                path.display()
            )));
        }
        file.set_len(0)?;
        file.sync_all()?;
        Ok(Self {
            path: path.to_path_buf(),
            sync_file: file.try_clone()?,
            writer: Mutex::new(Writer {
                file,
                seq: 0,
                lines: 0,
            }),
            synced: Mutex::default(),
            done: Condvar::new(),
        })
    }

    fn synced(&self) -> MutexGuard<'_, Synced> {
        self.synced.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn writer(&self) -> MutexGuard<'_, Writer> {
        self.writer.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Writes one change (not yet durable: see [`Journal::durable`]).
    /// Returns its sequence number and whether the journal is due for
    /// compaction. Called under the pool's lock, which orders the lines.
    pub(crate) fn append(&self, t: BTreeMap<String, Option<Token>>) -> io::Result<(u64, bool)> {
        if let Some(why) = &self.synced().failed {
            return Err(poisoned(&self.path, why));
        }
        let mut w = self.writer();
        let seq = w.seq + 1;
        let mut line = serde_json::to_vec(&Delta { s: seq, t }).map_err(io::Error::other)?;
        line.push(b'\n');
        if let Err(e) = w.file.write_all(&line) {
            // A torn line may be on disk now: nothing may follow it.
            self.synced().failed = Some(e.to_string());
            return Err(e);
        }
        w.seq = seq;
        w.lines += 1;
        Ok((seq, w.lines >= COMPACT_AFTER))
    }

    /// Empties the journal after a snapshot holding everything in it was
    /// made durable; every line written so far counts as durable.
    pub(crate) fn truncate(&self) -> io::Result<()> {
        let mut w = self.writer();
        let truncated = w.file.set_len(0).and_then(|()| w.file.sync_all());
        let mut s = self.synced();
        match truncated {
            Ok(()) => {
                w.lines = 0;
                s.upto = s.upto.max(w.seq);
                self.done.notify_all();
                Ok(())
            }
            Err(e) => {
                s.failed = Some(e.to_string());
                Err(e)
            }
        }
    }

    /// Returns once line `seq` is on disk, syncing if nobody else is.
    pub(crate) fn durable(&self, seq: u64) -> io::Result<()> {
        let mut s = self.synced();
        loop {
            if let Some(why) = &s.failed {
                return Err(poisoned(&self.path, why));
            }
            if s.upto >= seq {
                return Ok(());
            }
            if s.running {
                s = self.done.wait(s).unwrap_or_else(|p| p.into_inner());
                continue;
            }
            s.running = true;
            drop(s);
            // Everything written before this point is covered by the sync.
            let target = self.writer().seq;
            let result = self.sync_file.sync_data();
            s = self.synced();
            s.running = false;
            match result {
                Ok(()) => s.upto = s.upto.max(target),
                Err(e) => s.failed = Some(e.to_string()),
            }
            self.done.notify_all();
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;
    use crate::state::TokenState;

    fn token(id: &str, state: TokenState) -> Token {
        Token {
            id: id.into(),
            name: "a/b".into(),
            pf: "0000:3b:00.0".parse().unwrap(),
            state,
            bound: None,
        }
    }

    #[test]
    fn lines_replay_in_order_and_a_torn_last_line_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(JOURNAL_FILE);
        let j = Journal::open_empty(&path).unwrap();
        let (mut old, mut new) = (State::default(), State::default());
        new.tokens
            .insert("t1".into(), token("t1", TokenState::Allocated));
        let (s1, _) = j.append(delta(&old, &new)).unwrap();
        old = new.clone();
        new.tokens.remove("t1");
        new.tokens
            .insert("t2".into(), token("t2", TokenState::Free));
        let (s2, _) = j.append(delta(&old, &new)).unwrap();
        assert_eq!((s1, s2), (1, 2));
        j.durable(s2).unwrap();
        let mut raw = read(&path).unwrap();
        let mut back = State::default();
        assert_eq!(replay(&mut back, &raw).unwrap(), 2);
        assert_eq!(back, new);
        // A crash in the middle of a third write.
        raw.extend_from_slice(br#"{"s":3,"t":{"t2":nu"#);
        let mut torn = State::default();
        assert_eq!(replay(&mut torn, &raw).unwrap(), 2);
        assert_eq!(torn, new);
        // Corruption before the last line is refused.
        let mut bad = b"garbage\n".to_vec();
        bad.extend_from_slice(&read(&path).unwrap());
        let e = replay(&mut State::default(), &bad).unwrap_err();
        assert!(e.contains("journal line 1"), "{e}");
    }

    #[test]
    fn truncation_makes_every_line_durable_and_empties_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(JOURNAL_FILE);
        let j = Journal::open_empty(&path).unwrap();
        let mut new = State::default();
        new.tokens
            .insert("t1".into(), token("t1", TokenState::Free));
        let (seq, _) = j.append(delta(&State::default(), &new)).unwrap();
        j.truncate().unwrap();
        j.durable(seq).unwrap();
        assert!(read(&path).unwrap().is_empty());
    }

    #[test]
    fn a_symlinked_journal_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(JOURNAL_FILE);
        std::os::unix::fs::symlink("/etc/passwd", &path).unwrap();
        assert!(Journal::open_empty(&path).is_err());
        assert!(read(&path).unwrap_err().contains("symlink"));
    }
}
