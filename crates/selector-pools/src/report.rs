//! `explain`: for every device the pool it joined or the one reason that best says why it
//! joined none, and for every pool why it has the count it has. Built on the same
//! [`PoolManager::judge`] as [`refresh`](PoolManager::refresh) and `--dry-run`, so it cannot
//! disagree with what the daemon serves.

use std::fmt::{self, Write as _};

use serde::{Deserialize, Serialize};

use crate::error::PoolError;
use crate::host::HostDevice;
use crate::pool::{PoolManager, Refusal, uplink_health};

/// SRDP's selector order. A refusal by a later selector means the device passed every earlier
/// one, so it is the nearest miss and the likeliest typo to fix.
const SELECTOR_ORDER: [&str; 13] = [
    "vendors",
    "devices",
    "drivers",
    "pciAddresses",
    "acpiIndexes",
    "auxTypes",
    "pfNames",
    "rootDevices",
    "linkTypes",
    "ddpProfiles",
    "pKeys",
    "isRdma",
    "vdpaType",
];

fn depth(refusal: &Refusal) -> usize {
    match refusal {
        Refusal::DeviceType(_) => 0,
        Refusal::Selector { rejection, .. } => SELECTOR_ORDER
            .iter()
            .position(|k| *k == rejection.selector)
            .map_or(1, |p| p + 2),
    }
}

/// The nearest miss among one pool's refusals (the first of equals).
fn deepest(refusals: &[Refusal]) -> Option<&Refusal> {
    refusals.iter().rev().max_by_key(|r| depth(r))
}

/// The whole answer of `sriov-device-plugin explain`; [`Display`](fmt::Display) is its table,
/// serde its `--json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// Every network and accelerator function (and auxiliary device), by address.
    pub devices: Vec<DeviceReport>,
    /// Every configured resource, in config order.
    pub pools: Vec<PoolReport>,
    /// Resources the config leaves out (selectors that do not parse) and its warnings.
    #[serde(default)]
    pub config: Vec<String>,
}

/// One device and what happened to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceReport {
    /// Kubelet's device ID: the PCI address, or the auxiliary device's name.
    pub id: String,
    /// The PCI address.
    pub address: String,
    /// `vendor:device`, when they could be read.
    pub ids: Option<String>,
    /// Bound driver.
    pub driver: Option<String>,
    /// Its interfaces.
    pub netdevs: Vec<String>,
    /// For VFs: the PF's address.
    pub pf: Option<String>,
    /// For VFs: the PF's interface.
    pub pf_name: Option<String>,
    /// For VFs: the VF index.
    pub vf_index: Option<u32>,
    /// What happened.
    pub outcome: Outcome,
}

/// What happened to a device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "camelCase")]
pub enum Outcome {
    /// A pool took it.
    #[serde(rename_all = "camelCase")]
    Joined {
        /// `<prefix>/<name>`.
        resource: String,
        /// The selector object that took it.
        selector: usize,
        /// Why kubelet is told it is unhealthy, when it is.
        unhealthy: Option<String>,
    },
    /// Every pool refused it.
    #[serde(rename_all = "camelCase")]
    Excluded {
        /// The nearest miss: `<resource>: selectors[i]: <selector>: <why>`.
        reason: String,
        /// Every pool's refusals.
        refusals: Vec<PoolRefusal>,
    },
    /// Discovery left it out before any pool looked.
    #[serde(rename_all = "camelCase")]
    Skipped {
        /// Why.
        reason: String,
    },
}

/// Why one pool refused a device: one line per selector object (or one for the device type).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolRefusal {
    /// `<prefix>/<name>`.
    pub resource: String,
    /// `selectors[i]: <selector>: <why>`, in selector order.
    pub reasons: Vec<String>,
}

/// One device named with why (an unhealthy member, a device taken elsewhere, ...).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceNote {
    /// Kubelet's device ID.
    pub id: String,
    /// Why it is listed.
    pub why: String,
}

/// Why a pool has the count it has.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PoolReport {
    /// `<prefix>/<name>`.
    pub resource: String,
    /// What kubelet shows as allocatable: members minus unhealthy.
    pub allocatable: usize,
    /// Devices the pool took.
    pub members: usize,
    /// How many each selector object took, by index.
    pub by_selector: Vec<usize>,
    /// Members kubelet is told are unhealthy, with why.
    pub unhealthy: Vec<DeviceNote>,
    /// Devices its selectors take that an earlier pool took first (first match wins).
    pub taken_earlier: Vec<DeviceNote>,
    /// Devices its selectors take that discovery left out (a PF with VFs, the default route).
    pub skipped: Vec<DeviceNote>,
    /// When it has no member: the device that came nearest, with the selector that refused it.
    pub nearest_miss: Option<DeviceNote>,
    /// Whether the plugin registers it with kubelet (only once it has a member, as SRDP).
    pub registered: bool,
}

