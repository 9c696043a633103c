//! `GetPreferredAllocation`: which of the free devices kubelet should pick.
//!
//! Kubelet asks before `Allocate` when the plugin advertises
//! `get_preferred_allocation_available`, and treats the answer as a hint.
//! Whatever the policy, the answer follows kubelet's contract: every
//! `must_include` ID first, then IDs from `available` only, each once, up to
//! `allocation_size` in all (fewer only when fewer are available).
//! [`AllocationPolicy`] decides the rest.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;

use crate::backend::Device;

/// How `GetPreferredAllocation` chooses among the free devices of a resource.
/// Devices are grouped by [`Device::group`] (for VFs, their PF) and placed by
/// [`Device::numa_node`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum AllocationPolicy {
    /// Fill one PF first. The PF of a `must_include` device if it has enough
    /// free, else the PF with the fewest free devices that still has enough
    /// (a best fit, which keeps the PFs with most room whole for bigger
    /// requests); when no PF has enough, one NUMA node, taking its PFs with
    /// most free devices first; else as few PFs as possible. The forwarder's
    /// behaviour, and the default of [`PluginConfig`](crate::PluginConfig).
    #[default]
    Packed,
    /// Round-robin across PFs: each device from the PF that has given the
    /// pod (`must_include` counted) the fewest so far, ties to the PF with
    /// most free devices, so a pod's VFs share as few PFs as possible.
    Spread,
    /// The NUMA node of the `must_include` devices, else the node with most
    /// free devices, then the other nodes by free devices; within a node,
    /// PF by PF as [`Packed`](Self::Packed) fills them. Devices without a
    /// NUMA node come last.
    Numa,
}

impl AllocationPolicy {
    /// Every policy, in the order the config documents them.
    pub const ALL: [AllocationPolicy; 3] = [Self::Packed, Self::Spread, Self::Numa];

    /// The name used in the config (`allocationPolicy`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Packed => "packed",
            Self::Spread => "spread",
            Self::Numa => "numa",
        }
    }

    /// The policy named exactly `name` (`packed`, `spread`, `numa`).
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.as_str() == name)
    }
}

impl fmt::Display for AllocationPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The IDs to prefer: `must_include` first, then the rest as `policy` orders
/// them. Unknown IDs in `available` (not in `devices`) are used only when
/// nothing better is left.
pub(crate) fn preferred_allocation(
    policy: AllocationPolicy,
    devices: &[Device],
    available: &[String],
    must_include: &[String],
    size: usize,
) -> Vec<String> {
    let info: HashMap<&str, &Device> = devices.iter().map(|d| (d.id.as_str(), d)).collect();
    let mut chosen: Vec<String> = Vec::new();
    for id in must_include {
        if !chosen.contains(id) {
            chosen.push(id.clone());
        }
    }
    if chosen.len() >= size {
        return chosen;
    }
    let need = size - chosen.len();
    let mut seen: HashSet<&str> = chosen.iter().map(String::as_str).collect();
    let mut candidates: Vec<&str> = Vec::new();
    for id in available {
        if seen.insert(id.as_str()) {
            candidates.push(id.as_str());
        }
    }
    candidates.sort_unstable();
    let facts = Facts {
        group_of: &|id: &str| info.get(id).and_then(|d| d.group.as_deref()),
        numa_of: &|id: &str| info.get(id).and_then(|d| d.numa_node),
    };
    let anchors: Vec<&str> = chosen.iter().map(String::as_str).collect();
    let picked = match policy {
        AllocationPolicy::Packed => packed(&facts, &anchors, &candidates, need),
        AllocationPolicy::Spread => spread(&facts, &anchors, &candidates, need),
        AllocationPolicy::Numa => numa(&facts, &anchors, &candidates, need),
    };
    chosen.extend(picked.into_iter().take(need).map(str::to_string));
    chosen
}

/// What the policies know of an ID: its group and NUMA node.
struct Facts<'f, 'a> {
    group_of: &'f dyn Fn(&str) -> Option<&'a str>,
    numa_of: &'f dyn Fn(&str) -> Option<i64>,
}

