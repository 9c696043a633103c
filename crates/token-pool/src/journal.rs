//! The append-only journal beside the state snapshot, with group commit.
//!
//! Rewriting the whole snapshot (temp file, two fsyncs, rename) for every
//! change costs milliseconds and serialises every Request behind the pool's
//! lock; a Request makes four or five changes. Instead each change appends
//! one line to `sriov-pool.journal`, the tokens it changed with their new
//! values (`{"s":seq,"t":{"<id>":<token or null>}}`), written under the
//! pool's lock so the file's order is the order of the changes, then made
//! durable with `fdatasync` *outside* the lock, by the change itself or,
//! for a Request's records, once before its answer (the pool's `Reach`:
//! a written line already survives the process). Concurrent committers share
//! one sync (group commit): whoever finds no sync running starts one that
//! covers every line written so far, the others wait for it. So unrelated
//! Requests do not wait for each other's disk writes, and throughput grows
//! with concurrency.
//!
//! On load the snapshot is read and the journal replayed over it. A line is
//! complete only with its newline, and only the last one can be torn (a
//! crash during a write that was never acknowledged): it is ignored. After a
//! reboot (the snapshot's boot ID is not the kernel's) a power loss may also
//! have left unsynced lines garbled, so the journal then ends at its first
//! unreadable line (every sync covered every line before it), and the uses
//! it records are dropped: what they guarded on the host died with the boot
//! ([`crate::LoadNote::AfterReboot`]). Lines
//! set tokens to values, so replaying lines already folded into a snapshot
//! changes nothing; the pool writes a fresh snapshot and empties the journal
//! at start and whenever the journal passes [`COMPACT_AFTER`] lines.
//!
//! A failed write or sync refuses the change: the caller gets the error
//! naming the journal, and the change leaves memory again, with every
//! change written after the last good sync (they shared the failed sync or
//! came after it; none was acknowledged). After a failed `fsync` the file's
//! page cache cannot be trusted (PostgreSQL's fsync rule: the kernel may
//! have dropped the dirty pages and will not report it twice), so the file
//! is never synced or appended to again. Instead the next change first
//! writes the whole acknowledged state as a fresh journal of one line that
//! replaces every token (`"r":true`): to a temp file in the same directory,
//! fsynced, renamed over the journal, the directory fsynced. Replayed over
//! any snapshot it gives exactly that state, so the refused lines the old
//! file may still hold are gone with it, and the journal is healthy again.
//! Only if that rewrite fails too is the change refused, and the next one
//! tries again. On disk there is thus always a prefix of the changes made:
//! every acknowledged one, never an acknowledged one after a refused one.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use serde::{Deserialize, Serialize};

use crate::state::{State, Token};

/// File name of the journal inside the state directory.
pub const JOURNAL_FILE: &str = "sriov-pool.journal";

/// Lines after which the pool folds the journal into a new snapshot.
pub(crate) const COMPACT_AFTER: usize = 4096;

/// One change: the tokens it set (`None`: removed); with `r`, the whole
/// state: every token not named is removed.
#[derive(Debug, Serialize, Deserialize)]
struct Delta {
    s: u64,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    r: bool,
    t: BTreeMap<String, Option<Token>>,
}

/// The tokens of a change, each with the value it had before: what undoes it.
type Undo = BTreeMap<String, Option<Token>>;

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
    apply(state, raw, false).map(|(applied, _)| applied)
}

/// [`replay`] of a journal written before the last reboot: it ends at its
/// first line that does not parse, which it returns (1-based). Each sync put
/// every earlier line on disk, so a line a power loss garbled has only
/// unsynced lines after it; and what those guarded died with the boot.
pub(crate) fn replay_from_an_earlier_boot(state: &mut State, raw: &[u8]) -> (usize, Option<usize>) {
    apply(state, raw, true).unwrap_or((0, None))
}

