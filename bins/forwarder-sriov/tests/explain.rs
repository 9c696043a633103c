#![allow(clippy::unwrap_used, clippy::expect_used)]
//! `forwarder-sriov explain` run as a binary on a private copy of the shipped `node` tree,
//! configured through the environment as the DaemonSet does.

use std::path::Path;
use std::process::Command;

use sriov_token_pool::{FileStore, PfEntry, Pool, system_clock};

/// The X710's first port with two of its VFs listed, a PF this node lacks, the 82576 without
/// VFs, and the e1000e, which has no SR-IOV.
const CONFIG: &str = "physicalFunctions:
  0000:3b:00.0:
    pfKernelDriver: i40e
    vfKernelDriver: iavf
    capabilities: [10G]
    serviceDomains: [worker.domain]
    virtualFunctions:
      - address: 0000:3b:02.0
        iommuGroup: 9
      - address: 0000:3b:02.1
        iommuGroup: 10
  0000:99:00.0:
    pfKernelDriver: i40e
    vfKernelDriver: iavf
    capabilities: [10G]
    serviceDomains: [worker.domain]
  0000:01:00.0:
    pfKernelDriver: igb
    vfKernelDriver: igbvf
    capabilities: [1G]
    serviceDomains: [worker.domain]
  0000:00:1f.6:
    pfKernelDriver: e1000e
    vfKernelDriver: iavf
    capabilities: [1G]
    serviceDomains: [other]
";

fn node(config: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    sriov_pci_fake::copy_tree(&sriov_pci_fake::testdata_sysfs().join("node"), dir.path()).unwrap();
    std::fs::write(dir.path().join("pci.config"), config).unwrap();
    dir
}

fn explain(root: &Path, args: &[&str]) -> (bool, String, String) {
    let p = |rel: &str| root.join(rel).display().to_string();
    let out = Command::new(env!("CARGO_BIN_EXE_forwarder-sriov"))
        .arg("explain")
        .args(args)
        .env_clear()
        .env("NSM_SRIOV_CONFIG_FILE", p("pci.config"))
        .env("NSM_PCI_DEVICES_PATH", p("bus/pci/devices"))
        .env("NSM_PCI_DRIVERS_PATH", p("bus/pci/drivers"))
        .env("NSM_STATE_DIR", p("state"))
        .env("NSM_INSECURE", "true")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn row<'a>(out: &'a str, address: &str) -> &'a str {
    out.lines()
        .find(|l| l.starts_with(address))
        .unwrap_or_else(|| panic!("no row for {address}: {out}"))
}

#[test]
fn explain_gives_every_network_function_its_resources_or_a_reason() {
    let dir = node(CONFIG);
    let (ok, out, err) = explain(dir.path(), &[]);
    assert!(ok, "{err}");
    let rows: Vec<&str> = out.lines().skip(1).take_while(|l| !l.is_empty()).collect();
    assert_eq!(rows.len(), 16, "every network function of the node: {out}");
    for r in &rows {
        assert!(
            r.contains(" in worker.domain/10G") || r.contains(" PF: ") || r.contains(" EXCLUDED "),
            "{r}"
        );
    }
    assert!(row(&out, "0000:3b:02.1").ends_with("0000:3b:00.0 #1  in worker.domain/10G"));
    assert!(
        row(&out, "0000:3b:02.2")
            .contains("EXCLUDED VF 2 of 0000:3b:00.0 is not in its virtualFunctions list"),
        "{out}"
    );
    assert!(
        row(&out, "0000:3b:0a.3")
            .ends_with("EXCLUDED PF 0000:3b:00.1 (ens785f1) not in the config"),
        "{out}"
    );
    assert!(row(&out, "0000:3b:00.1").contains("EXCLUDED PF not in the config"));
    assert!(
        row(&out, "0000:00:1f.6").contains("EXCLUDED configured PF skipped: not an SR-IOV PF"),
        "{out}"
    );
    assert!(row(&out, "0000:00:1f.6").ends_with("(line 22)"), "{out}");
    assert!(row(&out, "0000:00:14.3").ends_with("EXCLUDED neither an SR-IOV PF nor a VF"));
    assert!(
        row(&out, "0000:01:00.0").contains("PF: no VFs yet (the daemon creates them at start)"),
        "{out}"
    );

    assert!(
        out.contains(
            "worker.domain/10G: 2 allocatable\n    PF 0000:3b:00.0 (ens785f0): 2 VFs\n    PF 0000:99:00.0 skipped: not on this node"
        ),
        "{out}"
    );
    assert!(
        out.contains("worker.domain/1G: 0 allocatable\n    PF 0000:01:00.0 (enp1s0): 0 VFs now; the daemon creates sriov_totalvfs (7) at start"),
        "{out}"
    );
    assert!(
        out.contains("other/1G: 0 allocatable\n    PF 0000:00:1f.6 skipped: not an SR-IOV PF"),
        "{out}"
    );
    // Read-only: the PF without VFs still has none.
    let numvfs =
        std::fs::read_to_string(dir.path().join("bus/pci/devices/0000:01:00.0/sriov_numvfs"))
            .unwrap();
    assert_eq!(numvfs.trim(), "0");
}

