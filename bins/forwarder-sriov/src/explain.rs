//! `explain`: for every PCI network device, the resources it serves or why it serves none; for
//! every configured resource, why kubelet shows the count it shows. Read-only, from the
//! environment `check-config` reads, judged by the same `pool_entries` the daemon starts from.

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};
use std::path::Path;

use anyhow::Result;
use serde::{Deserialize, Serialize};
use sriov_config::{EnvConfig, SkippedPf, SriovConfig};
use sriov_pci::{PciAddress, Sysfs};
use sriov_token_pool::{FileStore, PfEntry, Token};

/// The answer, as a table ([`Display`](fmt::Display)) or JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Report {
    /// The config file judged.
    pub(crate) config_file: String,
    /// Every PF, VF and other network function, by address.
    pub(crate) devices: Vec<DeviceRow>,
    /// Every resource the config names, sorted.
    pub(crate) resources: Vec<ResourceRow>,
    /// Config warnings and facts that change no single device (a PF not on this node).
    pub(crate) notes: Vec<String>,
}

/// One PCI network function.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct DeviceRow {
    pub(crate) address: String,
    /// `vendor:device`.
    pub(crate) ids: Option<String>,
    pub(crate) driver: Option<String>,
    pub(crate) netdevs: Vec<String>,
    /// For VFs: the PF and the VF index.
    pub(crate) pf: Option<String>,
    pub(crate) vf_index: Option<u32>,
    pub(crate) outcome: Outcome,
}

/// What a function is to the forwarder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "camelCase")]
pub(crate) enum Outcome {
    /// A VF in the pool, under every name of its PF.
    Joined { resources: Vec<String> },
    /// A configured PF whose VFs are served.
    ServingPf { resources: Vec<String>, vfs: usize },
    /// Left out, with the first reason.
    Excluded { reason: String },
}

/// Why a resource has its count.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ResourceRow {
    /// `serviceDomain/capability`.
    pub(crate) resource: String,
    /// Devices kubelet sees as healthy.
    pub(crate) allocatable: usize,
    /// VFs of its PFs.
    pub(crate) vfs: usize,
    /// One line per PF and per reason.
    pub(crate) why: Vec<String>,
}

fn netdev_of(netdevs: &[String]) -> String {
    netdevs
        .first()
        .map_or_else(String::new, |n| format!(" ({n})"))
}

fn ids_of(sysfs: &Sysfs, address: PciAddress) -> Option<String> {
    sysfs
        .ids(address)
        .ok()
        .map(|i| format!("{:04x}:{:04x}", i.vendor, i.device))
}

fn skipped_line(s: &SkippedPf) -> String {
    match s.line {
        Some(l) => format!("{} (line {l})", s.reason),
        None => s.reason.to_string(),
    }
}

