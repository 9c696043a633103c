//! Lists every SR-IOV physical function with its VFs, and the other PCI devices.
//!
//! ```text
//! cargo run -p sriov-pci --example list_vfs            # a fake node (sriov-pci-fake)
//! cargo run -p sriov-pci --example list_vfs -- /sys    # this host, read only
//! ```
//!
//! The argument is the root of a sysfs mount (or of a copy of one, such as a
//! tree captured with `sysfs-capture`): the PCI bus is read from
//! `<root>/bus/pci`. Without it the example builds the `node` fixture of
//! `sriov-pci-fake` in a temp dir: an Intel X710, a Mellanox ConnectX-5, an
//! Intel 82576, an on-board NIC and a device no driver claims. Nothing is
//! written either way.

use std::error::Error;
use std::process::ExitCode;

use sriov_pci::{Inventory, PciDevice, Sysfs};
use sriov_pci_fake::fixtures;

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("list_vfs: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), Box<dyn Error>> {
    // The fake tree lives as long as `_fake`: a temp dir removed on drop.
    let (sysfs, _fake) = match std::env::args_os().nth(1) {
        Some(root) => (Sysfs::under_root(root), None),
        None => {
            let fake = fixtures::node().build()?;
            (fake.sysfs(), Some(fake))
        }
    };
    println!("PCI devices under {}", sysfs.devices_dir().display());
    let inventory = sysfs.discover_all()?;
    print(&inventory);
    println!("({} files, links and directories read)", sysfs.files_read());
    Ok(())
}

fn print(inventory: &Inventory) {
    for pf in &inventory.physical_functions {
        println!(
            "PF {}  {}  VFs {}/{}{}",
            pf.device.address,
            describe(&pf.device),
            pf.vfs.len(),
            pf.total_vfs,
            pf.vf_device_id
                .map(|id| format!(" (device id {id:04x})"))
                .unwrap_or_default(),
        );
        for vf in &pf.vfs {
            println!(
                "  VF {:>3} {}  driver {:<10} iommu group {:<5} netdevs {}",
                vf.index,
                vf.address,
                vf.driver.as_deref().unwrap_or("-"),
                vf.iommu_group
                    .map(|g| g.to_string())
                    .unwrap_or_else(|| "-".into()),
                list(&vf.netdevs),
            );
        }
    }
    if inventory.physical_functions.is_empty() {
        println!("no SR-IOV physical functions");
    }
    for dev in &inventory.other_devices {
        println!("   {}  {}", dev.address, describe(dev));
    }
}

/// `vendor:device class driver numa netdevs` of one function.
fn describe(dev: &PciDevice) -> String {
    format!(
        "{:04x}:{:04x} class {:06x}  driver {:<10} numa {:<2} netdevs {}",
        dev.ids.vendor,
        dev.ids.device,
        dev.ids.class,
        dev.driver.as_deref().unwrap_or("-"),
        dev.numa_node
            .map(|n| n.to_string())
            .unwrap_or_else(|| "-".into()),
        list(&dev.netdevs),
    )
}

fn list(names: &[String]) -> String {
    if names.is_empty() {
        "-".into()
    } else {
        names.join(",")
    }
}
