//! The pool: tokens per PF and name, their states, and VF selection.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

use sriov_deviceplugin::Device;
use sriov_pci::{PciAddress, PhysicalFunction, Sysfs};
use tokio::sync::watch;

use crate::error::PoolError;
use crate::journal::Journal;
use crate::state::{AllocBinding, DriverKind, State, Token, TokenState, VfUse};
use crate::store::{FileStore, LoadNote};

mod health;
pub(crate) mod layout;
pub(crate) mod observe;

use layout::Layout;

/// Prefix of token IDs; NSM clients check it (`sriov-` + UUID, as the Go pool makes them).
pub const TOKEN_PREFIX: &str = "sriov-";

/// A clock returning Unix seconds (injectable for expiry tests).
pub type Clock = Arc<dyn Fn() -> u64 + Send + Sync>;

/// The system clock.
pub fn system_clock() -> Clock {
    Arc::new(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    })
}

/// A PF to pool and the names (`serviceDomain/capability`) it serves.
#[derive(Debug, Clone)]
pub struct PfEntry {
    /// The PF and its VFs, as discovery found them.
    pub pf: PhysicalFunction,
    /// Resource names served by this PF's VFs.
    pub names: Vec<String>,
    /// The VFs' kernel driver (`vfKernelDriver`), for recovery checks.
    pub vf_kernel_driver: String,
}

#[derive(Debug, Clone)]
struct VfInfo {
    address: PciAddress,
    iommu_group: Option<u32>,
}

#[derive(Debug, Clone)]
struct PfInfo {
    numa_node: Option<u32>,
    vfs: Vec<VfInfo>,
    names: Vec<String>,
}

/// A VF handed to a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VfLease {
    /// The token used.
    pub token: String,
    /// The resource name of the token.
    pub name: String,
    /// The VF's PF.
    pub pf: PciAddress,
    /// The VF.
    pub vf: PciAddress,
    /// The VF's IOMMU group.
    pub iommu_group: Option<u32>,
    /// The driver kind it is to be used with.
    pub kind: DriverKind,
    /// The undo record stored with [`Pool::record_undo`], when this lease
    /// continues a use recorded earlier (a refresh, or the first request
    /// after a restart).
    pub undo: Option<Arc<serde_json::Value>>,
    /// Whether the VF was bound to the token at kubelet's Allocate, so the
    /// pod's containers were given its `/dev/vfio` nodes when created and
    /// nothing needs granting at Request time.
    pub bound_at_allocate: bool,
}

/// A token's VF as [`Pool::bind_at_allocate`] recorded it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllocateBinding {
    /// The token.
    pub token: String,
    /// Its VF and the driver the VF goes back to.
    pub binding: AllocBinding,
    /// Whether a connection uses the VF right now (a token kubelet allocates
    /// again before pod-resources showed its old pod gone): its driver must
    /// not be touched.
    pub in_use: bool,
}

/// Tokens, their states, and the VFs in use; shared (`Arc`) and thread-safe.
///
/// Every change is persisted (atomically) before it is acknowledged, and
/// published to subscribers: the per-name device lists that
/// `ListAndWatch` streams, and a change counter.
pub struct Pool {
    /// The PFs served, each pooled VF's IOMMU group (looked up on every
    /// token use) and each PF's `vfKernelDriver` (the one record of it,
    /// read by the chain's bind and by every undo that gives a VF back).
    /// Replaced whole, under the state lock, by [`Pool::reconfigure`].
    layout: RwLock<Arc<Layout>>,
    state: Mutex<State>,
    store: FileStore,
    journal: Journal,
    clock: Clock,
    lists: RwLock<BTreeMap<String, watch::Sender<Vec<Device>>>>,
    changes: watch::Sender<u64>,
    /// Connections whose token no pod holds any more (kubelet's
    /// pod-resources said so): theirs to close by the forwarder. In memory
    /// only: after a restart kubelet says it again.
    abandoned: Mutex<std::collections::BTreeSet<String>>,
    /// Set when VFIO access is only given at Allocate (cgroup v2): why, for
    /// the refusal of a VFIO use of a token bound to no VF.
    vfio_only_at_allocate: Option<String>,
    /// Unhealthy VFs, as the forwarder's health follower last said (`health.rs`).
    health: health::VfHealth,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("pfs", &self.layout().pfs.keys().collect::<Vec<_>>())
            .field("store", &self.store)
            .finish()
    }
}

