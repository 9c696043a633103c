//! The human-readable inventory table.

use std::fmt::Write;

use sriov_pci::{Inventory, PciDevice};
use sriov_token_pool::PfEntry;

fn opt<T: ToString>(v: &Option<T>) -> String {
    v.as_ref()
        .map_or_else(|| "-".to_string(), ToString::to_string)
}

fn ids(d: &PciDevice) -> String {
    format!("{:04x}:{:04x}", d.ids.vendor, d.ids.device)
}

/// Renders PFs with their VFs, then the other devices.
pub(crate) fn render(inv: &Inventory) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Physical functions ({}):",
        inv.physical_functions.len()
    );
    for pf in &inv.physical_functions {
        let d = &pf.device;
        let _ = writeln!(
            out,
            "  {}  {}  driver={}  numa={}  iommu_group={}  netdev={}  vfs={}/{}",
            d.address,
            ids(d),
            opt(&d.driver),
            opt(&d.numa_node),
            opt(&d.iommu_group),
            if d.netdevs.is_empty() {
                "-".to_string()
            } else {
                d.netdevs.join(",")
            },
            pf.vfs.len(),
            pf.total_vfs,
        );
        for vf in &pf.vfs {
            let _ = writeln!(
                out,
                "    vf{:<3} {}  driver={}  iommu_group={}  netdev={}",
                vf.index,
                vf.address,
                opt(&vf.driver),
                opt(&vf.iommu_group),
                if vf.netdevs.is_empty() {
                    "-".to_string()
                } else {
                    vf.netdevs.join(",")
                },
            );
        }
    }
    let _ = writeln!(out, "Other devices ({}):", inv.other_devices.len());
    for d in &inv.other_devices {
        let _ = writeln!(
            out,
            "  {}  {}  class={:06x}  driver={}  netdev={}",
            d.address,
            ids(d),
            d.ids.class,
            opt(&d.driver),
            if d.netdevs.is_empty() {
                "-".to_string()
            } else {
                d.netdevs.join(",")
            },
        );
    }
    out
}

/// The kubelet resources the configured PFs would be advertised as, with
/// their VF counts (a PF's VFs count under each of its names).
pub(crate) fn render_resources(entries: &[PfEntry]) -> String {
    let mut resources = std::collections::BTreeMap::<&str, usize>::new();
    for e in entries {
        for n in &e.names {
            *resources.entry(n).or_default() += e.pf.vfs.len();
        }
    }
    let mut out = String::from("Resources advertised to kubelet:\n");
    for (name, count) in resources {
        let _ = writeln!(out, "  {name}: {count}");
    }
    out
}