fn apply(
    state: &mut State,
    raw: &[u8],
    stop_at_bad: bool,
) -> Result<(usize, Option<usize>), String> {
    let complete = match raw.iter().rposition(|b| *b == b'\n') {
        Some(end) => raw.get(..end).unwrap_or_default(),
        None => return Ok((0, None)),
    };
    let lines: Vec<&[u8]> = complete.split(|b| *b == b'\n').collect();
    let mut applied = 0;
    for (n, line) in lines.iter().enumerate() {
        match serde_json::from_slice::<Delta>(line) {
            Ok(d) => {
                if d.r {
                    state.tokens.clear();
                }
                for (id, t) in d.t {
                    match t {
                        Some(t) => state.tokens.insert(id, t),
                        None => state.tokens.remove(&id),
                    };
                }
                applied += 1;
            }
            Err(_) if n + 1 == lines.len() => {}
            Err(_) if stop_at_bad => return Ok((applied, Some(n + 1))),
            Err(e) => return Err(format!("journal line {}: {e}", n + 1)),
        }
    }
    Ok((applied, None))
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
    /// Changes written and not yet known durable, oldest first, with what
    /// undoes each: those a failed sync refuses leave memory through them.
    pending: Vec<(u64, Undo)>,
}

struct Synced {
    upto: u64,
    running: bool,
    /// Why the journal's file cannot be trusted any more, until a fresh one
    /// replaces it.
    failed: Option<String>,
    /// Changes refused (first and last sequence number): a waiter that
    /// looks after the journal was rewritten must not take the new file's
    /// syncs for its own.
    refused: Vec<(u64, u64)>,
    /// The journal's file, synced outside every lock.
    file: Arc<File>,
}

/// The open journal: appends under the pool's lock, syncs outside it.
pub(crate) struct Journal {
    path: PathBuf,
    writer: Mutex<Writer>,
    synced: Mutex<Synced>,
    done: Condvar,
    /// `fdatasync`s made, for the tests that count them.
    syncs: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal").field("path", &self.path).finish()
    }
}

fn refused(path: &Path, why: &str) -> io::Error {
    io::Error::other(format!(
        "journal {} failed ({why}); the change is refused and the next one rewrites the journal",
        path.display()
    ))
}

/// Opens the journal at `path` for appending, refusing anything but a
/// regular file of ours (no symlink followed).
fn open_append(path: &Path) -> io::Result<File> {
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
    Ok(file)
}

impl Journal {
    /// Opens (creating, 0600) the journal at `path` for appending, empty:
    /// the caller has just written a snapshot holding everything in it.
    pub(crate) fn open_empty(path: &Path) -> io::Result<Self> {
        let file = open_append(path)?;
        file.set_len(0)?;
        file.sync_all()?;
        Ok(Self {
            path: path.to_path_buf(),
            synced: Mutex::new(Synced {
                upto: 0,
                running: false,
                failed: None,
                refused: Vec::new(),
                file: Arc::new(file.try_clone()?),
            }),
            writer: Mutex::new(Writer {
                file,
                seq: 0,
                lines: 0,
                pending: Vec::new(),
            }),
            done: Condvar::new(),
            syncs: std::sync::atomic::AtomicU64::new(0),
        })
    }