impl Pool {
    /// Opens the pool: loads the state file (a missing one is a first
    /// start; a corrupt one is an error unless the store resets), makes the tokens match the configuration (as many per
    /// PF and name as the PF has VFs; existing IDs are kept, since pods hold
    /// them), and reconciles VFs recorded in use against sysfs. Returns the
    /// pool and warnings for the caller to log.
    pub fn open(
        entries: Vec<PfEntry>,
        store: FileStore,
        sysfs: &Sysfs,
        clock: Clock,
    ) -> Result<(Self, Vec<String>), PoolError> {
        let mut warnings = Vec::new();
        let persist_err = |source| PoolError::Persist {
            path: store.path().to_path_buf(),
            cause: source,
        };
        let (mut state, note) = store.load()?;
        match note {
            LoadNote::Reset { moved_to, reason } => warnings.push(format!(
                "pool state {} was unreadable ({reason}); reset as asked: moved to {} and \
                 starting empty",
                store.path().display(),
                moved_to.display()
            )),
            LoadNote::AfterReboot {
                uses_dropped,
                journal_cut_at,
            } => {
                warnings.push(format!(
                    "pool state {} was written before the node rebooted: the {uses_dropped} \
                     connection uses it recorded were dropped, with the host changes they \
                     recorded (gone with the boot); their tokens stay allocated",
                    store.path().display()
                ));
                if let Some(line) = journal_cut_at {
                    warnings.push(format!(
                        "pool journal {} ended at line {line}, which does not parse: written \
                         but not synced before the reboot; the lines from there on were dropped",
                        store.journal_path().display()
                    ));
                }
            }
            LoadNote::Fresh | LoadNote::Loaded => {}
        }
        state.boot = store.boot().map(str::to_owned);
        let mut layout = Layout::configured(&entries);
        shape_tokens(&mut state, &layout.pfs, &mut warnings);
        layout.keep_held(&state, sysfs, None);
        let now = clock();
        reconcile_uses(&mut state, &layout, sysfs, now, None, &mut warnings);
        state.compact();
        // A fresh snapshot holds everything; the journal starts empty.
        store.save(&state).map_err(persist_err)?;
        let journal =
            Journal::open_empty(&store.journal_path()).map_err(|source| PoolError::Persist {
                path: store.journal_path(),
                cause: source,
            })?;

        let lists = layout
            .names()
            .into_iter()
            .map(|n| {
                let devices = health::device_list(&state, &layout.pfs, &Default::default(), &n);
                (n, watch::Sender::new(devices))
            })
            .collect();
        let pool = Self {
            layout: RwLock::new(Arc::new(layout)),
            state: Mutex::new(state),
            store,
            journal,
            clock,
            lists: RwLock::new(lists),
            changes: watch::Sender::new(0),
            abandoned: Mutex::default(),
            vfio_only_at_allocate: None,
            health: Default::default(),
        };
        Ok((pool, warnings))
    }

    /// VFIO access is given only at kubelet's Allocate on this node, for the
    /// reason `why` (its cgroup mode): a VFIO use of a token bound to no VF
    /// at Allocate is refused with [`PoolError::NotBoundAtAllocate`].
    pub fn with_vfio_only_at_allocate(mut self, why: impl Into<String>) -> Self {
        self.vfio_only_at_allocate = Some(why.into());
        self
    }

    /// Fixes a VF to each of `ids` (tokens of `name` that kubelet's Allocate
    /// has just allocated), recorded before anything is bound: the caller
    /// then binds each to vfio-pci and returns its nodes to kubelet. A
    /// token bound earlier keeps its VF. `driver_of` reads a VF's current
    /// driver, recorded as the one it goes back to. All or none: on error
    /// nothing is recorded.
    pub fn bind_at_allocate(
        &self,
        name: &str,
        ids: &[String],
        driver_of: &dyn Fn(PciAddress) -> Option<String>,
    ) -> Result<Vec<AllocateBinding>, PoolError> {
        let guard = self.lock()?;
        let mut next = guard.clone();
        let mut out = Vec::new();
        for id in ids {
            let tok = next
                .tokens
                .get(id)
                .ok_or_else(|| PoolError::UnknownToken(id.clone()))?
                .clone();
            if tok.name != name {
                return Err(PoolError::WrongName {
                    token: id.clone(),
                    actual: tok.name.clone(),
                    requested: name.to_string(),
                });
            }
            if !tok.reserves() {
                return Err(PoolError::NotAllocated(id.clone()));
            }
            let in_use = matches!(tok.state, TokenState::InUse(_));
            let binding = match (&tok.bound, &tok.state) {
                (Some(b), _) => AllocBinding::clone(b),
                // A use that started before binding at Allocate was on: its VF.
                (None, TokenState::InUse(u)) => AllocBinding {
                    vf: u.vf,
                    previous_driver: self.vf_kernel_driver(tok.pf),
                },
                (None, _) => {
                    let vf = self.pick_vf(&next, &tok, DriverKind::Vfio)?;
                    let previous_driver = match driver_of(vf) {
                        // A VF left on vfio-pci goes home to its kernel driver.
                        Some(d) if d == "vfio-pci" => self.vf_kernel_driver(tok.pf),
                        other => other,
                    };
                    AllocBinding {
                        vf,
                        previous_driver,
                    }
                }
            };
            if let Some(t) = next.tokens.get_mut(id) {
                t.bound = Some(Box::new(binding.clone()));
            }
            out.push(AllocateBinding {
                token: id.clone(),
                binding,
                in_use,
            });
        }
        self.commit(guard, next)?;
        Ok(out)
    }

