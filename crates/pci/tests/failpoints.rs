#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The `failpoints` feature: with it, an armed point kills a bind between
//! two sysfs writes with SIGKILL; without it, the same environment changes
//! nothing. The bind runs in a child process (this test binary again), on a
//! fake tree the parent owns and inspects afterwards.

use std::os::unix::process::ExitStatusExt;
use std::process::Command;

use sriov_pci::PciAddress;
use sriov_pci_fake::{FakeSysfs, fixtures};

/// Set in the child: the root of the tree to bind in.
const CHILD_TREE: &str = "SRIOV_PCI_FAILPOINT_TREE";
const TEST: &str = "an_armed_point_stops_a_bind_only_in_a_failpoints_build";

fn vf() -> PciAddress {
    "0000:3b:02.0".parse().unwrap()
}

#[test]
fn an_armed_point_stops_a_bind_only_in_a_failpoints_build() {
    if let Some(root) = std::env::var_os(CHILD_TREE) {
        let fake = FakeSysfs::attach(root).unwrap();
        fake.sysfs().bind(vf(), "vfio-pci").unwrap();
        return;
    }
    for (point, override_written) in [
        ("pci.bind.after-unbind", false),
        ("pci.bind.after-override", true),
    ] {
        let fake = fixtures::x710_2port(FakeSysfs::builder()).build().unwrap();
        // Captured, so the child's own `test result:` lines are not counted as tests.
        let child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", TEST, "--test-threads", "1"])
            .env(CHILD_TREE, fake.root())
            .env("NSM_FAILPOINTS", point)
            .output()
            .unwrap();
        let status = child.status;
        let stderr = String::from_utf8_lossy(&child.stderr);
        let sysfs = fake.sysfs();
        let driver = sysfs.driver(vf()).unwrap();
        let override_path = sysfs.device_dir(vf()).join("driver_override");
        let driver_override = std::fs::read_to_string(override_path).unwrap();
        if cfg!(feature = "failpoints") {
            assert_eq!(status.signal(), Some(9), "{point}: {status}: {stderr}");
            // Unbound from iavf, and never probed onto vfio-pci.
            assert_eq!(driver, None, "{point}");
            assert_eq!(
                driver_override.trim() == "vfio-pci",
                override_written,
                "{point}: driver_override {driver_override:?}"
            );
        } else {
            assert!(status.success(), "{point}: {status}: {stderr}");
            assert_eq!(driver.as_deref(), Some("vfio-pci"), "{point}");
        }
    }
}
