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
#[cfg_attr(
    not(feature = "testing"),
    ignore = "writes to a fixture tree: needs --features testing (cargo xtask test sets it)"
)]
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
#[cfg_attr(
    not(feature = "testing"),
    ignore = "writes to a fixture tree: needs --features testing (cargo xtask test sets it)"
)]
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

fn check_config(env: &[(&str, &str)]) -> (bool, String, String) {
    check_config_with(&[], env)
}

fn check_config_with(args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_forwarder-sriov"));
    cmd.arg("check-config").args(args).env_clear();
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_config_reports_what_would_be_served_and_changes_nothing() {
    let dir = fixture_copy();
    let root = dir.path();
    let config =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/config/demo.yaml");
    let devices = root.join("bus/pci/devices");
    let drivers = root.join("bus/pci/drivers");
    let (ok, out, err) = check_config(&[
        ("NSM_SRIOV_CONFIG_FILE", config.to_str().unwrap()),
        ("NSM_PCI_DEVICES_PATH", devices.to_str().unwrap()),
        ("NSM_PCI_DRIVERS_PATH", drivers.to_str().unwrap()),
        ("NSM_INSECURE", "true"),
    ]);
    assert!(ok, "{out}{err}");
    assert!(
        out.contains("PF 0000:3b:00.0 (i40e): 4 VFs, VF driver iavf, serves worker.domain/10G"),
        "{out}"
    );
    assert!(out.contains("worker.domain/10G: 4"), "{out}");
}

const PF_YAML: &str = "    pfKernelDriver: i40e\n    vfKernelDriver: iavf\n    capabilities: [10G]\n    serviceDomains: [sd]\n";

/// `check-config` with `args` on a private copy of the node fixture, with a
/// config naming `pfs` (each line 2 + 5 * its index).
fn check_config_on_node(pfs: &[&str], args: &[&str]) -> (bool, String, String) {
    let dir = fixture_copy();
    let config = dir.path().join("pci.config");
    let mut yaml = String::from("physicalFunctions:\n");
    for pf in pfs {
        yaml.push_str(&format!("  {pf}:\n{PF_YAML}"));
    }
    std::fs::write(&config, yaml).unwrap();
    let devices = dir.path().join("bus/pci/devices");
    let drivers = dir.path().join("bus/pci/drivers");
    check_config_with(
        args,
        &[
            ("NSM_SRIOV_CONFIG_FILE", config.to_str().unwrap()),
            ("NSM_PCI_DEVICES_PATH", devices.to_str().unwrap()),
            ("NSM_PCI_DRIVERS_PATH", drivers.to_str().unwrap()),
            ("NSM_INSECURE", "true"),
        ],
    )
}

#[test]
fn check_config_fails_naming_a_configured_pf_that_is_not_on_the_node() {
    let (ok, out, err) = check_config_on_node(&["0000:3b:00.0", "0000:99:00.0"], &[]);
    assert!(!ok, "{out}{err}");
    assert!(out.contains("1 of 2 configured PFs skipped"), "{out}");
    assert!(
        out.contains("pci.config:7: PF 0000:99:00.0 skipped: not on this node"),
        "{out}"
    );
    assert!(out.contains("it would serve sd/10G"), "{out}");
    assert!(
        out.contains("PF 0000:3b:00.0 (i40e): 4 VFs"),
        "the present PF is still reported: {out}"
    );
    assert!(
        err.contains("configured PF not on this node: 0000:99:00.0 (line 7)"),
        "{err}"
    );
    assert!(err.contains("--allow-missing"), "{err}");
}

#[test]
fn check_config_allow_missing_passes_but_still_names_the_missing_pf() {
    let (ok, out, err) =
        check_config_on_node(&["0000:3b:00.0", "0000:99:00.0"], &["--allow-missing"]);
    assert!(ok, "{out}{err}");
    assert!(
        out.contains("pci.config:7: PF 0000:99:00.0 skipped: not on this node"),
        "{out}"
    );
    assert!(
        out.contains("not on this node, allowed by --allow-missing: 0000:99:00.0 (line 7)"),
        "{out}"
    );
    assert!(out.contains("sd/10G: 4"), "{out}");
}

#[test]
fn check_config_names_a_pf_without_sriov_with_its_reason() {
    let (ok, out, err) = check_config_on_node(&["0000:00:1f.6"], &[]);
    // It is there, so the check passes: the daemon would start, without it.
    assert!(ok, "{out}{err}");
    assert!(
        out.contains("pci.config:2: PF 0000:00:1f.6 skipped: not an SR-IOV PF"),
        "{out}"
    );
    assert!(out.contains("sriov_totalvfs missing"), "{out}");
    assert!(!out.contains(": OK"), "{out}");
}

/// The daemon refuses these at start, before any VF is touched; the check
/// refuses them too, both at once.
#[test]
fn check_config_refuses_a_bad_metrics_address_and_a_wide_pprof_address() {
    let (ok, _, err) = check_config(&[
        ("NSM_METRICS_LISTEN", "metrics.example:9465"),
        ("NSM_PPROF_ENABLED", "true"),
        ("NSM_PPROF_LISTEN_ON", "0.0.0.0:6060"),
        ("NSM_INSECURE", "true"),
    ]);
    assert!(!ok);
    assert!(
        err.contains("NSM_METRICS_LISTEN=\"metrics.example:9465\""),
        "{err}"
    );
    assert!(err.contains("host names are not resolved"), "{err}");
    assert!(
        err.contains("NSM_PPROF_LISTEN_ON: 0.0.0.0:6060 is not a loopback"),
        "{err}"
    );
}

#[test]
fn check_config_fails_naming_every_bad_variable_and_the_file_field() {
    let (ok, _, err) = check_config(&[
        ("NSM_DIAL_TIMEOUT", "10"),
        ("NSM_MAX_TOKEN_LIFETIME", "forever"),
    ]);
    assert!(!ok);
    assert!(err.contains("NSM_DIAL_TIMEOUT=\"10\""), "{err}");
    assert!(err.contains("NSM_MAX_TOKEN_LIFETIME=\"forever\""), "{err}");

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("pci.config");
    std::fs::write(
        &bad,
        "physicalFunctions:\n  0000:3b:00.0:\n    pfKernelDriver: i40e\n    vfKernelDriver: iavf\n    capabilities: []\n    serviceDomains: [sd]\n",
    )
    .unwrap();
    let (ok, _, err) = check_config(&[
        ("NSM_SRIOV_CONFIG_FILE", bad.to_str().unwrap()),
        ("NSM_INSECURE", "true"),
    ]);
    assert!(!ok);
    assert!(
        err.contains(
            "pci.config:5: physicalFunctions.0000:3b:00.0.capabilities: must not be empty"
        ),
        "{err}"
    );
}

#[test]
#[cfg_attr(
    not(feature = "testing"),
    ignore = "writes to a fixture tree: needs --features testing (cargo xtask test sets it)"
)]
fn set_numvfs_refuses_while_a_connection_uses_a_vf_of_the_pf_unless_forced() {
    let dir = fixture_copy();
    let root = dir.path().to_str().unwrap();
    let state = tempfile::tempdir().unwrap();
    let state_dir = state.path().to_str().unwrap();
    let in_use = serde_json::json!({
        "version": 1,
        "tokens": {
            "sriov-1": {
                "id": "sriov-1", "name": "worker.domain/1G", "pf": "0000:01:00.0",
                "state": "inuse", "vf": "0000:01:10.0", "kind": "kernel",
                "connection": "conn-1", "expires_at": 1
            },
            "sriov-2": {
                "id": "sriov-2", "name": "worker.domain/1G", "pf": "0000:01:00.0",
                "state": "allocated"
            }
        }
    });
    std::fs::write(
        state.path().join("sriov-pool.json"),
        serde_json::to_vec(&in_use).unwrap(),
    )
    .unwrap();
    let set = |count: &str, force: bool| {
        let mut args = vec![
            "pci",
            "--sysfs-root",
            root,
            "set-numvfs",
            "0000:01:00.0",
            count,
        ];
        args.extend(["--state-dir", state_dir]);
        if force {
            args.push("--force");
        }
        run(&args)
    };
    let (ok, _, err) = set("3", false);
    assert!(!ok);
    assert!(err.contains("0000:01:10.0 (conn-1)"), "{err}");
    assert!(err.contains("--force"), "{err}");
    let (ok, out, err) = set("3", true);
    assert!(ok, "{err}");
    assert!(out.contains("3 VFs"), "{out}");

    // Held by pods but not in use: refused only below what they hold.
    let held = serde_json::json!({
        "version": 1,
        "tokens": {
            "sriov-1": {"id": "sriov-1", "name": "a/b", "pf": "0000:01:00.0", "state": "allocated"},
            "sriov-2": {"id": "sriov-2", "name": "a/b", "pf": "0000:01:00.0", "state": "allocated"}
        }
    });
    std::fs::write(
        state.path().join("sriov-pool.json"),
        serde_json::to_vec(&held).unwrap(),
    )
    .unwrap();
    let (ok, _, err) = set("1", false);
    assert!(!ok);
    assert!(err.contains("pods hold 2 of its VFs, more than 1"), "{err}");
    let (ok, _, err) = set("2", false);
    assert!(ok, "{err}");
}