    /// The VF bound to token `id` at Allocate, if any.
    pub fn binding(&self, id: &str) -> Result<Option<AllocBinding>, PoolError> {
        Ok(self
            .lock()?
            .tokens
            .get(id)
            .and_then(|t| t.bound.as_deref().cloned()))
    }

    /// Forgets the Allocate binding of token `id` once its VF is back on its
    /// driver; false when it had none or a connection still uses the VF
    /// (the binding stays until that connection closes).
    pub fn forget_binding(&self, id: &str) -> Result<bool, PoolError> {
        let guard = self.lock()?;
        let Some(tok) = guard.tokens.get(id) else {
            return Ok(false);
        };
        if tok.bound.is_none() || matches!(tok.state, TokenState::InUse(_)) {
            return Ok(false);
        }
        let cleared = Token {
            bound: None,
            ..tok.clone()
        };
        self.commit_changes(
            guard,
            BTreeMap::from([(id.to_string(), Some(cleared))]),
            Reach::Disk,
        )?;
        Ok(true)
    }

    /// The kernel driver PF `pf`'s VFs go back to (`vfKernelDriver`), if
    /// the PF is pooled.
    pub fn vf_kernel_driver(&self, pf: PciAddress) -> Option<String> {
        self.layout().kernel_drivers.get(&pf).cloned()
    }

    /// Resource names (`serviceDomain/capability`) the pool serves.
    pub fn names(&self) -> Vec<String> {
        self.read_lists().keys().cloned().collect()
    }

    /// A snapshot of every token.
    pub fn tokens(&self) -> Result<Vec<Token>, PoolError> {
        Ok(self.lock()?.tokens.values().cloned().collect())
    }

    /// The device list of one name, as `ListAndWatch` streams it.
    pub fn devices(&self, name: &str) -> Option<watch::Receiver<Vec<Device>>> {
        self.read_lists().get(name).map(watch::Sender::subscribe)
    }

    /// The layout now; operations holding the state lock see it unchanged.
    fn layout(&self) -> Arc<Layout> {
        self.layout
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn set_layout(&self, layout: Layout) {
        *self
            .layout
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(layout);
    }

    fn read_lists(&self) -> RwLockReadGuard<'_, BTreeMap<String, watch::Sender<Vec<Device>>>> {
        self.lists
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write_lists(&self) -> RwLockWriteGuard<'_, BTreeMap<String, watch::Sender<Vec<Device>>>> {
        self.lists
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A counter bumped on every change.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    fn lock(&self) -> Result<MutexGuard<'_, State>, PoolError> {
        self.state.lock().map_err(|_| PoolError::Poisoned)
    }

    /// Makes `next` current once its change is in the journal, then waits,
    /// without the lock, until that line is on disk (group commit: one sync
    /// serves every change written before it); [`Reach::File`] callers
    /// skip the wait. A change that cannot be
    /// written or synced is refused and leaves memory again; the next one
    /// rewrites the journal whole (see [`crate::journal`]).
    fn commit(&self, guard: MutexGuard<'_, State>, next: State) -> Result<(), PoolError> {
        let changed = crate::journal::delta(&guard, &next);
        self.commit_changes(guard, changed, Reach::Disk)
    }

    /// [`Pool::commit`] for callers that know which tokens they change, so
    /// the state is not copied for a change of one token (most of a
    /// Request's: its use, its undo records, its refresh).
    fn commit_changes(
        &self,
        mut guard: MutexGuard<'_, State>,
        changed: BTreeMap<String, Option<Token>>,
        reach: Reach,
    ) -> Result<(), PoolError> {
        if changed.is_empty() {
            return Ok(());
        }
        let persist_err = |path: std::path::PathBuf| {
            move |source| PoolError::Persist {
                path,
                cause: source,
            }
        };
        // Kubelet's lists change only when a token starts or stops reserving
        // a VF (not for undo records or refreshes, most of a Request's changes).
        let lists_move = changed.iter().any(|(id, t)| {
            guard.tokens.get(id).map(Token::reserves) != t.as_ref().map(Token::reserves)
        });
        let (seq, compact) = match self.journal.append(&mut guard, changed.clone()) {
            Ok(appended) => appended,
            Err(source) => {
                // Rewriting a failed journal may have taken refused changes out.
                self.publish(&guard, true);
                return Err(persist_err(self.store.journal_path())(source));
            }
        };
        sriov_failpoint::hit("store.after-append");
        for (id, t) in changed {
            match t {
                Some(t) => guard.tokens.insert(id, t),
                None => guard.tokens.remove(&id),
            };
        }
        // The line is written either way: a failed compaction is tried again
        // at the next change, and a failed truncation fails the sync below.
        if compact
            && let Err(e) = self
                .store
                .save(&guard)
                .and_then(|()| self.journal.truncate())
        {
            tracing::warn!(state = %self.store.path().display(), error = %e, "folding the journal into the snapshot");
        }
        self.publish(&guard, lists_move);
        drop(guard);
        match reach {
            Reach::Disk => self.durable(seq),
            Reach::File => Ok(()),
        }
    }