/// [`AllocationPolicy::Packed`]: at least `need` IDs when there are.
fn packed<'a>(
    facts: &Facts<'_, 'a>,
    anchors: &[&str],
    candidates: &[&'a str],
    need: usize,
) -> Vec<&'a str> {
    let Facts { group_of, numa_of } = *facts;
    let anchor_groups: HashSet<&str> = anchors.iter().filter_map(|id| group_of(id)).collect();
    let anchor_numas: HashSet<i64> = anchors.iter().filter_map(|id| numa_of(id)).collect();

    // One group that can satisfy the rest: the anchor's, then one on the
    // anchor's NUMA node, then the smallest that fits (keeps big PFs whole).
    let mut groups: BTreeMap<&str, Vec<&'a str>> = BTreeMap::new();
    for &id in candidates {
        if let Some(g) = group_of(id) {
            groups.entry(g).or_default().push(id);
        }
    }
    let group_numa = |members: &[&str]| members.first().and_then(|id| numa_of(id));
    let best_group = groups
        .iter()
        .filter(|(_, members)| members.len() >= need)
        .min_by_key(|(g, members)| {
            (
                !anchor_groups.contains(*g),
                !anchor_numas.is_empty()
                    && !group_numa(members).is_some_and(|n| anchor_numas.contains(&n)),
                members.len(),
                **g,
            )
        });
    if let Some((_, members)) = best_group {
        return members.clone();
    }

    // One NUMA node that can satisfy the rest, filled PF by PF.
    let mut numas: BTreeMap<i64, Vec<&'a str>> = BTreeMap::new();
    for &id in candidates {
        if let Some(n) = numa_of(id) {
            numas.entry(n).or_default().push(id);
        }
    }
    let best_numa = numas
        .iter()
        .filter(|(_, members)| members.len() >= need)
        .min_by_key(|(n, members)| (!anchor_numas.contains(*n), members.len(), **n));
    let pool: &[&'a str] = match best_numa {
        Some((_, members)) => members,
        None => candidates,
    };
    fill_by_group(pool, &anchor_groups, &anchor_numas, group_of, numa_of)
}

/// [`AllocationPolicy::Spread`].
fn spread<'a>(
    facts: &Facts<'_, 'a>,
    anchors: &[&str],
    candidates: &[&'a str],
    need: usize,
) -> Vec<&'a str> {
    let group_of = facts.group_of;
    // Per group, the IDs still free (in ID order) and how many the pod has.
    let mut free: BTreeMap<Option<&'a str>, Vec<&'a str>> = BTreeMap::new();
    for &id in candidates.iter().rev() {
        free.entry(group_of(id)).or_default().push(id);
    }
    let mut given: HashMap<Option<&str>, usize> = HashMap::new();
    for id in anchors {
        *given.entry(group_of(id)).or_default() += 1;
    }
    let mut out = Vec::new();
    while out.len() < need {
        let next = free
            .iter()
            .filter(|(_, ids)| !ids.is_empty())
            .min_by_key(|(g, ids)| {
                (
                    // Ungrouped devices last: they spread nothing.
                    g.is_none(),
                    given.get(*g).copied().unwrap_or(0),
                    std::cmp::Reverse(ids.len()),
                    **g,
                )
            })
            .map(|(g, _)| *g);
        let Some(g) = next else { break };
        let Some(id) = free.get_mut(&g).and_then(Vec::pop) else {
            break;
        };
        *given.entry(g).or_default() += 1;
        out.push(id);
    }
    out
}

/// [`AllocationPolicy::Numa`].
fn numa<'a>(
    facts: &Facts<'_, 'a>,
    anchors: &[&str],
    candidates: &[&'a str],
    _need: usize,
) -> Vec<&'a str> {
    let Facts { group_of, numa_of } = *facts;
    let anchor_groups: HashSet<&str> = anchors.iter().filter_map(|id| group_of(id)).collect();
    let anchor_numas: HashSet<i64> = anchors.iter().filter_map(|id| numa_of(id)).collect();
    let mut per_node: HashMap<Option<i64>, usize> = HashMap::new();
    let mut per_group: HashMap<Option<&str>, usize> = HashMap::new();
    for &id in candidates {
        *per_node.entry(numa_of(id)).or_default() += 1;
        *per_group.entry(group_of(id)).or_default() += 1;
    }
    let mut ordered = candidates.to_vec();
    ordered.sort_by_key(|&id| {
        let n = numa_of(id);
        let g = group_of(id);
        (
            n.is_none(),
            !n.is_some_and(|n| anchor_numas.contains(&n)),
            std::cmp::Reverse(per_node.get(&n).copied().unwrap_or(0)),
            n,
            !g.is_some_and(|g| anchor_groups.contains(g)),
            g.is_none(),
            std::cmp::Reverse(per_group.get(&g).copied().unwrap_or(0)),
            g,
            id,
        )
    });
    ordered
}