impl PoolReport {
    /// One line per reason for the count, for the table.
    pub fn why(&self) -> Vec<String> {
        let mut out = Vec::new();
        let ids = |notes: &[DeviceNote]| {
            notes
                .iter()
                .map(|n| format!("{} ({})", n.id, n.why))
                .collect::<Vec<_>>()
                .join(", ")
        };
        if self.members == 0 {
            out.push("no device matched its selectors".to_string());
        } else {
            let per: Vec<String> = self
                .by_selector
                .iter()
                .enumerate()
                .map(|(i, n)| format!("selectors[{i}]: {n}"))
                .collect();
            out.push(format!("{} matched ({})", self.members, per.join(", ")));
        }
        if !self.unhealthy.is_empty() {
            out.push(format!(
                "minus {} unhealthy: {}",
                self.unhealthy.len(),
                ids(&self.unhealthy)
            ));
        }
        if !self.taken_earlier.is_empty() {
            out.push(format!(
                "{} more match but an earlier pool took them (first match wins): {}",
                self.taken_earlier.len(),
                ids(&self.taken_earlier)
            ));
        }
        if !self.skipped.is_empty() {
            out.push(format!(
                "{} more match but were left out: {}",
                self.skipped.len(),
                ids(&self.skipped)
            ));
        }
        if let Some(near) = &self.nearest_miss {
            out.push(format!("nearest miss: {}: {}", near.id, near.why));
        }
        if !self.registered {
            out.push("not registered with kubelet until a device matches".to_string());
        }
        out
    }
}

fn device_report(dev: &HostDevice, outcome: Outcome) -> DeviceReport {
    DeviceReport {
        id: dev.id(),
        address: dev.address.to_string(),
        ids: Some(dev.ids()),
        driver: dev.driver.clone(),
        netdevs: dev.netdevs.clone(),
        pf: dev.pf.map(|a| a.to_string()),
        pf_name: dev.pf_name.clone(),
        vf_index: dev.vf_index,
        outcome,
    }
}

impl PoolManager {
    /// Judges every device against every pool as [`refresh`](Self::refresh) would, with
    /// health from the manager's [`LinkHealth`](crate::LinkHealth) (the uplink part: a netdev
    /// that vanished since an earlier pass needs the daemon's memory and is not reported).
    /// Reads only; the pools are left as they are.
    pub fn report(&self) -> Result<Report, PoolError> {
        let discovery = self.host.discover()?;
        let pools = self.pools();
        let mut reports: Vec<PoolReport> = pools
            .iter()
            .map(|p| PoolReport {
                resource: p.resource_name().to_string(),
                allocatable: 0,
                members: 0,
                by_selector: vec![0; p.config().selectors.len()],
                unhealthy: Vec::new(),
                taken_earlier: Vec::new(),
                skipped: Vec::new(),
                nearest_miss: None,
                registered: false,
            })
            .collect();
        // Per pool, the depth of its nearest miss so far.
        let mut nearest: Vec<Option<usize>> = vec![None; pools.len()];
        let mut devices = Vec::new();
        for dev in discovery.devices.iter().chain(&discovery.aux_devices) {
            let mut joined: Option<Outcome> = None;
            let mut refusals = Vec::new();
            let mut best: Option<(usize, String)> = None;
            for ((pool, report), near) in pools.iter().zip(&mut reports).zip(&mut nearest) {
                let verdict = self.judge(pool, dev);
                // A pool's nearest miss may be a device another pool took: the VFs it was
                // meant for, kept out by their driver, say most about its count.
                if let Err(why) = &verdict
                    && let Some(r) = deepest(why)
                    && near.is_none_or(|n| depth(r) > n)
                {
                    *near = Some(depth(r));
                    report.nearest_miss = Some(DeviceNote {
                        id: dev.id(),
                        why: r.to_string(),
                    });
                }
                if let Some(Outcome::Joined { resource, .. }) = &joined {
                    if verdict.is_ok() {
                        report.taken_earlier.push(DeviceNote {
                            id: dev.id(),
                            why: format!("in {resource}"),
                        });
                    }
                    continue;
                }
                match verdict {
                    Ok(selector) => {
                        let unhealthy =
                            uplink_health(dev, pool.is_allocated(&dev.id()), self.links.as_ref())
                                .map(|u| u.why);
                        report.members += 1;
                        if let Some(n) = report.by_selector.get_mut(selector) {
                            *n += 1;
                        }
                        match &unhealthy {
                            Some(why) => report.unhealthy.push(DeviceNote {
                                id: dev.id(),
                                why: why.clone(),
                            }),
                            None => report.allocatable += 1,
                        }
                        joined = Some(Outcome::Joined {
                            resource: pool.resource_name().to_string(),
                            selector,
                            unhealthy,
                        });
                    }
                    Err(why) => {
                        if let Some(r) = deepest(&why) {
                            let d = depth(r);
                            if best.as_ref().is_none_or(|(b, _)| d > *b) {
                                best = Some((d, format!("{}: {r}", pool.resource_name())));
                            }
                        }
                        refusals.push(PoolRefusal {
                            resource: pool.resource_name().to_string(),
                            reasons: why.iter().map(ToString::to_string).collect(),
                        });
                    }
                }
            }
            let outcome = joined.unwrap_or_else(|| Outcome::Excluded {
                reason: best.map_or_else(|| "no pool is configured".to_string(), |(_, r)| r),
                refusals,
            });
            devices.push(device_report(dev, outcome));
        }
        for (dev, reason) in &discovery.skipped {
            for (pool, report) in pools.iter().zip(&mut reports) {
                if self.judge(pool, dev).is_ok() {
                    report.skipped.push(DeviceNote {
                        id: dev.id(),
                        why: reason.to_string(),
                    });
                    break;
                }
            }
            devices.push(device_report(
                dev,
                Outcome::Skipped {
                    reason: reason.to_string(),
                },
            ));
        }
        for (address, reason) in &discovery.unreadable {
            devices.push(DeviceReport {
                id: address.to_string(),
                address: address.to_string(),
                ids: None,
                driver: None,
                netdevs: Vec::new(),
                pf: None,
                pf_name: None,
                vf_index: None,
                outcome: Outcome::Skipped {
                    reason: reason.to_string(),
                },
            });
        }
        for report in &mut reports {
            report.registered = report.members > 0;
            if report.members > 0 {
                report.nearest_miss = None;
            }
        }
        devices.sort_by(|a, b| (&a.address, &a.id).cmp(&(&b.address, &b.id)));
        Ok(Report {
            devices,
            pools: reports,
            config: self.config_notes.clone(),
        })
    }
}