    /// Waits, without the lock, until journal line `seq` is on disk.
    fn durable(&self, seq: u64) -> Result<(), PoolError> {
        self.journal.durable(seq).map_err(|source| {
            // Refused: the change leaves memory, with those written after it.
            if let Ok(mut guard) = self.lock()
                && self.journal.revert(&mut guard)
            {
                self.publish(&guard, true);
            }
            PoolError::Persist {
                path: self.store.journal_path(),
                cause: source,
            }
        })
    }

    /// The journal's `fdatasync`s so far.
    #[cfg(test)]
    pub(crate) fn journal_syncs(&self) -> u64 {
        self.journal.syncs()
    }

    /// Makes every change written for `connection` so far durable: what a
    /// Request calls once, before its answer, after [`Pool::use_token`] and
    /// [`Pool::record_undo`] only wrote theirs (written, not synced). An error
    /// when the journal refused them (its use has left memory then, and the
    /// caller undoes what it made).
    pub fn sync_use(&self, connection: &str) -> Result<(), PoolError> {
        let seq = {
            let guard = self.lock()?;
            let held = guard
                .tokens
                .values()
                .any(|t| matches!(&t.state, TokenState::InUse(u) if u.connection == connection));
            if !held {
                return Err(PoolError::Persist {
                    path: self.store.journal_path(),
                    cause: std::io::Error::other(format!(
                        "the use of connection {connection} is no longer recorded (the journal \
                         refused it)"
                    )),
                });
            }
            self.journal.written()
        };
        self.durable(seq)
    }

    /// Tells subscribers the state changed: kubelet's lists too when
    /// `lists_move`.
    fn publish(&self, state: &State, lists_move: bool) {
        let layout = self.layout();
        // A name a reload is removing keeps its list until then, unchanged.
        let served = |name: &str| {
            layout
                .pfs
                .values()
                .any(|p| p.names.iter().any(|n| n == name))
        };
        for (name, tx) in self
            .read_lists()
            .iter()
            .filter(|(name, _)| lists_move && served(name))
        {
            let list = health::device_list(state, &layout.pfs, &self.health, name);
            tx.send_if_modified(|cur| {
                if *cur == list {
                    false
                } else {
                    *cur = list;
                    true
                }
            });
        }
        self.changes.send_modify(|c| *c += 1);
    }

    /// Applies `change` to the use of `connection`; false when it has none.
    fn change_use(
        &self,
        connection: &str,
        reach: Reach,
        change: impl Fn(&mut VfUse),
    ) -> Result<bool, PoolError> {
        let guard = self.lock()?;
        let mut changed = BTreeMap::new();
        for t in guard.tokens.values() {
            if let TokenState::InUse(u) = &t.state
                && u.connection == connection
            {
                let mut t = t.clone();
                if let TokenState::InUse(u) = &mut t.state {
                    change(u);
                }
                changed.insert(t.id.clone(), Some(t));
            }
        }
        let found = !changed.is_empty();
        self.commit_changes(guard, changed, reach)?;
        Ok(found)
    }

    /// Kubelet's Allocate: marks the tokens allocated, all or none.
    ///
    /// A token already allocated stays so (kubelet may hand a device it
    /// believes free to a new pod before pod-resources has shown the old
    /// pod gone). A free token needs room on its PF: a VF that no other
    /// allocated token of any name reserves.
    pub fn allocate(&self, name: &str, ids: &[String]) -> Result<(), PoolError> {
        let guard = self.lock()?;
        let mut next = guard.clone();
        for id in ids {
            let tok = next
                .tokens
                .get(id)
                .ok_or_else(|| PoolError::UnknownToken(id.clone()))?;
            if tok.name != name {
                return Err(PoolError::WrongName {
                    token: id.clone(),
                    actual: tok.name.clone(),
                    requested: name.to_string(),
                });
            }
            if tok.reserves() {
                continue;
            }
            let pf = tok.pf;
            let capacity = self.layout().pfs.get(&pf).map_or(0, |p| p.vfs.len());
            let reserved = next
                .tokens
                .values()
                .filter(|t| t.pf == pf && t.reserves())
                .count();
            if reserved >= capacity {
                return Err(PoolError::Exhausted {
                    token: id.clone(),
                    pf,
                    reason: format!("{reserved} of {capacity} VFs reserved"),
                });
            }
            if let Some(t) = next.tokens.get_mut(id) {
                t.state = TokenState::Allocated;
            }
        }
        self.commit(guard, next)
    }

    /// IDs counted as held by pods (allocated or in use).
    pub fn allocated(&self, name: &str) -> Result<Vec<String>, PoolError> {
        Ok(self
            .lock()?
            .tokens
            .values()
            .filter(|t| t.name == name && t.reserves())
            .map(|t| t.id.clone())
            .collect())
    }

