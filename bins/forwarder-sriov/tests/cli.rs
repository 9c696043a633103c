#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The binary's subcommands against a private copy of a shipped fixture.

use std::process::Command;

fn fixture_copy() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    sriov_pci_fake::copy_tree(&sriov_pci_fake::testdata_sysfs().join("node"), dir.path()).unwrap();
    dir
}

fn run(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_forwarder-sriov"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn inventory_lists_pfs_vfs_and_other_devices() {
    let dir = fixture_copy();
    let root = dir.path().to_str().unwrap();
    let (ok, out, err) = run(&["inventory", "--sysfs-root", root]);
    assert!(ok, "{err}");
    assert!(out.contains("Physical functions (4):"), "{out}");
    assert!(
        out.contains("0000:3b:00.0  8086:1572  driver=i40e  numa=0"),
        "{out}"
    );
    assert!(out.contains("vf3   0000:3b:02.3  driver=iavf"), "{out}");
    assert!(
        out.contains("0000:00:14.3  8086:a370  class=028000  driver=-"),
        "{out}"
    );
}

#[test]
fn inventory_json_is_machine_readable() {
    let dir = fixture_copy();
    let (ok, out, _) = run(&[
        "inventory",
        "--json",
        "--sysfs-root",
        dir.path().to_str().unwrap(),
    ]);
    assert!(ok);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["physical_functions"].as_array().unwrap().len(), 4);
    assert_eq!(
        v["physical_functions"][1]["vfs"][0]["address"],
        "0000:3b:02.0"
    );
}

#[test]
fn pci_actions_change_the_fixture_through_the_fake_kernel() {
    let dir = fixture_copy();
    let root = dir.path().to_str().unwrap();
    let (ok, out, err) = run(&[
        "pci",
        "--sysfs-root",
        root,
        "set-numvfs",
        "0000:01:00.0",
        "3",
    ]);
    assert!(ok, "{err}");
    assert!(out.contains("virtfn2 0000:01:10.4"), "{out}");
    let (ok, out, err) = run(&["pci", "--sysfs-root", root, "bind", "01:10.4", "vfio-pci"]);
    assert!(ok, "{err}");
    assert!(out.contains("bound to vfio-pci (was igbvf)"), "{out}");
    let (_, out, _) = run(&["inventory", "--sysfs-root", root]);
    assert!(out.contains("0000:01:10.4  driver=vfio-pci"), "{out}");
}

#[test]
fn bad_addresses_and_impossible_counts_fail_with_the_reason() {
    let dir = fixture_copy();
    let root = dir.path().to_str().unwrap();
    let (ok, _, err) = run(&[
        "pci",
        "--sysfs-root",
        root,
        "set-numvfs",
        "0000:01:00.9",
        "3",
    ]);
    assert!(!ok);
    assert!(err.contains("function 9 is above 7"), "{err}");
    let (ok, _, err) = run(&[
        "pci",
        "--sysfs-root",
        root,
        "set-numvfs",
        "0000:01:00.0",
        "8",
    ]);
    assert!(!ok);
    assert!(
        err.contains("8 VFs requested but sriov_totalvfs is 7"),
        "{err}"
    );
}

#[test]
fn inventory_with_a_config_shows_the_resources_it_would_advertise() {
    let dir = fixture_copy();
    let config =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/config/demo.yaml");
    let (ok, out, err) = run(&[
        "inventory",
        "--sysfs-root",
        dir.path().to_str().unwrap(),
        "--config",
        config.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    assert!(
        out.contains("Resources advertised to kubelet:\n  worker.domain/10G: 4\n"),
        "{out}"
    );
}
