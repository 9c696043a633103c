//! Members that drop out of discovery between two refreshes. A device whose driver was
//! unbound (discovery leaves such devices out) or that vanished (a VF after `sriov_numvfs`
//! was lowered) stays in its pool as unhealthy, so kubelet keeps counting it, a pod holding it
//! learns its device is broken, and it turns healthy again where it was when it comes back.
//! A device that is still there but taken by another pool, or left out for another reason
//! (its netdev now carries the default route, VFs were created on a PF), leaves the pool:
//! that is a change of membership, not of health.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use crate::health::{HealthCause, Unhealthy};
use crate::host::{Discovery, SkipReason};

use super::{Member, ResourcePool};

/// What one discovery pass saw, by device ID.
#[derive(Debug, Default)]
pub(super) struct Seen {
    /// Present and described, whatever discovery then did with them.
    present: BTreeSet<String>,
    /// Present with no driver bound.
    unbound: BTreeSet<String>,
    /// Present but unreadable this time (often a device being removed or probed): left as
    /// they were until the next pass.
    unreadable: BTreeSet<String>,
}

impl Seen {
    pub(super) fn of(discovery: &Discovery) -> Self {
        let mut seen = Seen::default();
        for dev in discovery.devices.iter().chain(&discovery.aux_devices) {
            seen.present.insert(dev.id());
        }
        for (dev, why) in &discovery.skipped {
            seen.present.insert(dev.id());
            if *why == SkipReason::NoDriver {
                seen.unbound.insert(dev.id());
            }
        }
        for (address, _) in &discovery.unreadable {
            seen.unreadable.insert(address.to_string());
        }
        seen
    }
}

/// Adds to `assigned` (one map per pool, in pool order) the former members of each pool that
/// no pool took this pass: unbound or vanished ones as unhealthy, unreadable ones unchanged.
pub(super) fn keep(
    pools: &[Arc<ResourcePool>],
    assigned: &mut [BTreeMap<String, Member>],
    seen: &Seen,
) {
    let taken: BTreeSet<String> = assigned.iter().flat_map(|m| m.keys().cloned()).collect();
    for (pool, members) in pools.iter().zip(assigned.iter_mut()) {
        let mut guard = pool.lock();
        let state = &mut *guard;
        for (id, old) in &state.members {
            if taken.contains(id) {
                continue;
            }
            let unhealthy = if seen.unreadable.contains(id) {
                old.unhealthy.clone()
            } else if seen.unbound.contains(id) {
                // Rebound, it may come back under another netdev name: not a vanished one.
                state.seen_netdevs.remove(id);
                let was = old.dev.driver.as_deref().unwrap_or("its driver");
                Some(Unhealthy::new(
                    HealthCause::DriverUnbound,
                    format!("no driver is bound to it (was {was})"),
                ))
            } else if !seen.present.contains(id) {
                Some(Unhealthy::new(
                    HealthCause::DeviceGone,
                    "the device is gone",
                ))
            } else {
                continue;
            };
            members.insert(
                id.clone(),
                Member {
                    dev: old.dev.clone(),
                    selector: old.selector,
                    unhealthy,
                },
            );
        }
    }
}

/// Whether `m` is a device kept here only to be reported unhealthy (unbound or gone): CDI specs
/// leave it out, since its device nodes are gone or belong to no driver of ours.
pub(super) fn is_kept(m: &Member) -> bool {
    m.unhealthy.as_ref().is_some_and(|u| {
        matches!(
            u.cause,
            HealthCause::DriverUnbound | HealthCause::DeviceGone
        )
    })
}