/// Builds the report for `config_file` on `sysfs`; `tokens` is the pool's recorded state.
pub(crate) fn report(config_file: &Path, sysfs: &Sysfs, tokens: &[Token]) -> Result<Report> {
    let found = sriov_forwarder::pool_entries(config_file, sysfs, false)?;
    // pool_entries has checked it; read again for each PF's lines and virtualFunctions.
    let config = SriovConfig::load(config_file)?.config;
    let inventory = sysfs.discover_all()?;
    let file = config_file.display().to_string();
    let entry = |pf: PciAddress| found.entries.iter().find(|e| e.pf.device.address == pf);
    let skipped = |pf: PciAddress| found.skipped.iter().find(|s| s.pf == pf);
    let mut devices = Vec::new();
    for pf in &inventory.physical_functions {
        let d = &pf.device;
        let configured = config.physical_functions.get(&d.address);
        let pf_outcome = match (entry(d.address), skipped(d.address), configured) {
            (Some(e), _, _) => Outcome::ServingPf {
                resources: e.names.clone(),
                vfs: e.pf.vfs.len(),
            },
            (None, Some(s), _) => Outcome::Excluded {
                reason: format!("configured PF skipped: {}", skipped_line(s)),
            },
            // The file is named once, above the resources.
            _ => Outcome::Excluded {
                reason: "PF not in the config".to_string(),
            },
        };
        devices.push(DeviceRow {
            address: d.address.to_string(),
            ids: Some(format!("{:04x}:{:04x}", d.ids.vendor, d.ids.device)),
            driver: d.driver.clone(),
            netdevs: d.netdevs.clone(),
            pf: None,
            vf_index: None,
            outcome: pf_outcome,
        });
        for vf in &pf.vfs {
            let outcome = match (entry(d.address), configured) {
                (Some(e), _) if e.pf.vfs.iter().any(|v| v.address == vf.address) => {
                    Outcome::Joined {
                        resources: e.names.clone(),
                    }
                }
                (Some(_), Some(c)) => Outcome::Excluded {
                    reason: format!(
                        "VF {} of {} is not in its virtualFunctions list{}",
                        vf.index,
                        d.address,
                        c.line
                            .map_or_else(String::new, |l| format!(" ({file}: PF at line {l})"))
                    ),
                },
                (None, Some(_)) => Outcome::Excluded {
                    reason: format!("its PF {} is skipped", d.address),
                },
                _ => Outcome::Excluded {
                    reason: format!(
                        "PF {}{} not in the config",
                        d.address,
                        netdev_of(&d.netdevs)
                    ),
                },
            };
            devices.push(DeviceRow {
                address: vf.address.to_string(),
                ids: ids_of(sysfs, vf.address),
                driver: vf.driver.clone(),
                netdevs: vf.netdevs.clone(),
                pf: Some(d.address.to_string()),
                vf_index: Some(vf.index),
                outcome,
            });
        }
    }
    for d in &inventory.other_devices {
        // Only network functions: the rest of the bus has nothing to do with pools.
        if d.ids.class >> 16 != 0x02 {
            continue;
        }
        let reason = match skipped(d.address) {
            Some(s) => format!("configured PF skipped: {}", skipped_line(s)),
            None => "neither an SR-IOV PF nor a VF".to_string(),
        };
        devices.push(DeviceRow {
            address: d.address.to_string(),
            ids: Some(format!("{:04x}:{:04x}", d.ids.vendor, d.ids.device)),
            driver: d.driver.clone(),
            netdevs: d.netdevs.clone(),
            pf: None,
            vf_index: None,
            outcome: Outcome::Excluded { reason },
        });
    }
    devices.sort_by(|a, b| a.address.cmp(&b.address));

    let mut notes: Vec<String> = found.warnings.iter().map(ToString::to_string).collect();
    notes.extend(
        found
            .skipped
            .iter()
            .filter(|s| s.reason.is_absent())
            .map(ToString::to_string),
    );
    Ok(Report {
        config_file: file,
        devices,
        resources: resources(&config, &found.entries, &found.skipped, tokens),
        notes,
    })
}