    /// No pod holds these tokens any more: allocated ones become free.
    /// In-use ones stay until their connection closes (the pod's namespace
    /// is gone, but the forwarder still has to take the VF back); their
    /// connections are listed by [`Pool::abandoned`] for the forwarder to
    /// close. Unknown and free IDs are ignored, so release is idempotent.
    pub fn release(&self, ids: &[String]) -> Result<(), PoolError> {
        let guard = self.lock()?;
        let mut next = guard.clone();
        let mut changed = false;
        let mut abandoned = Vec::new();
        for id in ids {
            match next.tokens.get_mut(id) {
                // Its VF is still on vfio-pci from Allocate: the resource
                // gives it back first (`forget_binding`), then frees it.
                Some(t) if t.state == TokenState::Allocated && t.bound.is_some() => {}
                Some(t) if t.state == TokenState::Allocated => {
                    t.state = TokenState::Free;
                    changed = true;
                }
                Some(Token {
                    state: TokenState::InUse(u),
                    ..
                }) => abandoned.push(u.connection.clone()),
                _ => {}
            }
        }
        if !abandoned.is_empty()
            && let Ok(mut a) = self.abandoned.lock()
        {
            a.extend(abandoned);
        }
        if changed {
            self.commit(guard, next)?;
        }
        Ok(())
    }

    /// A Request's resource selection: picks a VF of the token's PF for
    /// `connection`, to be used with `kind`, until `expires_at` (Unix
    /// seconds) unless refreshed.
    ///
    /// The same connection asking again gets the same VF (a refresh). The
    /// choice is deterministic: a free VF whose IOMMU group holds no VF used
    /// with the other driver kind (vfio-pci and a kernel driver cannot share
    /// a group), preferring groups already used with this kind, then the
    /// lowest VF index.
    ///
    /// The use is written to the journal, not yet synced (a restarted
    /// process reads it; see the crate's journal docs):
    /// the Request syncs once, with [`Pool::sync_use`], before its answer.
    pub fn use_token(
        &self,
        token: &str,
        kind: DriverKind,
        connection: &str,
        expires_at: u64,
    ) -> Result<VfLease, PoolError> {
        let guard = self.lock()?;
        let tok = guard
            .tokens
            .get(token)
            .ok_or_else(|| PoolError::UnknownToken(token.to_string()))?
            .clone();
        match &tok.state {
            TokenState::Free => return Err(PoolError::NotAllocated(token.to_string())),
            TokenState::InUse(u) if u.connection != connection => {
                return Err(PoolError::InUse {
                    token: token.to_string(),
                    connection: u.connection.clone(),
                });
            }
            TokenState::InUse(u) if u.kind == kind => {
                let lease = self.lease(&tok, u.vf, kind);
                let mut again = tok.clone();
                if let TokenState::InUse(u) = &mut again.state {
                    u.expires_at = expires_at;
                }
                self.commit_changes(
                    guard,
                    BTreeMap::from([(again.id.clone(), Some(again))]),
                    Reach::File,
                )?;
                return Ok(lease);
            }
            _ => {}
        }
        let pick = match &tok.bound {
            Some(b) => self.check_bound(&guard, &tok, b.vf, kind)?,
            None => {
                if kind == DriverKind::Vfio
                    && let Some(why) = &self.vfio_only_at_allocate
                {
                    return Err(PoolError::NotBoundAtAllocate {
                        token: token.to_string(),
                        why: why.clone(),
                    });
                }
                self.pick_vf(&guard, &tok, kind)?
            }
        };
        let used = Token {
            state: TokenState::InUse(Box::new(VfUse {
                vf: pick,
                kind,
                connection: connection.to_string(),
                expires_at,
                undo: None,
                kernel_driver: self.vf_kernel_driver(tok.pf),
            })),
            ..tok.clone()
        };
        self.commit_changes(
            guard,
            BTreeMap::from([(used.id.clone(), Some(used))]),
            Reach::File,
        )?;
        Ok(self.lease(&tok, pick, kind))
    }

    /// Connections still using a VF whose token no pod holds any more (see
    /// [`Pool::release`]); ones that ended since are forgotten.
    pub fn abandoned(&self) -> Vec<String> {
        // Never the abandoned lock while taking the state lock: `release`
        // takes them the other way round.
        let listed: Vec<String> = match self.abandoned.lock() {
            Ok(a) => a.iter().cloned().collect(),
            Err(_) => return Vec::new(),
        };
        let (live, ended): (Vec<String>, Vec<String>) =
            listed.into_iter().partition(|c| self.holds(c));
        if let Ok(mut a) = self.abandoned.lock() {
            for c in &ended {
                a.remove(c);
            }
        }
        live
    }

    /// Whether `connection` holds a VF (a use recorded, perhaps by the
    /// process before a restart).
    pub fn holds(&self, connection: &str) -> bool {
        self.lock().is_ok_and(|g| {
            g.tokens
                .values()
                .any(|t| matches!(&t.state, TokenState::InUse(u) if u.connection == connection))
        })
    }

    /// The VF `connection` holds, with its undo record, if it holds one.
    pub fn lease_of(&self, connection: &str) -> Result<Option<VfLease>, PoolError> {
        let guard = self.lock()?;
        Ok(guard.tokens.values().find_map(|t| match &t.state {
            TokenState::InUse(u) if u.connection == connection => Some(self.lease(t, u.vf, u.kind)),
            _ => None,
        }))
    }

