//! Binds an SR-IOV VF to vfio-pci, shows what a container needs to use it
//! (its IOMMU group, the `/dev/vfio` nodes and their cgroup v1 device rules),
//! then gives the VF back to the driver it had.
//!
//! ```text
//! cargo run -p sriov-vfio --example bind_vfio                    # a fake X710 (sriov-pci-fake)
//! cargo run -p sriov-vfio --example bind_vfio -- /sys 0000:3b:02.0 [/dev/vfio]   # a real VF, as root
//! ```
//!
//! Without arguments the example builds an Intel X710 fixture of
//! `sriov-pci-fake` in a temp dir and uses its first VF; the fake kernel
//! moves the `driver` link as Linux does, but makes no device nodes, so the
//! numbers of the `/dev/vfio` nodes are made up (VFIO's 10:196 and major 243).
//!
//! With a sysfs root and a VF address it really rebinds that VF: it needs
//! root and the vfio-pci module loaded, the VF's network interface goes
//! away while it is on vfio-pci, and the node numbers are read from the
//! VFIO directory (`/dev/vfio` unless a third argument names another).

use std::error::Error;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use sriov_pci::{PciAddress, Sysfs};
use sriov_pci_fake::{FakeSysfs, fixtures};
use sriov_vfio::{DeviceNodes, DeviceNumber, IommuGroup, VfioDir};

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bind_vfio: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), Box<dyn Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // The fake tree lives as long as `_fake`: a temp dir removed on drop.
    let (sysfs, vf, vfio, _fake) = match args.as_slice() {
        [] => {
            let fake = fixtures::x710_2port(FakeSysfs::builder()).build()?;
            let vfio = VfioDir::with_device_nodes(fake.root().join("dev/vfio"), Arc::new(MadeUp));
            (fake.sysfs(), "0000:3b:02.0".parse()?, vfio, Some(fake))
        }
        [root, vf, rest @ ..] if rest.len() <= 1 => {
            let vfio = VfioDir::new(rest.first().map_or("/dev/vfio", String::as_str));
            (Sysfs::under_root(root), vf.parse()?, vfio, None)
        }
        _ => return Err("usage: bind_vfio [SYSFS_ROOT VF_ADDRESS [VFIO_DIR]]".into()),
    };

    // A guard for real hosts: a PF or any other device may be what the host
    // itself runs on (its network, its disk); only VFs are moved.
    let Some(pf) = sysfs.physfn(vf)? else {
        return Err(format!("{vf} is not an SR-IOV VF (it has no physfn link)").into());
    };
    let previous = sysfs.bind(vf, "vfio-pci")?;
    println!(
        "VF {vf} of PF {pf}: {} -> {}",
        previous.as_deref().unwrap_or("no driver"),
        sysfs.driver(vf)?.as_deref().unwrap_or("no driver"),
    );
    // Whatever the VFIO side finds, the VF goes back to its driver.
    let shown = show_vfio(&sysfs, vf, &vfio);
    sysfs.restore_driver(vf, previous.as_deref())?;
    println!(
        "VF {vf} back on {}",
        sysfs.driver(vf)?.as_deref().unwrap_or("no driver")
    );
    shown
}

/// The IOMMU group of `vf` and the nodes a container opens to use it.
fn show_vfio(sysfs: &Sysfs, vf: PciAddress, vfio: &VfioDir) -> Result<(), Box<dyn Error>> {
    let group = IommuGroup::of_device(sysfs.devices_dir(), vf)?;
    println!(
        "IOMMU group {}{}",
        group.id,
        if group.noiommu {
            " (no-IOMMU mode: no DMA isolation)"
        } else {
            ""
        }
    );
    let (container, group_node) = vfio.devices_for(&group)?;
    for (path, number) in [
        (vfio.container_path(), container),
        (vfio.group_path(&group), group_node),
    ] {
        println!(
            "  {}  {number}  cgroup v1 rule: {}",
            path.display(),
            number.cgroup_rule()
        );
    }
    println!("(CgroupDevices::grant_all writes those rules to a container's devices.allow)");
    Ok(())
}

/// Device numbers for the fake tree, which has no device nodes: the VFIO
/// container node's 10:196 and the groups' nodes on major 243.
#[derive(Debug)]
struct MadeUp;

impl DeviceNodes for MadeUp {
    fn device_number(&self, path: &Path) -> sriov_vfio::Result<DeviceNumber> {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name == "vfio" {
            return Ok(DeviceNumber::new(10, 196));
        }
        let group: IommuGroup = name.parse()?;
        Ok(DeviceNumber::new(243, group.id))
    }
}