/// Orders `pool` so that taking a prefix spans few groups: anchor NUMA node
/// first, then anchor groups, then the groups with most candidates.
fn fill_by_group<'a>(
    pool: &[&'a str],
    anchor_groups: &HashSet<&str>,
    anchor_numas: &HashSet<i64>,
    group_of: &dyn Fn(&str) -> Option<&'a str>,
    numa_of: &dyn Fn(&str) -> Option<i64>,
) -> Vec<&'a str> {
    let mut counts: HashMap<Option<&str>, usize> = HashMap::new();
    for &id in pool {
        *counts.entry(group_of(id)).or_default() += 1;
    }
    let mut ordered = pool.to_vec();
    ordered.sort_by_key(|&id| {
        let g = group_of(id);
        (
            !numa_of(id).is_some_and(|n| anchor_numas.contains(&n)),
            !g.is_some_and(|g| anchor_groups.contains(g)),
            // Ungrouped devices last: they can't keep a pod on one PF.
            g.is_none(),
            std::cmp::Reverse(counts.get(&g).copied().unwrap_or(0)),
            g,
            id,
        )
    });
    ordered
}

#[cfg(test)]
mod tests {
    use super::*;

    use AllocationPolicy::{Numa, Packed, Spread};

    fn dev(id: &str, group: &str, numa: i64) -> Device {
        Device {
            id: id.into(),
            healthy: true,
            numa_node: Some(numa),
            group: Some(group.into()),
        }
    }