    /// Every recorded use: its connection and lease (with its undo record).
    pub fn uses(&self) -> Result<Vec<(String, VfLease)>, PoolError> {
        let guard = self.lock()?;
        Ok(guard
            .tokens
            .values()
            .filter_map(|t| match &t.state {
                TokenState::InUse(u) => Some((u.connection.clone(), self.lease(t, u.vf, u.kind))),
                _ => None,
            })
            .collect())
    }

    /// Extends the use of a connection's VF.
    pub fn refresh(&self, connection: &str, expires_at: u64) -> Result<bool, PoolError> {
        self.change_use(connection, Reach::Disk, |u| u.expires_at = expires_at)
    }

    /// Close: the connection's VF is free again and its token goes back to
    /// allocated (the pod still holds it). Returns what was released;
    /// `None` when the connection held nothing (Close is idempotent).
    pub fn unuse(&self, connection: &str) -> Result<Option<VfLease>, PoolError> {
        let guard = self.lock()?;
        let Some(tok) = guard
            .tokens
            .values()
            .find(|t| matches!(&t.state, TokenState::InUse(u) if u.connection == connection))
            .cloned()
        else {
            return Ok(None);
        };
        let TokenState::InUse(u) = &tok.state else {
            return Ok(None);
        };
        let lease = self.lease(&tok, u.vf, u.kind);
        let freed = Token {
            state: TokenState::Allocated,
            ..tok.clone()
        };
        self.commit_changes(
            guard,
            BTreeMap::from([(tok.id.clone(), Some(freed))]),
            Reach::Disk,
        )?;
        Ok(Some(lease))
    }

    /// Releases recorded uses that no live connection holds and whose VF is
    /// gone, or expired and visibly back with the forwarder. Unlike at
    /// start, a use that is not expired stays even when its VF looks idle:
    /// it may be a Request in flight that has taken its token and not yet
    /// bound or moved its VF. The forwarder runs this periodically, so a
    /// use recovered after a restart that nobody refreshes is not leaked.
    /// Returns a line per released use.
    pub fn sweep(
        &self,
        sysfs: &Sysfs,
        is_live: &dyn Fn(&str) -> bool,
    ) -> Result<Vec<String>, PoolError> {
        let guard = self.lock()?;
        let layout = self.layout();
        let uses = uses_to_release(&guard, &layout, sysfs, (self.clock)(), Some(is_live));
        // It runs every poll: the state (a copy per token) is copied only
        // when something is to change.
        if uses.is_empty() && !layout::any_unserved(&guard, &layout) {
            return Ok(Vec::new());
        }
        let mut next = guard.clone();
        // Tokens of what the config no longer names, once nothing holds them.
        let mut released = layout::prune_unserved(&mut next, &layout);
        release_uses(&mut next, uses, &mut released);
        if !released.is_empty() {
            self.commit(guard, next)?;
        }
        Ok(released)
    }

    /// Uses whose expiry has passed (for the forwarder to close).
    pub fn expired(&self) -> Result<Vec<(String, VfLease)>, PoolError> {
        let now = (self.clock)();
        Ok(self
            .lock()?
            .tokens
            .values()
            .filter_map(|t| match &t.state {
                TokenState::InUse(u) if u.expires_at <= now => {
                    Some((u.connection.clone(), self.lease(t, u.vf, u.kind)))
                }
                _ => None,
            })
            .collect())
    }

    /// VFs other tokens hold (in use, or bound at Allocate) and the driver
    /// kind each IOMMU group is used with (a bound VF is on vfio-pci).
    fn taken(
        &self,
        state: &State,
        token: &str,
    ) -> (BTreeSet<PciAddress>, BTreeMap<u32, DriverKind>) {
        let mut busy = BTreeSet::new();
        let mut group_kinds: BTreeMap<u32, DriverKind> = BTreeMap::new();
        for t in state.tokens.values().filter(|t| t.id != token) {
            if let TokenState::InUse(u) = &t.state {
                busy.insert(u.vf);
                if let Some(g) = self.group_of(u.vf) {
                    group_kinds.insert(g, u.kind);
                }
            } else if let Some(b) = &t.bound {
                busy.insert(b.vf);
                if let Some(g) = self.group_of(b.vf) {
                    group_kinds.insert(g, DriverKind::Vfio);
                }
            }
        }
        (busy, group_kinds)
    }