    fn synced(&self) -> MutexGuard<'_, Synced> {
        self.synced.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn writer(&self) -> MutexGuard<'_, Writer> {
        self.writer.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Writes one change to `state` (not yet durable: see
    /// [`Journal::durable`]; not applied: the caller applies it once this
    /// returns). Returns its sequence number and whether the journal is due
    /// for compaction. Called under the pool's lock, which orders the lines.
    ///
    /// A failed journal is rewritten first (see the module docs). If that
    /// takes refused changes out of `state` (their committers had not yet),
    /// the change is refused too, since it was worked out from them; the
    /// journal is healthy for the next one.
    pub(crate) fn append(
        &self,
        state: &mut State,
        t: BTreeMap<String, Option<Token>>,
    ) -> io::Result<(u64, bool)> {
        if self.synced().failed.is_some() && self.recover(state)? {
            return Err(io::Error::other(format!(
                "journal {}: the changes written since its last good sync were refused, and \
                 this one was worked out from them; ask again",
                self.path.display()
            )));
        }
        let undo: Undo = t
            .keys()
            .map(|id| (id.clone(), state.tokens.get(id).cloned()))
            .collect();
        let mut w = self.writer();
        let seq = w.seq + 1;
        let mut line = serde_json::to_vec(&Delta {
            s: seq,
            r: false,
            t,
        })
        .map_err(io::Error::other)?;
        line.push(b'\n');
        if let Err(e) = fault(Fault::Write).and_then(|()| w.file.write_all(&line)) {
            // A torn line may be on disk now: nothing may follow it.
            self.synced().failed = Some(e.to_string());
            return Err(e);
        }
        w.seq = seq;
        w.lines += 1;
        let upto = self.synced().upto;
        w.pending.retain(|(s, _)| *s > upto);
        w.pending.push((seq, undo));
        Ok((seq, w.lines >= COMPACT_AFTER))
    }

    /// Takes the changes a failed journal refused out of `state` (the
    /// newest first); whether there were any. Nothing when the journal has
    /// not failed. Called under the pool's lock.
    pub(crate) fn revert(&self, state: &mut State) -> bool {
        let mut s = self.synced();
        if s.failed.is_none() {
            return false;
        }
        // A sync still running may yet make some of them durable.
        while s.running {
            s = self.done.wait(s).unwrap_or_else(|p| p.into_inner());
        }
        let upto = s.upto;
        drop(s);
        let mut w = self.writer();
        let refused: Vec<(u64, Undo)> = std::mem::take(&mut w.pending)
            .into_iter()
            .filter(|(seq, _)| *seq > upto)
            .collect();
        let Some(first) = refused.first().map(|(seq, _)| *seq) else {
            return false;
        };
        for (_, undo) in refused.into_iter().rev() {
            for (id, t) in undo {
                match t {
                    Some(t) => state.tokens.insert(id, t),
                    None => state.tokens.remove(&id),
                };
            }
        }
        self.synced().refused.push((first, w.seq));
        true
    }

    /// Replaces a failed journal with a fresh file holding `state` less
    /// the refused changes (see the module docs); whether `state` changed.
    fn recover(&self, state: &mut State) -> io::Result<bool> {
        let reverted = self.revert(state);
        let why = self.synced().failed.clone().unwrap_or_default();
        let fail = |e: io::Error| {
            io::Error::other(format!(
                "journal {} failed ({why}) and could not be rewritten: {e}",
                self.path.display()
            ))
        };
        let mut w = self.writer();
        let seq = w.seq + 1;
        let whole = Delta {
            s: seq,
            r: true,
            t: state
                .tokens
                .iter()
                .map(|(id, t)| (id.clone(), Some(t.clone())))
                .collect(),
        };
        let mut line = serde_json::to_vec(&whole).map_err(io::Error::other)?;
        line.push(b'\n');
        fault(Fault::Rewrite).map_err(fail)?;
        sriov_files::write_atomic(&self.path, &line, 0o600, || {}).map_err(fail)?;
        let file = open_append(&self.path).map_err(fail)?;
        let sync_file = Arc::new(file.try_clone().map_err(fail)?);
        w.file = file;
        w.seq = seq;
        w.lines = 1;
        w.pending.clear();
        let mut s = self.synced();
        s.file = sync_file;
        s.failed = None;
        s.upto = seq;
        self.done.notify_all();
        tracing::warn!(journal = %self.path.display(), failed = %why, "journal rewritten whole after a failure");
        Ok(reverted)
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
                w.pending.clear();
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

    /// How many `fdatasync`s the journal made.
    #[cfg(test)]
    pub(crate) fn syncs(&self) -> u64 {
        self.syncs.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The sequence number of the last line written.
    pub(crate) fn written(&self) -> u64 {
        self.writer().seq
    }

    /// Returns once line `seq` is on disk, syncing if nobody else is; an
    /// error once the journal failed before it was.
    pub(crate) fn durable(&self, seq: u64) -> io::Result<()> {
        let mut s = self.synced();
        loop {
            if s.refused.iter().any(|(a, b)| (*a..=*b).contains(&seq)) {
                return Err(refused(&self.path, "an earlier write or sync failed"));
            }
            if s.upto >= seq {
                return Ok(());
            }
            if s.running {
                s = self.done.wait(s).unwrap_or_else(|p| p.into_inner());
                continue;
            }
            if let Some(why) = &s.failed {
                return Err(refused(&self.path, why));
            }
            s.running = true;
            let file = s.file.clone();
            drop(s);
            // Everything written before this point is covered by the sync.
            let target = self.writer().seq;
            self.syncs
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let result = fault(Fault::Sync).and_then(|()| file.sync_data());
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

/// The I/O a test can make fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fault {
    /// Appending a line.
    Write,
    /// `fdatasync` of the journal.
    Sync,
    /// Writing a fresh journal after a failure.
    Rewrite,
}

/// An injected failure of `kind`, in this crate's unit tests only.
fn fault(kind: Fault) -> io::Result<()> {
    #[cfg(test)]
    if faults::take(kind) {
        return Err(io::Error::other(format!("injected {kind:?} failure")));
    }
    let _ = kind;
    Ok(())
}

/// Failures armed by a test for its own thread (tests run in parallel).
#[cfg(test)]
pub(crate) mod faults {
    use std::cell::RefCell;

    use super::Fault;

    thread_local! {
        static ARMED: RefCell<Vec<Fault>> = const { RefCell::new(Vec::new()) };
    }

    /// The next I/O of `kind` on this thread fails.
    pub(crate) fn arm(kind: Fault) {
        ARMED.with(|a| a.borrow_mut().push(kind));
    }

    pub(super) fn take(kind: Fault) -> bool {
        ARMED.with(|a| {
            let mut a = a.borrow_mut();
            match a.iter().position(|k| *k == kind) {
                Some(at) => {
                    a.remove(at);
                    true
                }
                None => false,
            }
        })
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
        let (s1, _) = j.append(&mut old.clone(), delta(&old, &new)).unwrap();
        old = new.clone();
        new.tokens.remove("t1");
        new.tokens
            .insert("t2".into(), token("t2", TokenState::Free));
        let (s2, _) = j.append(&mut old.clone(), delta(&old, &new)).unwrap();
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
        let (seq, _) = j
            .append(&mut State::default(), delta(&State::default(), &new))
            .unwrap();
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

    /// A pool over one X710 port (4 VFs) and its state directory.
    struct Node {
        fake: sriov_pci_fake::FakeSysfs,
        state: tempfile::TempDir,
    }

    const NAME: &str = "worker.domain/10G";

    impl Node {
        fn new() -> Self {
            Self {
                fake: sriov_pci_fake::fixtures::x710_2port(sriov_pci_fake::FakeSysfs::builder())
                    .build()
                    .unwrap(),
                state: tempfile::tempdir().unwrap(),
            }
        }

        /// Opens the pool on what the state directory holds, as a restart does.
        fn open(&self) -> crate::Pool {
            let sysfs = self.fake.sysfs();
            let entries = vec![crate::PfEntry {
                pf: sysfs
                    .physical_function("0000:3b:00.0".parse().unwrap())
                    .unwrap(),
                names: vec![NAME.into()],
                vf_kernel_driver: "iavf".into(),
            }];
            let store = crate::FileStore::in_dir(self.state.path()).unwrap();
            crate::Pool::open(entries, store, &sysfs, crate::system_clock())
                .unwrap()
                .0
        }

        /// The tokens a restart would read as allocated (snapshot and journal).
        fn on_disk(&self) -> Vec<String> {
            let mut a: Vec<String> = crate::FileStore::read_tokens(self.state.path())
                .unwrap()
                .into_iter()
                .filter(|t| t.state == TokenState::Allocated)
                .map(|t| t.id)
                .collect();
            a.sort();
            a
        }

        fn journal(&self) -> String {
            String::from_utf8(read(&self.state.path().join(JOURNAL_FILE)).unwrap()).unwrap()
        }
    }

    fn ids(pool: &crate::Pool) -> Vec<String> {
        let mut ids: Vec<String> = pool.tokens().unwrap().into_iter().map(|t| t.id).collect();
        ids.sort();
        ids
    }

    fn allocated(pool: &crate::Pool) -> Vec<String> {
        let mut a: Vec<String> = pool
            .tokens()
            .unwrap()
            .into_iter()
            .filter(|t| t.state == TokenState::Allocated)
            .map(|t| t.id)
            .collect();
        a.sort();
        a
    }

    /// One change refused by `fault`, the next accepted; a restart reads
    /// back exactly the acknowledged ones.
    fn refused_then_recovered(fault: Fault) {
        let node = Node::new();
        let pool = node.open();
        let ids = ids(&pool);
        pool.allocate(NAME, &ids[0..1]).unwrap();

        faults::arm(fault);
        let e = pool.allocate(NAME, &ids[1..2]).unwrap_err();
        let path = node.state.path().join(JOURNAL_FILE);
        assert!(
            e.to_string().contains(&path.display().to_string()),
            "names the journal: {e}"
        );
        assert_eq!(
            allocated(&pool),
            ids[0..1],
            "the refused change left memory"
        );

        pool.allocate(NAME, &ids[2..3]).unwrap();
        let journal = node.journal();
        assert_eq!(
            journal.lines().count(),
            2,
            "the whole state, then the change"
        );
        assert!(
            !node.on_disk().contains(&ids[1]),
            "the refused line is gone: {journal}"
        );
        let mut acknowledged = vec![ids[0].clone(), ids[2].clone()];
        acknowledged.sort();
        assert_eq!(allocated(&pool), acknowledged);
        pool.allocate(NAME, &ids[3..4]).unwrap();
        acknowledged.push(ids[3].clone());
        acknowledged.sort();
        drop(pool);

        let again = node.open();
        assert_eq!(allocated(&again), acknowledged);
    }

    #[test]
    fn a_failed_sync_refuses_the_change_and_the_next_one_rewrites_the_journal() {
        refused_then_recovered(Fault::Sync);
    }

    #[test]
    fn a_failed_write_refuses_the_change_and_the_next_one_rewrites_the_journal() {
        refused_then_recovered(Fault::Write);
    }

    /// A Request's use and records are written as it goes and synced once,
    /// before its answer; each is in the file (for a restarted process) as
    /// soon as its call returns.
    #[test]
    fn a_requests_records_are_written_as_it_goes_and_synced_once() {
        let node = Node::new();
        let pool = node.open();
        let ids = ids(&pool);
        pool.allocate(NAME, &ids[0..1]).unwrap();
        let before = pool.journal_syncs();
        pool.use_token(&ids[0], crate::DriverKind::Kernel, "conn-1", u64::MAX)
            .unwrap();
        for step in ["bound", "moving", "moved"] {
            assert!(
                pool.record_undo("conn-1", Some(serde_json::json!({ "step": step })))
                    .unwrap()
            );
        }
        assert_eq!(pool.journal_syncs(), before, "nothing synced yet");
        let journal = node.journal();
        assert!(
            journal.contains("conn-1") && journal.contains("\"moved\""),
            "written before the calls returned: {journal}"
        );
        pool.sync_use("conn-1").unwrap();
        assert_eq!(pool.journal_syncs(), before + 1, "one sync for them all");
        pool.sync_use("conn-1").unwrap();
        assert!(pool.journal_syncs() <= before + 2);
        // Closing is acknowledged by its own sync.
        let synced = pool.journal_syncs();
        pool.unuse("conn-1").unwrap();
        assert_eq!(pool.journal_syncs(), synced + 1);
    }

    /// The one sync failing refuses the Request's use and records together:
    /// they leave memory, a later record of the connection finds no use
    /// (so its host change is not made), and a restart reads none of it.
    #[test]
    fn a_failed_sync_at_the_answer_refuses_the_whole_request() {
        let node = Node::new();
        let pool = node.open();
        let ids = ids(&pool);
        pool.allocate(NAME, &ids[0..1]).unwrap();
        pool.use_token(&ids[0], crate::DriverKind::Kernel, "conn-1", u64::MAX)
            .unwrap();
        assert!(
            pool.record_undo("conn-1", Some(serde_json::json!({})))
                .unwrap()
        );
        faults::arm(Fault::Sync);
        let e = pool.sync_use("conn-1").unwrap_err();
        assert!(
            e.to_string().contains(JOURNAL_FILE),
            "names the journal: {e}"
        );
        assert!(!pool.holds("conn-1"), "the use left memory");
        assert!(!pool.record_undo("conn-1", None).unwrap());
        let e = pool.sync_use("conn-1").unwrap_err();
        assert!(e.to_string().contains("no longer recorded"), "{e}");
        assert_eq!(allocated(&pool), ids[0..1], "the token is the pod's again");
        // The next acknowledged change rewrites the journal without them.
        pool.allocate(NAME, &ids[1..2]).unwrap();
        drop(pool);
        let again = node.open();
        assert!(!again.holds("conn-1"));
        assert_eq!(allocated(&again), ids[0..2]);
    }

    #[test]
    fn a_failed_rewrite_refuses_that_change_too_and_the_next_one_tries_again() {
        let node = Node::new();
        let pool = node.open();
        let ids = ids(&pool);
        pool.allocate(NAME, &ids[0..1]).unwrap();
        faults::arm(Fault::Sync);
        pool.allocate(NAME, &ids[1..2]).unwrap_err();
        faults::arm(Fault::Rewrite);
        let e = pool.allocate(NAME, &ids[2..3]).unwrap_err();
        assert!(e.to_string().contains("could not be rewritten"), "{e}");
        assert!(e.to_string().contains(JOURNAL_FILE), "{e}");
        assert_eq!(allocated(&pool), ids[0..1]);
        // A crash now reads the old file, refused line and all (like a crash
        // before any answer): only a rewrite makes it go.
        assert!(node.on_disk().contains(&ids[1]));

        pool.allocate(NAME, &ids[3..4]).unwrap();
        drop(pool);
        let again = node.open();
        let mut acknowledged = vec![ids[0].clone(), ids[3].clone()];
        acknowledged.sort();
        assert_eq!(allocated(&again), acknowledged);
    }

    #[test]
    fn a_change_worked_out_from_refused_ones_is_refused_and_the_next_one_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(JOURNAL_FILE);
        let j = Journal::open_empty(&path).unwrap();
        let mut state = State::default();
        // Acknowledged.
        let mut next = state.clone();
        next.tokens
            .insert("t1".into(), token("t1", TokenState::Allocated));
        let (s1, _) = {
            let d = delta(&state, &next);
            j.append(&mut state, d)
        }
        .unwrap();
        state = next;
        j.durable(s1).unwrap();
        // Written and applied, then its sync fails; its committer has not
        // taken it out yet when the next change, built on it, comes.
        let mut next = state.clone();
        next.tokens
            .insert("t2".into(), token("t2", TokenState::Allocated));
        let (s2, _) = {
            let d = delta(&state, &next);
            j.append(&mut state, d)
        }
        .unwrap();
        state = next;
        faults::arm(Fault::Sync);
        assert!(j.durable(s2).is_err());
        let mut next = state.clone();
        next.tokens.get_mut("t2").unwrap().state = TokenState::Free;
        let e = {
            let d = delta(&state, &next);
            j.append(&mut state, d)
        }
        .unwrap_err();
        assert!(e.to_string().contains("ask again"), "{e}");
        assert!(
            !state.tokens.contains_key("t2"),
            "the refused change left memory"
        );
        assert!(!j.revert(&mut state), "nothing left to take out");
        // The journal is healthy again.
        let mut next = state.clone();
        next.tokens
            .insert("t3".into(), token("t3", TokenState::Free));
        let (s3, _) = {
            let d = delta(&state, &next);
            j.append(&mut state, d)
        }
        .unwrap();
        state = next;
        j.durable(s3).unwrap();
        assert!(
            j.durable(s2).is_err(),
            "a refused change never turns durable"
        );
        // Replayed over a snapshot older than all of it (say, with a t0
        // since removed), the file gives the acknowledged state only.
        let mut back = State::default();
        back.tokens
            .insert("t0".into(), token("t0", TokenState::Free));
        replay(&mut back, &read(&path).unwrap()).unwrap();
        assert_eq!(back, state);
    }
}