/// Per resource: its PFs' VFs, minus VFs pods hold under the PF's other names (a PF's VFs are
/// shared by its names, and the token pool marks free tokens beyond the room left
/// unhealthy), plus every configured PF that contributes nothing, with why.
fn resources(
    config: &SriovConfig,
    entries: &[PfEntry],
    skipped: &[SkippedPf],
    tokens: &[Token],
) -> Vec<ResourceRow> {
    let mut rows: BTreeMap<String, ResourceRow> = BTreeMap::new();
    for name in config
        .physical_functions
        .values()
        .flat_map(|c| c.resource_names())
    {
        rows.entry(name.clone()).or_insert(ResourceRow {
            resource: name,
            allocatable: 0,
            vfs: 0,
            why: Vec::new(),
        });
    }
    for e in entries {
        let pf = e.pf.device.address;
        for name in &e.names {
            let Some(row) = rows.get_mut(name) else {
                continue;
            };
            let vfs = e.pf.vfs.len();
            let mut held_elsewhere: BTreeMap<&str, usize> = BTreeMap::new();
            for t in tokens
                .iter()
                .filter(|t| t.pf == pf && t.reserves() && t.name != *name)
            {
                *held_elsewhere.entry(t.name.as_str()).or_default() += 1;
            }
            let held: usize = held_elsewhere.values().sum();
            row.vfs += vfs;
            row.allocatable += vfs.saturating_sub(held);
            let mut line = format!("PF {pf}{}: {vfs} VFs", netdev_of(&e.pf.device.netdevs));
            if vfs == 0 {
                let _ = write!(
                    line,
                    " now; the daemon creates sriov_totalvfs ({}) at start",
                    e.pf.total_vfs
                );
            }
            for (other, n) in &held_elsewhere {
                let _ = write!(line, ", minus {n} held by pods as {other}");
            }
            row.why.push(line);
        }
    }
    for s in skipped {
        for name in &s.resource_names {
            if let Some(row) = rows.get_mut(name) {
                row.why
                    .push(format!("PF {} skipped: {}", s.pf, skipped_line(s)));
            }
        }
    }
    for row in rows.values_mut() {
        if row.why.is_empty() {
            row.why
                .push("no configured PF on this node serves it".to_string());
        }
    }
    rows.into_values().collect()
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let dash = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
        writeln!(
            f,
            "{:<13} {:<9} {:<10} {:<12} {:<16} RESULT",
            "DEVICE", "IDS", "DRIVER", "NETDEV", "VF OF"
        )?;
        for d in &self.devices {
            let vf_of = match (&d.pf, d.vf_index) {
                (Some(pf), Some(i)) => format!("{pf} #{i}"),
                _ => "-".into(),
            };
            let result = match &d.outcome {
                Outcome::Joined { resources } => format!("in {}", resources.join(", ")),
                Outcome::ServingPf { resources, vfs: 0 } => format!(
                    "PF: no VFs yet (the daemon creates them at start) for {}",
                    resources.join(", ")
                ),
                Outcome::ServingPf { resources, vfs } => {
                    format!("PF: its {vfs} VFs serve {}", resources.join(", "))
                }
                Outcome::Excluded { reason } => format!("EXCLUDED {reason}"),
            };
            let netdevs = if d.netdevs.is_empty() {
                "-".to_string()
            } else {
                d.netdevs.join(",")
            };
            writeln!(
                f,
                "{:<13} {:<9} {:<10} {:<12} {:<16} {result}",
                d.address,
                dash(&d.ids),
                dash(&d.driver),
                netdevs,
                vf_of
            )?;
        }
        writeln!(f)?;
        writeln!(f, "RESOURCES ({})", self.config_file)?;
        for r in &self.resources {
            writeln!(f, "{}: {} allocatable", r.resource, r.allocatable)?;
            for why in &r.why {
                writeln!(f, "    {why}")?;
            }
        }
        if !self.notes.is_empty() {
            writeln!(f)?;
            writeln!(f, "NOTES")?;
            for n in &self.notes {
                writeln!(f, "    {n}")?;
            }
        }
        Ok(())
    }
}

/// `forwarder-sriov explain [--json]`.
pub(crate) fn run(json: bool) -> Result<()> {
    let loaded = EnvConfig::from_env()?;
    for w in &loaded.warnings {
        eprintln!("warning: {w}");
    }
    let env = loaded.config;
    let sysfs = crate::cli::sysfs_at(&env.pci_devices_path, &env.pci_drivers_path, false)?;
    // What pods hold changes the count kubelet sees; a node without state yet holds nothing.
    let tokens = match FileStore::read_tokens(&env.state_dir) {
        Ok(t) => t,
        Err(e) => {
            eprintln!(
                "warning: pool state in {} unreadable, counted as empty: {e}",
                env.state_dir.display()
            );
            Vec::new()
        }
    };
    let report = report(&env.sriov_config_file, &sysfs, &tokens)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{report}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_json_form_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        sriov_pci_fake::copy_tree(&sriov_pci_fake::testdata_sysfs().join("node"), dir.path())
            .unwrap();
        let config = dir.path().join("pci.config");
        std::fs::write(
            &config,
            "physicalFunctions:\n  0000:3b:00.0:\n    pfKernelDriver: i40e\n    vfKernelDriver: iavf\n    capabilities: [10G]\n    serviceDomains: [sd]\n  0000:99:00.0:\n    pfKernelDriver: i40e\n    vfKernelDriver: iavf\n    capabilities: [10G]\n    serviceDomains: [sd]\n",
        )
        .unwrap();
        let sysfs = Sysfs::new(
            dir.path().join("bus/pci/devices"),
            dir.path().join("bus/pci/drivers"),
        );
        let report = report(&config, &sysfs, &[]).unwrap();
        let json = serde_json::to_string(&report).unwrap();
        let back: Report = serde_json::from_str(&json).unwrap();
        assert_eq!(back, report);
        assert_eq!(report.resources.len(), 1);
        assert_eq!(report.resources[0].allocatable, 4);
        assert_eq!(report.notes.len(), 1, "the absent PF: {:?}", report.notes);
    }
}
