//! `sriov-device-plugin explain` run as a binary on a private copy of the shipped `node` tree.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_sriov-device-plugin");

fn srdp_testdata(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../testdata/srdp")
        .join(name)
}

struct Node {
    tmp: tempfile::TempDir,
}

impl Node {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let sys = tmp.path().join("sys");
        std::fs::create_dir_all(&sys).unwrap();
        sriov_pci_fake::copy_tree(&sriov_pci_fake::testdata_sysfs().join("node"), &sys).unwrap();
        std::fs::write(
            tmp.path().join("route"),
            "Iface\tDestination\tGateway\tFlags\tRefCnt\tUse\tMetric\tMask\n",
        )
        .unwrap();
        Self { tmp }
    }

    /// Runs the binary with the node's paths after `args`; (success, stdout, stderr).
    fn explain(&self, args: &[&str]) -> (bool, String, String) {
        let p = |rel: &str| self.tmp.path().join(rel).display().to_string();
        let out = Command::new(BIN)
            .arg("explain")
            .args(args)
            .arg(format!("--sysfs-root={}", p("sys")))
            .arg(format!("--proc-net-route={}", p("route")))
            .arg(format!("--dev-dir={}", p("sys")))
            .env("RUST_LOG", "warn")
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

#[test]
fn explain_prints_a_reason_for_every_device_kept_out_of_the_readme_config() {
    let node = Node::new();
    let config = srdp_testdata("config.json");
    let (ok, out, err) = node.explain(&["--config", config.to_str().unwrap()]);
    assert!(ok, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0].starts_with("DEVICE ") && lines[0].ends_with("RESULT"),
        "{out}"
    );
    // Every device row ends in its pool or a reason.
    let rows: Vec<&&str> = lines
        .iter()
        .skip(1)
        .take_while(|l| !l.is_empty())
        .filter(|l| l.starts_with("0000:"))
        .collect();
    assert_eq!(rows.len(), 16, "{out}");
    for row in &rows {
        assert!(
            row.contains(" in intel.com/intel_sriov_netdevice")
                || row.contains(" EXCLUDED ")
                || row.contains(" SKIPPED "),
            "{row}"
        );
    }
    let row = |addr: &str| {
        *rows
            .iter()
            .find(|r| r.starts_with(addr))
            .unwrap()
            .to_owned()
    };
    assert!(
        row("0000:5e:00.2").ends_with(
            "ens1f0np0 #0  EXCLUDED nvidia.com/mlnx_sriov_rdma: selectors[0]: isRdma: it has no RDMA device (are the RDMA modules loaded?)"
        ),
        "{out}"
    );
    assert!(
        row("0000:3b:00.1").contains("SKIPPED it is a PF with 4 VFs enabled"),
        "{out}"
    );
    assert!(
        out.contains("\nPOOLS\nintel.com/intel_sriov_netdevice: 8 allocatable\n    8 matched (selectors[0]: 8)\n"),
        "{out}"
    );
    assert!(
        out.contains("nvidia.com/mlnx_sriov_rdma: 0 allocatable\n    no device matched its selectors\n    nearest miss: 0000:5e:00.2: selectors[0]: isRdma:"),
        "{out}"
    );
}

#[test]
fn explain_json_parses_and_names_the_operators_pf_name_mismatch() {
    let node = Node::new();
    let config = srdp_testdata("operator-style.json");
    let (ok, out, err) = node.explain(&[
        "--json",
        "--config",
        config.to_str().unwrap(),
        "--resource-prefix=openshift.io",
    ]);
    assert!(ok, "{err}");
    let report: sriov_selector_pools::Report = serde_json::from_str(&out).unwrap();
    assert_eq!(
        serde_json::to_string_pretty(&report).unwrap().trim(),
        out.trim(),
        "the JSON round-trips"
    );
    let pool = &report.pools[0];
    assert_eq!(
        (pool.resource.as_str(), pool.allocatable, pool.registered),
        ("openshift.io/mlxnics", 0, false)
    );
    let value: serde_json::Value = serde_json::from_str(&out).unwrap();
    let vf = value["devices"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["id"] == "0000:5e:00.3")
        .unwrap();
    assert_eq!(vf["outcome"]["result"], "excluded");
    assert_eq!(
        vf["outcome"]["reason"],
        "openshift.io/mlxnics: selectors[0]: pfNames: PF ens1f0np0 is not in [ens1f0#0-3]"
    );
}

#[test]
fn explain_refuses_a_config_that_does_not_load_naming_the_field() {
    let node = Node::new();
    let bad = node.tmp.path().join("bad.json");
    std::fs::write(&bad, r#"{"resourceList":[{"selectors":{}}]}"#).unwrap();
    let (ok, out, err) = node.explain(&["--config", bad.to_str().unwrap()]);
    assert!(!ok, "{out}");
    assert!(
        err.contains("resourceList[0].resourceName: required"),
        "{err}"
    );
}