#[test]
fn explain_counts_vfs_pods_hold_under_the_pfs_other_name() {
    let dir = node(
        "physicalFunctions:\n  0000:3b:00.0:\n    pfKernelDriver: i40e\n    vfKernelDriver: iavf\n    capabilities: [10G, intel]\n    serviceDomains: [worker.domain]\n",
    );
    // A pool whose state says a pod holds one token of worker.domain/intel.
    let sysfs = sriov_pci::Sysfs::new(
        dir.path().join("bus/pci/devices"),
        dir.path().join("bus/pci/drivers"),
    );
    let pf = sysfs
        .physical_function("0000:3b:00.0".parse().unwrap())
        .unwrap();
    let names = vec![
        "worker.domain/10G".to_string(),
        "worker.domain/intel".to_string(),
    ];
    let (pool, _) = Pool::open(
        vec![PfEntry {
            pf,
            names,
            vf_kernel_driver: "iavf".into(),
        }],
        FileStore::in_dir(dir.path().join("state")).unwrap(),
        &sysfs,
        system_clock(),
    )
    .unwrap();
    let intel = pool
        .tokens()
        .unwrap()
        .into_iter()
        .find(|t| t.name == "worker.domain/intel")
        .unwrap();
    pool.allocate("worker.domain/intel", &[intel.id]).unwrap();
    drop(pool);

    let (ok, out, err) = explain(dir.path(), &["--json"]);
    assert!(ok, "{err}");
    // The typed round trip is `explain::tests::the_json_form_round_trips`.
    let value: serde_json::Value = serde_json::from_str(&out).unwrap();
    let resources = value["resources"].as_array().unwrap();
    let ten_g = resources
        .iter()
        .find(|r| r["resource"] == "worker.domain/10G")
        .unwrap();
    assert_eq!(ten_g["vfs"], 4);
    assert_eq!(ten_g["allocatable"], 3);
    assert_eq!(
        ten_g["why"][0],
        "PF 0000:3b:00.0 (ens785f0): 4 VFs, minus 1 held by pods as worker.domain/intel"
    );
    let intel = resources
        .iter()
        .find(|r| r["resource"] == "worker.domain/intel")
        .unwrap();
    assert_eq!(intel["allocatable"], 4, "its own held token still counts");
    let vf = value["devices"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["address"] == "0000:3b:02.3")
        .unwrap();
    assert_eq!(vf["outcome"]["result"], "joined");
    assert_eq!(vf["outcome"]["resources"][1], "worker.domain/intel");
}

#[test]
fn explain_fails_naming_the_file_line_and_field_it_cannot_use() {
    let dir = node("physicalFunctions:\n  0000:3b:00.0:\n    pfKernelDriver: i40e\n");
    let (ok, _, err) = explain(dir.path(), &[]);
    assert!(!ok);
    assert!(
        err.contains(
            "pci.config:3:5: physicalFunctions.0000:3b:00.0: missing field `vfKernelDriver`"
        ),
        "{err}"
    );
}
