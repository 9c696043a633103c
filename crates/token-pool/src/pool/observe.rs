//! The pool as observability shows it (issue #17): VF counts for the
//! `sriov.pool.vfs` gauge and the `/debug/state` view. Read-only.

use std::collections::BTreeMap;

use serde::Serialize;
use sriov_pci::PciAddress;

use super::Pool;
use crate::redact;
use crate::state::{DriverKind, Token, TokenState, VfUse};

/// The VFs of one resource on one PF, by state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VfCounts {
    /// The resource name (`serviceDomain/capability`).
    pub resource: String,
    /// The PF.
    pub pf: PciAddress,
    /// The PF's pooled VFs.
    pub total: u64,
    /// VFs no token of any resource on this PF holds: what a new
    /// allocation can still get (the resources of a PF share its VFs).
    pub free: u64,
    /// This resource's tokens kubelet allocated to a pod, no connection yet.
    pub allocated: u64,
    /// This resource's tokens whose VF a connection uses.
    pub in_use: u64,
}

/// One pooled VF as `/debug/state` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VfView {
    /// The VF.
    pub vf: PciAddress,
    /// Its PF.
    pub pf: PciAddress,
    /// Its IOMMU group.
    pub iommu_group: Option<u32>,
    /// `free`, `in_use` (a connection has it) or `bound` (fixed to a token
    /// at kubelet's Allocate, no connection yet).
    pub state: &'static str,
    /// The resource of the token holding it.
    pub resource: Option<String>,
    /// The token holding it, redacted (a token is a capability).
    pub token: Option<String>,
    /// The connection using it.
    pub connection: Option<String>,
    /// The driver kind the connection uses it with.
    pub kind: Option<DriverKind>,
    /// Unix time after which the use is stale unless refreshed.
    pub expires_at: Option<u64>,
}

/// A token shown in state dumps: its first characters only, whatever the
/// log level (unlike [`redact::Redacted`], which shows it whole at TRACE).
fn shown(token: &str) -> String {
    match token.char_indices().nth(redact::SHOWN_CHARS) {
        Some((end, _)) => format!("{}…", token.get(..end).unwrap_or_default()),
        None => token.to_string(),
    }
}

impl Pool {
    /// VF counts per resource and PF, for the `sriov.pool.vfs` gauge.
    pub fn vf_counts(&self) -> Vec<VfCounts> {
        let Ok(guard) = self.lock() else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for (pf, info) in &self.layout().pfs {
            let total = info.vfs.len() as u64;
            let on_pf = || guard.tokens.values().filter(|t| t.pf == *pf);
            let reserved = on_pf().filter(|t| t.reserves()).count() as u64;
            for name in &info.names {
                let of = |want: fn(&TokenState) -> bool| {
                    on_pf()
                        .filter(|t| t.name == *name && want(&t.state))
                        .count() as u64
                };
                out.push(VfCounts {
                    resource: name.clone(),
                    pf: *pf,
                    total,
                    free: total.saturating_sub(reserved),
                    allocated: of(|s| matches!(s, TokenState::Allocated)),
                    in_use: of(|s| matches!(s, TokenState::InUse(_))),
                });
            }
        }
        out
    }

    /// Every pooled VF with what holds it, tokens redacted.
    pub fn vf_views(&self) -> Vec<VfView> {
        let Ok(guard) = self.lock() else {
            return Vec::new();
        };
        // What holds each VF, from one pass over the tokens (in ID order, the
        // first holder wins): asking every token about every VF is 16 million
        // steps under the state lock on a node of 4096 VFs, and the health
        // follower asks at start while the forwarder waits on that lock.
        let mut holders: BTreeMap<PciAddress, (&Token, Option<&VfUse>)> = BTreeMap::new();
        for t in guard.tokens.values() {
            let used = match &t.state {
                TokenState::InUse(u) => {
                    holders.entry(u.vf).or_insert((t, Some(u)));
                    Some(u.vf)
                }
                _ => None,
            };
            if let Some(b) = t.bound.as_ref().filter(|b| Some(b.vf) != used) {
                holders.entry(b.vf).or_insert((t, None));
            }
        }
        let mut out = Vec::new();
        for (pf, info) in &self.layout().pfs {
            for v in &info.vfs {
                let mut view = VfView {
                    vf: v.address,
                    pf: *pf,
                    iommu_group: v.iommu_group,
                    state: "free",
                    resource: None,
                    token: None,
                    connection: None,
                    kind: None,
                    expires_at: None,
                };
                if let Some((t, used)) = holders.get(&v.address) {
                    match used {
                        Some(u) => {
                            view.state = "in_use";
                            view.connection = Some(u.connection.clone());
                            view.kind = Some(u.kind);
                            view.expires_at = Some(u.expires_at);
                        }
                        None => view.state = "bound",
                    }
                    view.resource = Some(t.name.clone());
                    view.token = Some(shown(&t.id));
                }
                out.push(view);
            }
        }
        out
    }

    /// The pool for `/debug/state`: per resource, its counts per PF and
    /// every VF (`driver` names each VF's current driver, read by the
    /// caller, which has sysfs), tokens redacted.
    pub fn debug_state(&self, driver: &dyn Fn(PciAddress) -> Option<String>) -> serde_json::Value {
        let counts = self.vf_counts();
        let views = self.vf_views();
        let mut resources = serde_json::Map::new();
        for name in self.names() {
            let pfs: Vec<serde_json::Value> = counts
                .iter()
                .filter(|c| c.resource == name)
                .map(|c| {
                    let vfs: Vec<serde_json::Value> = views
                        .iter()
                        .filter(|v| v.pf == c.pf)
                        .map(|v| {
                            let mut j = serde_json::to_value(v).unwrap_or_default();
                            if let Some(o) = j.as_object_mut() {
                                o.insert("driver".into(), driver(v.vf).into());
                            }
                            j
                        })
                        .collect();
                    serde_json::json!({
                        "pf": c.pf,
                        "total": c.total,
                        "free": c.free,
                        "allocated": c.allocated,
                        "in_use": c.in_use,
                        "vfs": vfs,
                    })
                })
                .collect();
            resources.insert(name, serde_json::json!({ "pfs": pfs }));
        }
        serde_json::Value::Object(resources)
    }
}