/// Pads each column to its widest cell; the last column is left as it is.
fn table(rows: &[Vec<String>]) -> Vec<String> {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    rows.iter()
        .map(|r| {
            let mut line = String::new();
            for (i, cell) in r.iter().enumerate() {
                if i + 1 == r.len() {
                    line.push_str(cell);
                } else {
                    let w = widths.get(i).copied().unwrap_or(0);
                    let _ = write!(line, "{cell:<w$}  ");
                }
            }
            line
        })
        .collect()
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let dash = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
        let mut rows = vec![vec![
            "DEVICE".to_string(),
            "IDS".into(),
            "DRIVER".into(),
            "NETDEV".into(),
            "VF OF".into(),
            "RESULT".into(),
        ]];
        // Lines printed under a device's row: every other pool's refusal.
        let mut below: Vec<Vec<String>> = vec![Vec::new()];
        for d in &self.devices {
            let vf_of = match (&d.pf_name, &d.pf, d.vf_index) {
                (Some(name), _, Some(i)) => format!("{name} #{i}"),
                (None, Some(pf), Some(i)) => format!("{pf} #{i}"),
                _ => "-".into(),
            };
            let mut extra = Vec::new();
            let result = match &d.outcome {
                Outcome::Joined {
                    resource,
                    unhealthy: None,
                    ..
                } => format!("in {resource}"),
                Outcome::Joined {
                    resource,
                    unhealthy: Some(why),
                    ..
                } => format!("in {resource}, UNHEALTHY: {why}"),
                Outcome::Excluded { reason, refusals } => {
                    for r in refusals {
                        for why in &r.reasons {
                            let line = format!("{}: {why}", r.resource);
                            if line != *reason {
                                extra.push(format!("also not {line}"));
                            }
                        }
                    }
                    format!("EXCLUDED {reason}")
                }
                Outcome::Skipped { reason } => format!("SKIPPED {reason}"),
            };
            let id = if d.id == d.address {
                d.id.clone()
            } else {
                format!("{} on {}", d.id, d.address)
            };
            rows.push(vec![
                id,
                dash(&d.ids),
                dash(&d.driver),
                if d.netdevs.is_empty() {
                    "-".into()
                } else {
                    d.netdevs.join(",")
                },
                vf_of,
                result,
            ]);
            below.push(extra);
        }
        for (line, extra) in table(&rows).iter().zip(&below) {
            writeln!(f, "{}", line.trim_end())?;
            for e in extra {
                writeln!(f, "    {e}")?;
            }
        }
        writeln!(f)?;
        writeln!(f, "POOLS")?;
        for p in &self.pools {
            writeln!(f, "{}: {} allocatable", p.resource, p.allocatable)?;
            for why in p.why() {
                writeln!(f, "    {why}")?;
            }
        }
        if !self.config.is_empty() {
            writeln!(f)?;
            writeln!(f, "CONFIG")?;
            for note in &self.config {
                writeln!(f, "    {note}")?;
            }
        }
        Ok(())
    }
}