    /// A free VF of the token's PF for `kind`, chosen deterministically: not
    /// held by another token, in an IOMMU group not used with the other
    /// driver kind (vfio-pci and a kernel driver cannot share a group),
    /// preferring groups already used with this kind, then the lowest address.
    fn pick_vf(
        &self,
        state: &State,
        tok: &Token,
        kind: DriverKind,
    ) -> Result<PciAddress, PoolError> {
        let layout = self.layout();
        let pf = layout
            .pfs
            .get(&tok.pf)
            .ok_or_else(|| PoolError::Exhausted {
                token: tok.id.clone(),
                pf: tok.pf,
                reason: "PF is not configured".into(),
            })?;
        if !layout.serves(tok.pf, &tok.name) {
            return Err(PoolError::Exhausted {
                token: tok.id.clone(),
                pf: tok.pf,
                reason: format!("the PF no longer serves {}", tok.name),
            });
        }
        let (busy, group_kinds) = self.taken(state, &tok.id);
        pf.vfs
            .iter()
            .filter(|v| !busy.contains(&v.address))
            // A Request is never handed a VF known to be broken.
            .filter(|v| self.health.is_healthy(v.address))
            .filter(|v| {
                v.iommu_group
                    .and_then(|g| group_kinds.get(&g))
                    .is_none_or(|k| *k == kind)
            })
            .min_by_key(|v| {
                let shares = v.iommu_group.and_then(|g| group_kinds.get(&g)).is_some();
                (!shares, v.address)
            })
            .map(|v| v.address)
            .ok_or_else(|| PoolError::Exhausted {
                token: tok.id.clone(),
                pf: tok.pf,
                reason: format!(
                    "{} of {} VFs in use or in IOMMU groups used with the other driver kind{}",
                    pf.vfs.len() - pf.vfs.iter().filter(|v| !busy.contains(&v.address)).count(),
                    pf.vfs.len(),
                    health::unhealthy_note(&self.health, &pf.vfs)
                ),
            })
    }

    /// The VF bound to a token at Allocate, if it can serve `kind` now.
    fn check_bound(
        &self,
        state: &State,
        tok: &Token,
        vf: PciAddress,
        kind: DriverKind,
    ) -> Result<PciAddress, PoolError> {
        let unusable = |reason: String| PoolError::BoundVfUnusable {
            token: tok.id.clone(),
            vf,
            reason,
        };
        let (busy, group_kinds) = self.taken(state, &tok.id);
        if busy.contains(&vf) {
            return Err(unusable("is held by another token".into()));
        }
        if let Some(why) = self.health.why(vf) {
            return Err(unusable(format!("is unhealthy: {why}")));
        }
        if let Some(other) = self
            .group_of(vf)
            .and_then(|g| group_kinds.get(&g))
            .filter(|k| **k != kind)
        {
            return Err(unusable(format!(
                "shares its IOMMU group with a VF used with the {other:?} driver kind"
            )));
        }
        Ok(vf)
    }

    fn group_of(&self, vf: PciAddress) -> Option<u32> {
        self.layout().groups.get(&vf).copied()
    }

    fn lease(&self, tok: &Token, vf: PciAddress, kind: DriverKind) -> VfLease {
        let undo = match &tok.state {
            TokenState::InUse(u) if u.vf == vf => u.undo.clone(),
            _ => None,
        };
        VfLease {
            token: tok.id.clone(),
            name: tok.name.clone(),
            pf: tok.pf,
            vf,
            iommu_group: self.group_of(vf),
            kind,
            undo,
            bound_at_allocate: tok.bound.as_ref().is_some_and(|b| b.vf == vf),
        }
    }

    /// Stores (or clears) the undo record of `connection`'s use. Written
    /// to the journal before it returns, so a restarted process reads it
    /// (the page cache outlives the process); on disk by
    /// [`Pool::sync_use`] or any later synced change.
    pub fn record_undo(
        &self,
        connection: &str,
        undo: Option<serde_json::Value>,
    ) -> Result<bool, PoolError> {
        let undo = undo.map(Arc::new);
        self.change_use(connection, Reach::File, |u| u.undo = undo.clone())
    }
}

/// How far a change gets before the call that made it returns.
///
/// Every change is written to the journal before the host change it guards,
/// so a restarted process (after a kill, a panic, an OOM) reads it: the page
/// cache outlives the process. Only a kernel crash or a power loss drops a
/// write not yet synced, and those end every host change the pool's records
/// guard (namespaces, link moves, driver bindings, device rules) with it.
/// So a Request's records are only written as it goes, and synced once,
/// before the answer that acknowledges them; the changes anyone is told of
/// (kubelet's Allocate, a refresh, a release) are synced before they return.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reach {
    /// Written to the journal: a restarted process reads it.
    File,
    /// On disk (`fdatasync`, shared by concurrent committers).
    Disk,
}