    fn ids(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    /// pf0: a0 a1 (numa 0); pf1: b0 b1 b2 (numa 0); pf2: c0 c1 c2 c3 (numa 1)
    fn fixture() -> Vec<Device> {
        vec![
            dev("a0", "pf0", 0),
            dev("a1", "pf0", 0),
            dev("b0", "pf1", 0),
            dev("b1", "pf1", 0),
            dev("b2", "pf1", 0),
            dev("c0", "pf2", 1),
            dev("c1", "pf2", 1),
            dev("c2", "pf2", 1),
            dev("c3", "pf2", 1),
        ]
    }

    fn all() -> Vec<String> {
        fixture().into_iter().map(|d| d.id).collect()
    }

    #[test]
    fn prefers_the_smallest_single_pf_that_fits() {
        let got = preferred_allocation(AllocationPolicy::Packed, &fixture(), &all(), &[], 2);
        assert_eq!(got, ids(&["a0", "a1"]));
        let got = preferred_allocation(AllocationPolicy::Packed, &fixture(), &all(), &[], 3);
        assert_eq!(got, ids(&["b0", "b1", "b2"]));
    }

    #[test]
    fn must_include_anchors_the_pf() {
        let got = preferred_allocation(
            AllocationPolicy::Packed,
            &fixture(),
            &all(),
            &ids(&["c2"]),
            2,
        );
        assert_eq!(got, ids(&["c2", "c0"]));
    }

    #[test]
    fn falls_back_to_one_numa_node_when_no_pf_has_enough() {
        let got = preferred_allocation(AllocationPolicy::Packed, &fixture(), &all(), &[], 5);
        // pf0 + pf1 are both on NUMA 0 and hold exactly five; pf2 alone has four.
        let mut sorted = got.clone();
        sorted.sort();
        assert_eq!(sorted, ids(&["a0", "a1", "b0", "b1", "b2"]));
        // The bigger PF is taken first so a smaller request would span fewer PFs.
        assert_eq!(&got[..3], &ids(&["b0", "b1", "b2"])[..]);
    }

    #[test]
    fn spans_numa_nodes_only_when_it_must() {
        let got = preferred_allocation(AllocationPolicy::Packed, &fixture(), &all(), &[], 7);
        assert_eq!(got.len(), 7);
        let on_numa1 = got.iter().filter(|id| id.starts_with('c')).count();
        assert_eq!(on_numa1, 4, "the four-VF PF is used whole: {got:?}");
    }

    #[test]
    fn only_available_devices_are_chosen() {
        let avail = ids(&["a1", "b2", "c3"]);
        let got = preferred_allocation(AllocationPolicy::Packed, &fixture(), &avail, &[], 2);
        assert_eq!(got.len(), 2);
        assert!(got.iter().all(|id| avail.contains(id)));
    }

    #[test]
    fn never_returns_more_than_available() {
        let avail = ids(&["a1"]);
        assert_eq!(
            preferred_allocation(AllocationPolicy::Packed, &fixture(), &avail, &[], 3),
            ids(&["a1"])
        );
    }

    #[test]
    fn unknown_ids_are_still_usable_as_a_last_resort() {
        let avail = ids(&["zz", "yy"]);
        let got = preferred_allocation(AllocationPolicy::Packed, &fixture(), &avail, &[], 2);
        assert_eq!(got, ids(&["yy", "zz"]));
    }

    /// Kubelet's contract, for every policy, size and must-include set:
    /// must-include first and kept, then only available IDs, none twice,
    /// exactly `size` in all when enough are available.
    #[test]
    fn every_policy_keeps_kubelets_contract() {
        let avail = ids(&["a1", "b0", "b2", "c0", "c1", "c3"]);
        let musts = [vec![], ids(&["b0"]), ids(&["c3", "a1"])];
        for policy in AllocationPolicy::ALL {
            for must in &musts {
                for size in must.len()..=avail.len() + 1 {
                    let got = preferred_allocation(policy, &fixture(), &avail, must, size);
                    let ctx = format!("{policy} must={must:?} size={size}: {got:?}");
                    assert_eq!(&got[..must.len()], &must[..], "{ctx}");
                    assert_eq!(got.len(), size.min(avail.len()), "{ctx}");
                    assert!(got.iter().all(|id| avail.contains(id)), "{ctx}");
                    let unique: HashSet<&String> = got.iter().collect();
                    assert_eq!(unique.len(), got.len(), "{ctx}");
                }
            }
        }
    }

    #[test]
    fn policies_by_table() {
        // (policy, must_include, size, expected answer)
        let table: &[(AllocationPolicy, &[&str], usize, &[&str])] = &[
            // packed: the best-fitting PF, or the must-include's PF.
            (Packed, &[], 1, &["a0"]),
            (Packed, &[], 4, &["c0", "c1", "c2", "c3"]),
            (Packed, &["b1"], 3, &["b1", "b0", "b2"]),
            // spread: one per PF in turn, the PF with most free first.
            (Spread, &[], 1, &["c0"]),
            (Spread, &[], 3, &["c0", "b0", "a0"]),
            (Spread, &[], 5, &["c0", "b0", "a0", "c1", "b1"]),
            // must-include counts: its PF gives the pod nothing more until the others have.
            (Spread, &["c2"], 3, &["c2", "b0", "a0"]),
            // numa: the node with most free devices (0: five), PF by PF.
            (Numa, &[], 2, &["b0", "b1"]),
            (Numa, &[], 6, &["b0", "b1", "b2", "a0", "a1", "c0"]),
            // ... unless must-include anchors another node.
            (Numa, &["c1"], 3, &["c1", "c0", "c2"]),
            (Numa, &["a1"], 3, &["a1", "a0", "b0"]),
        ];
        for (policy, must, size, want) in table {
            let got = preferred_allocation(*policy, &fixture(), &all(), &ids(must), *size);
            assert_eq!(got, ids(want), "{policy} must={must:?} size={size}");
        }
    }

    #[test]
    fn numa_prefers_the_node_with_most_free_when_nothing_anchors_it() {
        // Node 0 keeps only a0; node 1 has three free.
        let avail = ids(&["a0", "c0", "c1", "c3"]);
        let got = preferred_allocation(Numa, &fixture(), &avail, &[], 2);
        assert_eq!(got, ids(&["c0", "c1"]));
    }

    #[test]
    fn devices_without_numa_node_or_group_come_last_under_numa_and_spread() {
        let mut devs = fixture();
        devs.push(Device {
            id: "x0".into(),
            healthy: true,
            numa_node: None,
            group: None,
        });
        let avail = ids(&["x0", "a0", "c0"]);
        assert_eq!(
            preferred_allocation(Numa, &devs, &avail, &[], 3),
            ids(&["a0", "c0", "x0"])
        );
        assert_eq!(
            preferred_allocation(Spread, &devs, &avail, &[], 2),
            ids(&["a0", "c0"])
        );
    }

    #[test]
    fn policy_names_round_trip_and_are_exact() {
        for p in AllocationPolicy::ALL {
            assert_eq!(AllocationPolicy::from_name(p.as_str()), Some(p));
        }
        assert_eq!(AllocationPolicy::from_name("Packed"), None);
        assert_eq!(AllocationPolicy::from_name(""), None);
        assert_eq!(AllocationPolicy::default(), Packed);
    }
}
