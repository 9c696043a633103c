//! What the pool serves from, and how it changes while the forwarder runs
//! (a reloaded config, `sriov_numvfs` changed, VFs created late).
//!
//! The layout (configured PFs, their VFs, IOMMU groups and VF kernel
//! drivers) is swapped whole under the state lock, so every operation sees
//! one layout from start to end. What the config stops naming is not
//! simply forgotten: a token a pod holds, whose VF a connection uses, or
//! that kubelet's Allocate bound to a VF, stays ("held") until its use ends
//! and its pod releases it. Its VF keeps its IOMMU group and its PF's kernel driver,
//! so Close and every undo still find where the VF goes home, but it is
//! never picked again nor advertised to kubelet.

use std::collections::{BTreeMap, BTreeSet};

use sriov_pci::{PciAddress, Sysfs};
use tokio::sync::watch;

use super::health::device_list;
use super::{PfEntry, PfInfo, Pool, VfInfo, shape_tokens};
use crate::error::PoolError;
use crate::state::{State, Token, TokenState};

/// The PFs the pool serves from, with what tokens still hold of PFs and
/// VFs the config no longer names.
#[derive(Debug, Clone, Default)]
pub(super) struct Layout {
    /// Configured PFs: what is advertised and what VFs are picked from.
    pub(super) pfs: BTreeMap<PciAddress, PfInfo>,
    /// The IOMMU group of every VF known: configured or held.
    pub(super) groups: BTreeMap<PciAddress, u32>,
    /// Each PF's `vfKernelDriver`, of configured PFs and of PFs whose VFs
    /// are still held.
    pub(super) kernel_drivers: BTreeMap<PciAddress, String>,
    /// VFs the config no longer names (their PF gone from it, or the VF
    /// from its `virtualFunctions`, or the VF's resource) that a token
    /// still holds and that still exist.
    pub(super) held: BTreeSet<PciAddress>,
}

impl Layout {
    /// The configured part of the layout.
    pub(super) fn configured(entries: &[PfEntry]) -> Self {
        let mut layout = Self::default();
        for e in entries {
            let addr = e.pf.device.address;
            let vfs: Vec<VfInfo> =
                e.pf.vfs
                    .iter()
                    .map(|v| VfInfo {
                        address: v.address,
                        iommu_group: v.iommu_group,
                    })
                    .collect();
            layout.groups.extend(
                vfs.iter()
                    .filter_map(|v| v.iommu_group.map(|g| (v.address, g))),
            );
            layout.pfs.insert(
                addr,
                PfInfo {
                    numa_node: e.pf.device.numa_node,
                    vfs,
                    names: e.names.clone(),
                },
            );
            layout
                .kernel_drivers
                .insert(addr, e.vf_kernel_driver.clone());
        }
        layout
    }

    /// Adds what `state`'s held tokens still need of PFs and VFs the
    /// configured part does not name: the VF (while it exists), its IOMMU
    /// group and its PF's kernel driver, from `before` (the layout being
    /// replaced) or, after a restart, from sysfs and the use's record.
    pub(super) fn keep_held(&mut self, state: &State, sysfs: &Sysfs, before: Option<&Layout>) {
        for t in state.tokens.values() {
            let Some(vf) = held_vf(t) else {
                continue;
            };
            if let Some(driver) = before
                .and_then(|b| b.kernel_drivers.get(&t.pf).cloned())
                .or_else(|| match &t.state {
                    TokenState::InUse(u) => u.kernel_driver.clone(),
                    _ => None,
                })
            {
                self.kernel_drivers.entry(t.pf).or_insert(driver);
            }
            if self.serves_vf(t.pf, vf) || !sysfs.exists(vf) {
                continue;
            }
            self.held.insert(vf);
            let group = before
                .and_then(|b| b.groups.get(&vf).copied())
                .or_else(|| sysfs.iommu_group(vf).ok().flatten());
            if let Some(g) = group {
                self.groups.insert(vf, g);
            }
        }
    }

    /// Whether `vf` is one of configured PF `pf`'s VFs.
    fn serves_vf(&self, pf: PciAddress, vf: PciAddress) -> bool {
        self.pfs
            .get(&pf)
            .is_some_and(|p| p.vfs.iter().any(|v| v.address == vf))
    }

    /// Whether `vf`, recorded as used through PF `pf`, is still known: one
    /// of the PF's configured VFs, or held.
    pub(super) fn knows_vf(&self, pf: PciAddress, vf: PciAddress) -> bool {
        self.serves_vf(pf, vf) || self.held.contains(&vf)
    }

    /// Whether PF `pf` serves resource `name` (tokens of a name it no
    /// longer serves are never given a VF again).
    pub(super) fn serves(&self, pf: PciAddress, name: &str) -> bool {
        self.pfs
            .get(&pf)
            .is_some_and(|p| p.names.iter().any(|n| n == name))
    }

    /// Every resource name served.
    pub(super) fn names(&self) -> BTreeSet<String> {
        self.pfs
            .values()
            .flat_map(|p| p.names.iter().cloned())
            .collect()
    }
}

/// The VF a token holds, if it holds one: its use's, or the one bound to
/// it at Allocate.
fn held_vf(t: &Token) -> Option<PciAddress> {
    match (&t.state, &t.bound) {
        (TokenState::InUse(u), _) => Some(u.vf),
        (_, Some(b)) => Some(b.vf),
        _ => None,
    }
}

