//! Copies the part of a real sysfs the PCI crate reads into a fixture tree.
//!
//! `sysfs-capture [--sys /sys] [--driver NAME]... <dest-dir> <pf-bdf>...`
//! (used inside the QEMU guest on real igb VFs).

use std::path::PathBuf;
use std::process::ExitCode;

use sriov_pci::PciAddress;

fn main() -> ExitCode {
    let mut sys = PathBuf::from("/sys");
    let mut drivers: Vec<String> = Vec::new();
    let mut positional = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--sys" => sys = args.next().map(PathBuf::from).unwrap_or(sys),
            "--driver" => drivers.extend(args.next()),
            _ => positional.push(a),
        }
    }
    if positional.len() < 2 {
        eprintln!("usage: sysfs-capture [--sys /sys] [--driver NAME]... <dest-dir> <pf-bdf>...");
        return ExitCode::from(2);
    }
    let dest = PathBuf::from(positional.remove(0));
    let mut pfs = Vec::new();
    for p in &positional {
        match p.parse::<PciAddress>() {
            Ok(a) => pfs.push(a),
            Err(e) => {
                eprintln!("sysfs-capture: {e}");
                return ExitCode::from(2);
            }
        }
    }
    let extra: Vec<&str> = drivers.iter().map(String::as_str).collect();
    match sriov_pci_fake::capture(&sys, &pfs, &extra, &dest) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sysfs-capture: capturing into {}: {e}", dest.display());
            ExitCode::FAILURE
        }
    }
}
