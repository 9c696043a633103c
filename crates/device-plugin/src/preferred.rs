//! `GetPreferredAllocation`: which of the free devices kubelet should pick.
//!
//! Kubelet asks before `Allocate` (we advertise
//! `get_preferred_allocation_available`) and treats the answer as a hint.
//! VFs of one PF share its uplink and switch, so a pod asking for several
//! gets them from one PF when one PF has enough; otherwise from one NUMA
//! node; otherwise from as few PFs as possible. Devices kubelet must include
//! anchor the choice: their PF and NUMA node are preferred.

use std::collections::{BTreeMap, HashMap, HashSet};

use crate::backend::Device;

/// The IDs to prefer: `must_include` first, then the rest by the rules above.
/// Unknown IDs in `available` are used only when nothing better is left.
pub(crate) fn preferred_allocation(
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

    let anchor_groups: HashSet<&str> = chosen
        .iter()
        .filter_map(|id| info.get(id.as_str()).and_then(|d| d.group.as_deref()))
        .collect();
    let anchor_numas: HashSet<i64> = chosen
        .iter()
        .filter_map(|id| info.get(id.as_str()).and_then(|d| d.numa_node))
        .collect();

    let mut seen: HashSet<&str> = chosen.iter().map(String::as_str).collect();
    let mut candidates: Vec<&str> = Vec::new();
    for id in available {
        if seen.insert(id.as_str()) {
            candidates.push(id.as_str());
        }
    }
    candidates.sort_unstable();
    let group_of = |id: &str| info.get(id).and_then(|d| d.group.as_deref());
    let numa_of = |id: &str| info.get(id).and_then(|d| d.numa_node);

    // One group that can satisfy the rest: the anchor's, then one on the
    // anchor's NUMA node, then the smallest that fits (keeps big PFs whole).
    let mut groups: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for &id in &candidates {
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
        chosen.extend(members.iter().take(need).map(|s| s.to_string()));
        return chosen;
    }

    // One NUMA node that can satisfy the rest, filled PF by PF.
    let mut numas: BTreeMap<i64, Vec<&str>> = BTreeMap::new();
    for &id in &candidates {
        if let Some(n) = numa_of(id) {
            numas.entry(n).or_default().push(id);
        }
    }
    let best_numa = numas
        .iter()
        .filter(|(_, members)| members.len() >= need)
        .min_by_key(|(n, members)| (!anchor_numas.contains(*n), members.len(), **n));
    let pool: Vec<&str> = match best_numa {
        Some((_, members)) => members.clone(),
        None => candidates.clone(),
    };
    chosen.extend(
        fill_by_group(&pool, &anchor_groups, &anchor_numas, &group_of, &numa_of)
            .into_iter()
            .take(need)
            .map(str::to_string),
    );
    chosen
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
        let got = preferred_allocation(&fixture(), &all(), &[], 2);
        assert_eq!(got, ids(&["a0", "a1"]));
        let got = preferred_allocation(&fixture(), &all(), &[], 3);
        assert_eq!(got, ids(&["b0", "b1", "b2"]));
    }

    #[test]
    fn must_include_anchors_the_pf() {
        let got = preferred_allocation(&fixture(), &all(), &ids(&["c2"]), 2);
        assert_eq!(got, ids(&["c2", "c0"]));
    }

    #[test]
    fn falls_back_to_one_numa_node_when_no_pf_has_enough() {
        let got = preferred_allocation(&fixture(), &all(), &[], 5);
        // pf0 + pf1 are both on NUMA 0 and hold exactly five; pf2 alone has four.
        let mut sorted = got.clone();
        sorted.sort();
        assert_eq!(sorted, ids(&["a0", "a1", "b0", "b1", "b2"]));
        // The bigger PF is taken first so a smaller request would span fewer PFs.
        assert_eq!(&got[..3], &ids(&["b0", "b1", "b2"])[..]);
    }

    #[test]
    fn spans_numa_nodes_only_when_it_must() {
        let got = preferred_allocation(&fixture(), &all(), &[], 7);
        assert_eq!(got.len(), 7);
        let on_numa1 = got.iter().filter(|id| id.starts_with('c')).count();
        assert_eq!(on_numa1, 4, "the four-VF PF is used whole: {got:?}");
    }

    #[test]
    fn only_available_devices_are_chosen() {
        let avail = ids(&["a1", "b2", "c3"]);
        let got = preferred_allocation(&fixture(), &avail, &[], 2);
        assert_eq!(got.len(), 2);
        assert!(got.iter().all(|id| avail.contains(id)));
    }

    #[test]
    fn never_returns_more_than_available() {
        let avail = ids(&["a1"]);
        assert_eq!(
            preferred_allocation(&fixture(), &avail, &[], 3),
            ids(&["a1"])
        );
    }

    #[test]
    fn unknown_ids_are_still_usable_as_a_last_resort() {
        let avail = ids(&["zz", "yy"]);
        let got = preferred_allocation(&fixture(), &avail, &[], 2);
        assert_eq!(got, ids(&["yy", "zz"]));
    }
}