/// Whether a token outlives its PF or resource leaving the config: while
/// a pod holds it (kubelet's pod-resources releases it when the pod goes)
/// or a connection uses its VF, or its VF is bound from kubelet's Allocate
/// (the resource gives it back when the pod releases it).
pub(super) fn is_held(t: &Token) -> bool {
    t.reserves() || held_vf(t).is_some()
}

/// Whether [`prune_unserved`] would drop a token.
pub(super) fn any_unserved(state: &State, layout: &Layout) -> bool {
    state.tokens.values().any(|t| unserved(t, layout))
}

/// A token of what the config no longer names that nothing holds.
fn unserved(t: &Token, layout: &Layout) -> bool {
    !(layout.serves(t.pf, &t.name) || is_held(t))
}

/// Drops the tokens of a PF or name no longer configured once nothing
/// holds them (their connection closed, their pod released them), a line
/// each: run by the sweep, so what a reload kept leaves when it is done.
pub(super) fn prune_unserved(state: &mut State, layout: &Layout) -> Vec<String> {
    let mut notes = Vec::new();
    state.tokens.retain(|id, t| {
        let keep = !unserved(t, layout);
        if !keep {
            notes.push(format!(
                "token {} ({}) of PF {} dropped: no longer configured, and released",
                crate::redact::Redacted(id),
                t.name,
                t.pf
            ));
        }
        keep
    });
    notes
}

/// What [`Pool::reconfigure`] changed, for the caller to act on (start
/// and stop kubelet device plugins) and to log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reconfigured {
    /// Resource names served now and not before.
    pub added: Vec<String>,
    /// Resource names no longer served. Their tokens still held (in use,
    /// or bound at Allocate) stay until released.
    pub removed: Vec<String>,
    /// Resource names served before and now whose device list changed
    /// (PFs or VFs added or removed).
    pub changed: Vec<String>,
    /// What was kept or dropped on the way, one line each, to log.
    pub notes: Vec<String>,
}

impl Reconfigured {
    /// Whether nothing kubelet sees changed.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.changed.is_empty()
    }
}

impl Pool {
    /// Serves `entries` from now on (the PFs a reloaded config names, or
    /// the same PFs with the VFs sysfs shows now), keeping every token a
    /// pod or a connection holds.
    ///
    /// Tokens are reshaped as at [`Pool::open`]: as many per PF and name as
    /// the PF has VFs, existing IDs kept. Free tokens of what is gone leave
    /// at once. A token a pod holds (allocated, in use, or bound to a VF at
    /// Allocate) stays until its connection closes and its pod releases it
    /// ([`Pool::release`]; the sweep then drops it): it keeps its VF, and
    /// its share of its PF if the PF stays, but a new Request with it is
    /// refused and it is advertised under no name. The change is
    /// journaled like any other, so a restart on the new config finds the
    /// same tokens. Names added get a device list ([`Pool::devices`]); names
    /// removed lose theirs (their subscribers see the channel close).
    pub fn reconfigure(
        &self,
        entries: Vec<PfEntry>,
        sysfs: &Sysfs,
    ) -> Result<Reconfigured, PoolError> {
        let guard = self.lock()?;
        let before = self.layout();
        let mut layout = Layout::configured(&entries);
        let mut next = guard.clone();
        let mut notes = Vec::new();
        shape_tokens(&mut next, &layout.pfs, &mut notes);
        layout.keep_held(&next, sysfs, Some(&before));
        let was: BTreeMap<String, Vec<sriov_deviceplugin::Device>> = self
            .read_lists()
            .iter()
            .map(|(n, tx)| (n.clone(), tx.borrow().clone()))
            .collect();
        let names = layout.names();
        let mut out = Reconfigured {
            added: names
                .iter()
                .filter(|n| !was.contains_key(*n))
                .cloned()
                .collect(),
            removed: was
                .keys()
                .filter(|n| !names.contains(*n))
                .cloned()
                .collect(),
            changed: names
                .iter()
                .filter(|n| {
                    was.get(*n).is_some_and(|list| {
                        *list != device_list(&next, &layout.pfs, &self.health, n)
                    })
                })
                .cloned()
                .collect(),
            notes,
        };
        out.notes.extend(
            layout
                .held
                .iter()
                .filter(|vf| !before.held.contains(vf))
                .map(|vf| {
                    format!("VF {vf} is no longer configured; kept until its user releases it")
                }),
        );
        // Swapped before the commit, which publishes the lists from it;
        // the state lock keeps every pool operation out meanwhile. Lists of
        // names removed go only once the change is durable.
        self.set_layout(layout);
        for n in &out.added {
            self.write_lists()
                .insert(n.clone(), watch::Sender::new(Vec::new()));
        }
        if let Err(e) = self.commit(guard, next) {
            self.set_layout(before.as_ref().clone());
            self.write_lists().retain(|n, _| !out.added.contains(n));
            return Err(e);
        }
        self.write_lists().retain(|n, _| names.contains(n));
        // Lists whose tokens did not change (new names, VFs added to a PF
        // whose tokens were reshaped the same way) are published here.
        let guard = self.lock()?;
        self.publish(&guard, true);
        Ok(out)
    }
}