/// Makes the token set match the configuration.
fn shape_tokens(state: &mut State, pfs: &BTreeMap<PciAddress, PfInfo>, warnings: &mut Vec<String>) {
    // Tokens of PFs or names no longer configured go away.
    state.tokens.retain(|id, t| {
        let served = pfs.get(&t.pf).is_some_and(|p| p.names.contains(&t.name));
        // Held ones stay until their connection closes and their pod
        // releases them (see `layout`).
        let keep = served || layout::is_held(t);
        if !served && keep {
            warnings.push(format!(
                "token {} ({}) of PF {} is held by a pod but its PF or name is no longer \
                 configured; kept until released, for no new Request",
                crate::redact::Redacted(id),
                t.name,
                t.pf
            ));
        }
        keep
    });
    for (addr, pf) in pfs {
        for name in &pf.names {
            let mut ids: Vec<(bool, String)> = state
                .tokens
                .values()
                .filter(|t| t.pf == *addr && t.name == *name)
                .map(|t| (t.reserves(), t.id.clone()))
                .collect();
            let want = pf.vfs.len();
            // Drop free tokens first when the PF has fewer VFs than before.
            ids.sort();
            while ids.len() > want {
                let Some((reserved, id)) = ids.first().cloned() else {
                    break;
                };
                if reserved {
                    warnings.push(format!(
                        "PF {addr} has {want} VFs but {} tokens of {name} are held by pods; keeping them, none free",
                        ids.len()
                    ));
                    break;
                }
                state.tokens.remove(&id);
                ids.remove(0);
            }
            for id in new_ids(want.saturating_sub(ids.len())) {
                state.tokens.insert(
                    id.clone(),
                    Token {
                        id,
                        name: name.clone(),
                        pf: *addr,
                        state: TokenState::Free,
                        bound: None,
                    },
                );
            }
        }
    }
}

/// `n` new token IDs (`sriov-<uuid v4>`). A PF brings hundreds at once,
/// so their random bytes come from one `getrandom` call rather than one
/// each; should that fail, each asks on its own as `Uuid::new_v4` does.
fn new_ids(n: usize) -> Vec<String> {
    let mut random = vec![0u8; n * 16];
    let batch = getrandom::fill(&mut random).is_ok();
    let mut out = Vec::with_capacity(n);
    for chunk in random.chunks_exact(16) {
        let uuid = match <[u8; 16]>::try_from(chunk) {
            Ok(bytes) if batch => uuid::Builder::from_random_bytes(bytes).into_uuid(),
            _ => uuid::Uuid::new_v4(),
        };
        out.push(format!("{TOKEN_PREFIX}{uuid}"));
    }
    out
}

/// Recorded uses whose VF is gone, expired, or visibly not with a client
/// go back to allocated, so a crash never leaks a VF.
fn reconcile_uses(
    state: &mut State,
    layout: &Layout,
    sysfs: &Sysfs,
    now: u64,
    running: Option<&dyn Fn(&str) -> bool>,
    warnings: &mut Vec<String>,
) {
    let uses = uses_to_release(state, layout, sysfs, now, running);
    release_uses(state, uses, warnings);
}

/// Puts the tokens of `uses` (from [`uses_to_release`]) back to allocated,
/// and their lines into `warnings`.
fn release_uses(state: &mut State, uses: Vec<(String, String)>, warnings: &mut Vec<String>) {
    for (id, warning) in uses {
        if let Some(t) = state.tokens.get_mut(&id) {
            t.state = TokenState::Allocated;
        }
        warnings.push(warning);
    }
}

/// The tokens [`reconcile_uses`] releases, each with its line to log. It
/// only reads, so a sweep with nothing to release copies no state.
fn uses_to_release(
    state: &State,
    layout: &Layout,
    sysfs: &Sysfs,
    now: u64,
    running: Option<&dyn Fn(&str) -> bool>,
) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for t in state.tokens.values() {
        let TokenState::InUse(u) = &t.state else {
            continue;
        };
        if running.is_some_and(|is_live| is_live(&u.connection)) {
            continue;
        }
        let exists = layout.knows_vf(t.pf, u.vf);
        let driver = sysfs.driver(u.vf).ok().flatten();
        let home = match u.kind {
            // A kernel VF whose netdev we can see is in our namespace, not a client's.
            DriverKind::Kernel => {
                driver.as_deref() == layout.kernel_drivers.get(&t.pf).map(String::as_str)
                    && sysfs.netdevs(u.vf).map(|n| !n.is_empty()).unwrap_or(false)
            }
            DriverKind::Vfio => driver.as_deref() != Some("vfio-pci"),
        };
        // A use whose netdev we recorded moving, or an expired one still
        // on a client's side, is the forwarder's to undo first (its
        // `Reclaim`): released here, the VF would go to the next tenant in
        // someone's namespace or on vfio-pci. (sysfs is no proof for a
        // moved netdev: what it lists depends on the namespace it was
        // mounted in.)
        let moved = u.undo.is_some();
        let reason = if !exists {
            Some("the VF no longer exists")
        } else if moved {
            None
        } else if home && u.expires_at <= now && running.is_some() {
            Some("its use expired")
        } else {
            // At start, a use with no record belongs to a Request the last
            // process was killed in (perhaps half-way through a bind): the
            // forwarder rolls it back (`Reclaim::unfinished`) before it
            // serves, so the VF returns on its driver. While serving, such
            // a use may be a Request in flight between taking its token and
            // binding or moving its VF: releasing it would hand the VF out
            // twice.
            None
        };
        if let Some(reason) = reason {
            out.push((
                t.id.clone(),
                format!(
                    "VF {} of token {} (connection {}) released: {reason}",
                    u.vf,
                    crate::redact::Redacted(&t.id),
                    u.connection
                ),
            ));
        }
    }
    out
}
