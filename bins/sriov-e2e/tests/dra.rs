#![allow(clippy::unwrap_used, clippy::expect_used)]
//! `sriov-device-plugin dra` end to end on a private copy of the node fixture, through
//! `sriov-e2e dra` (stand-ins for kubelet and the API server): registration, the published
//! ResourceSlices and their attributes, health, a vfio-pci claim prepared (through the fake
//! kernel) twice, a kill and restart between prepare and unprepare, v1beta1, a config reload
//! shrinking the slices, SIGTERM. The plugin must be a `testing` build (the fake kernel drives
//! the fixture's driver binds); `cargo xtask test` builds the workspace that way.

use std::path::{Path, PathBuf};
use std::process::Command;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `sriov-device-plugin` next to this test's own build output.
fn plugin_bin() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(Path::parent).unwrap();
    let bin = dir.join("sriov-device-plugin");
    assert!(
        bin.exists(),
        "{} is missing: build the workspace's binaries first (cargo test --workspace does)",
        bin.display()
    );
    bin
}

#[test]
fn dra_mode_prepares_and_unprepares_claims_on_the_fixture() {
    let tmp = tempfile::tempdir().unwrap();
    let sysfs = tmp.path().join("sysfs");
    sriov_pci_fake::copy_tree(&workspace().join("testdata/sysfs/node"), &sysfs).unwrap();
    // Both X710 PFs' VFs on their kernel driver (a VF Prepare binds to vfio-pci leaves this
    // selector, yet stays published while held), then only the first PF's.
    let config = tmp.path().join("config.json");
    std::fs::write(
        &config,
        r#"{"resourceList":[{"resourceName":"x710","selectors":{"drivers":["iavf"]}}]}"#,
    )
    .unwrap();
    let smaller = tmp.path().join("smaller.json");
    std::fs::write(
        &smaller,
        r#"{"resourceList":[{"resourceName":"x710","selectors":{"pfNames":["ens785f0"]}}]}"#,
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_sriov-e2e"))
        .arg("dra")
        .arg("--plugin")
        .arg(plugin_bin())
        .arg("--config")
        .arg(&config)
        .arg("--sysfs-root")
        .arg(&sysfs)
        .arg("--work")
        .arg(tmp.path().join("work"))
        .args(["--expect", "8"])
        .arg("--reload")
        .arg(format!("{}=4", smaller.display()))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    if !out.status.success() {
        for log in std::fs::read_dir(tmp.path().join("work")).unwrap() {
            let path = log.unwrap().path();
            if path.extension().is_some_and(|e| e == "log") {
                eprintln!("--- {}", path.display());
                eprintln!("{}", std::fs::read_to_string(&path).unwrap_or_default());
            }
        }
    }
    assert!(out.status.success(), "sriov-e2e dra failed");
    for check in [
        "PASS dra-registered",
        "PASS dra-slices-published",
        "PASS dra-health",
        "PASS dra-prepare-vfio",
        "PASS dra-cdi-spec",
        "PASS dra-held-device-stays-published",
        "PASS dra-prepare-idempotent",
        "PASS dra-held-device-published-after-restart",
        "PASS dra-unprepare-after-restart",
        "PASS dra-unprepare-unknown",
        "PASS dra-v1beta1-kernel-driver",
        "PASS dra-reload",
        "PASS dra-graceful-shutdown",
    ] {
        assert!(stdout.contains(check), "missing {check:?}");
    }
}
