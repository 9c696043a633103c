//! VF health, as the forwarder's health follower reports it (`sriov-forwarder`'s `health.rs`:
//! PF carrier, driver unbound, VF gone), and what it changes in the pool.
//!
//! The rule kubelet sees, per PF: a token on a VF (in use, or bound to one at Allocate) is
//! healthy exactly while its VF is. Tokens pods hold without a VF yet come next, each needing a
//! healthy VF nobody else holds; then, per name, as many free tokens are healthy as healthy
//! VFs are left. So a resource advertises as many healthy free tokens as its PFs have healthy
//! free VFs, and a PF whose link is down advertises none. A Request is never given an unhealthy
//! VF: [`Pool::use_token`] skips them, and refuses a token bound at Allocate to one.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::RwLock;

use sriov_deviceplugin::Device;
use sriov_pci::PciAddress;

use super::{PfInfo, Pool};
use crate::error::PoolError;
use crate::state::{State, Token, TokenState};

/// The VFs known to be unhealthy, with why. Empty (everything healthy) until told otherwise.
#[derive(Debug, Default)]
pub(super) struct VfHealth {
    unhealthy: RwLock<BTreeMap<PciAddress, String>>,
}

impl VfHealth {
    pub(super) fn why(&self, vf: PciAddress) -> Option<String> {
        self.unhealthy.read().ok()?.get(&vf).cloned()
    }

    pub(super) fn is_healthy(&self, vf: PciAddress) -> bool {
        self.unhealthy
            .read()
            .map(|m| !m.contains_key(&vf))
            .unwrap_or(true)
    }

    fn snapshot(&self) -> BTreeMap<PciAddress, String> {
        self.unhealthy.read().map(|m| m.clone()).unwrap_or_default()
    }
}

impl Pool {
    /// Replaces what is known about VF health: `unhealthy` maps each unhealthy VF to why,
    /// every other VF is healthy. Republishes kubelet's lists when anything changed; returns
    /// whether it did.
    pub fn set_unhealthy_vfs(
        &self,
        unhealthy: BTreeMap<PciAddress, String>,
    ) -> Result<bool, PoolError> {
        let guard = self.lock()?;
        {
            let mut current = self
                .health
                .unhealthy
                .write()
                .map_err(|_| PoolError::Poisoned)?;
            if *current == unhealthy {
                return Ok(false);
            }
            *current = unhealthy;
        }
        self.publish(&guard, true);
        Ok(true)
    }

    /// The VFs known to be unhealthy, with why.
    pub fn unhealthy_vfs(&self) -> BTreeMap<PciAddress, String> {
        self.health.snapshot()
    }
}

/// `, N unhealthy` for an exhaustion message, or nothing when all are healthy.
pub(super) fn unhealthy_note(health: &VfHealth, vfs: &[super::VfInfo]) -> String {
    match vfs.iter().filter(|v| !health.is_healthy(v.address)).count() {
        0 => String::new(),
        n => format!(", {n} unhealthy"),
    }
}

/// The VF a token is on, if any.
fn vf_of(t: &Token) -> Option<PciAddress> {
    match &t.state {
        TokenState::InUse(u) => Some(u.vf),
        _ => t.bound.as_ref().map(|b| b.vf),
    }
}

/// The devices kubelet sees for `name`, by the rule in this module's doc.
pub(super) fn device_list(
    state: &State,
    pfs: &BTreeMap<PciAddress, PfInfo>,
    health: &VfHealth,
    name: &str,
) -> Vec<Device> {
    let mut out = Vec::new();
    for (addr, pf) in pfs {
        if !pf.names.iter().any(|n| n == name) {
            continue;
        }
        let on_pf: Vec<&Token> = state.tokens.values().filter(|t| t.pf == *addr).collect();
        let holding: BTreeSet<PciAddress> = on_pf
            .iter()
            .filter(|t| t.reserves())
            .filter_map(|t| vf_of(t))
            .collect();
        let mut room = pf
            .vfs
            .iter()
            .filter(|v| health.is_healthy(v.address) && !holding.contains(&v.address))
            .count();
        // Held tokens without a VF yet, of every name, before any free one.
        let mut waiting_healthy = BTreeSet::new();
        for t in on_pf.iter().filter(|t| t.reserves() && vf_of(t).is_none()) {
            if room > 0 {
                room -= 1;
                waiting_healthy.insert(t.id.as_str());
            }
        }
        for t in on_pf.iter().filter(|t| t.name == name) {
            let healthy = if !t.reserves() {
                let ok = room > 0;
                room = room.saturating_sub(1);
                ok
            } else {
                match vf_of(t) {
                    Some(vf) => health.is_healthy(vf),
                    None => waiting_healthy.contains(t.id.as_str()),
                }
            };
            out.push(Device {
                id: t.id.clone(),
                healthy,
                numa_node: pf.numa_node.map(i64::from),
                group: Some(addr.to_string()),
            });
        }
    }
    out
}
