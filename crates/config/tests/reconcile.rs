//! The config checked against a kernel-faithful fake sysfs (a whole node: X710, ConnectX-5,
//! 82576 with no VFs yet, a NIC without SR-IOV).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use sriov_config::{
    Error, ReconcileOptions, SkipReason, SkippedPf, SriovConfig, Warning, reconcile,
};
use sriov_pci::PciAddress;
use sriov_pci_fake::{FakeSysfs, fixtures};

const FILE: &str = "/etc/sriov/pci.config";

fn pci(s: &str) -> PciAddress {
    s.parse().unwrap()
}

fn node() -> FakeSysfs {
    fixtures::node().build().unwrap()
}

fn config(yaml: &str) -> SriovConfig {
    SriovConfig::parse(Path::new(FILE), yaml).unwrap().config
}

fn pf_yaml(pf: &str, pf_driver: &str, vfs: &[(&str, u32)]) -> String {
    let mut y = format!(
        "  {pf}:\n    pfKernelDriver: {pf_driver}\n    vfKernelDriver: vfdrv\n    capabilities: [cap]\n    serviceDomains: [sd]\n"
    );
    if !vfs.is_empty() {
        y.push_str("    virtualFunctions:\n");
        for (a, g) in vfs {
            y.push_str(&format!("      - address: {a}\n        iommuGroup: {g}\n"));
        }
    }
    y
}

fn file_errors(err: Error) -> Vec<sriov_config::FileError> {
    match err {
        Error::File { errors } => errors,
        other => panic!("expected file errors, got {other}"),
    }
}

#[test]
fn pf_without_vfs_gets_sriov_totalvfs_of_them() {
    let fake = node();
    let sysfs = fake.sysfs();
    let cfg = config(&format!(
        "physicalFunctions:\n{}",
        pf_yaml("0000:01:00.0", "igb", &[])
    ));
    let r = reconcile(&cfg, &sysfs, ReconcileOptions::default()).unwrap();
    assert!(r.warnings.is_empty(), "{:?}", r.warnings);
    let pf = &r.physical_functions[0];
    assert_eq!(pf.created_vfs, 7);
    assert_eq!(
        sysfs.num_vfs(pci("0000:01:00.0")).unwrap(),
        7,
        "the fake kernel made them"
    );
    let addrs: Vec<String> = pf.vfs.iter().map(|v| v.address.to_string()).collect();
    assert_eq!(addrs[..2], ["0000:01:10.0", "0000:01:10.2"]);
    assert_eq!(pf.vfs.len(), 7);
    assert!(pf.vfs.iter().all(|v| v.iommu_group.is_some()));
    assert_eq!(pf.resource_names(), ["sd/cap"]);
}

#[test]
fn dry_run_warns_instead_of_creating_vfs() {
    let fake = node();
    let sysfs = fake.sysfs();
    let cfg = config(&format!(
        "physicalFunctions:\n{}",
        pf_yaml("0000:01:00.0", "igb", &[])
    ));
    let r = reconcile(&cfg, &sysfs, ReconcileOptions { create_vfs: false }).unwrap();
    assert_eq!(
        r.warnings,
        [Warning::VfsNotCreated {
            pf: pci("0000:01:00.0"),
            total: 7
        }]
    );
    assert!(r.physical_functions[0].vfs.is_empty());
    assert!(
        r.skipped.is_empty(),
        "the daemon would create its VFs: {:?}",
        r.skipped
    );
    assert_eq!(
        sysfs.num_vfs(pci("0000:01:00.0")).unwrap(),
        0,
        "nothing written"
    );
    assert!(fake.kernel().writes().is_empty());
}

#[test]
fn pf_with_vfs_keeps_them_in_index_order_with_groups() {
    let fake = node();
    let sysfs = fake.sysfs();
    let cfg = config(&format!(
        "physicalFunctions:\n{}",
        pf_yaml("0000:3b:00.0", "i40e", &[])
    ));
    let r = reconcile(&cfg, &sysfs, ReconcileOptions::default()).unwrap();
    let pf = &r.physical_functions[0];
    assert_eq!(pf.created_vfs, 0);
    let got: Vec<(u32, String)> = pf
        .vfs
        .iter()
        .map(|v| (v.index, v.address.to_string()))
        .collect();
    assert_eq!(
        got,
        [
            (0, "0000:3b:02.0".to_string()),
            (1, "0000:3b:02.1".to_string()),
            (2, "0000:3b:02.2".to_string()),
            (3, "0000:3b:02.3".to_string()),
        ]
    );
    for vf in &pf.vfs {
        assert_eq!(vf.iommu_group, sysfs.iommu_group(vf.address).unwrap());
    }
    assert_eq!(
        sysfs.num_vfs(pci("0000:3b:00.0")).unwrap(),
        4,
        "count left alone"
    );
}

#[test]
fn pf_missing_from_sysfs_is_skipped_naming_file_line_and_resources() {
    let fake = node();
    let sysfs = fake.sysfs();
    let cfg = config(&format!(
        "physicalFunctions:\n{}{}",
        pf_yaml("0000:3b:00.0", "i40e", &[]),
        pf_yaml("0000:99:00.0", "i40e", &[])
    ));
    let r = reconcile(&cfg, &sysfs, ReconcileOptions::default()).unwrap();
    assert_eq!(
        r.physical_functions.len(),
        1,
        "the present PF is still served"
    );
    assert!(r.warnings.is_empty(), "{:?}", r.warnings);
    let path = sysfs.device_dir(pci("0000:99:00.0"));
    assert_eq!(
        r.skipped,
        [SkippedPf {
            pf: pci("0000:99:00.0"),
            file: FILE.into(),
            line: Some(7),
            resource_names: vec!["sd/cap".into()],
            reason: SkipReason::Absent { path: path.clone() },
        }]
    );
    assert!(r.skipped[0].reason.is_absent());
    assert_eq!(
        r.skipped[0].to_string(),
        format!(
            "/etc/sriov/pci.config:7: PF 0000:99:00.0 skipped: not on this node ({} missing); \
             it would serve sd/cap",
            path.display()
        )
    );
}

#[test]
fn pf_without_sriov_is_skipped_as_not_a_pf() {
    let fake = node();
    let sysfs = fake.sysfs();
    let cfg = config(&format!(
        "physicalFunctions:\n{}",
        pf_yaml("0000:00:1f.6", "e1000e", &[])
    ));
    let r = reconcile(&cfg, &sysfs, ReconcileOptions::default()).unwrap();
    assert!(r.physical_functions.is_empty());
    assert!(r.warnings.is_empty(), "{:?}", r.warnings);
    let path = sysfs.device_dir(pci("0000:00:1f.6")).join("sriov_totalvfs");
    assert_eq!(r.skipped.len(), 1);
    assert_eq!(
        (r.skipped[0].pf, r.skipped[0].line),
        (pci("0000:00:1f.6"), Some(2))
    );
    assert_eq!(r.skipped[0].reason, SkipReason::NotSriov { path });
    assert!(!r.skipped[0].reason.is_absent());
    assert!(
        r.skipped[0]
            .to_string()
            .contains("skipped: not an SR-IOV PF"),
        "{}",
        r.skipped[0]
    );
}

#[test]
fn pf_whose_sriov_totalvfs_is_zero_is_skipped() {
    let fake = node();
    let sysfs = fake.sysfs();
    let pf = pci("0000:01:00.0");
    std::fs::write(sysfs.device_dir(pf).join("sriov_totalvfs"), "0\n").unwrap();
    let cfg = config(&format!(
        "physicalFunctions:\n{}",
        pf_yaml("0000:01:00.0", "igb", &[])
    ));
    let r = reconcile(&cfg, &sysfs, ReconcileOptions::default()).unwrap();
    assert!(r.physical_functions.is_empty());
    assert_eq!(r.skipped.len(), 1);
    assert_eq!(r.skipped[0].reason, SkipReason::NoVfsPossible);
    assert!(
        r.skipped[0].to_string().contains("sriov_totalvfs is 0"),
        "{}",
        r.skipped[0]
    );
    assert!(fake.kernel().writes().is_empty(), "no VFs asked for");
}

/// VFs enabled but not linked from the PF: nothing to serve, and one reason for the PF
/// rather than an error for each listed VF.
#[test]
fn pf_whose_vfs_sysfs_does_not_show_is_skipped() {
    for listed in [false, true] {
        let fake = node();
        let sysfs = fake.sysfs();
        let pf = pci("0000:3b:00.0");
        let g = sysfs.iommu_group(pci("0000:3b:02.0")).unwrap().unwrap();
        for vf in sysfs.vfs(pf).unwrap() {
            std::fs::remove_file(sysfs.device_dir(pf).join(format!("virtfn{}", vf.index))).unwrap();
        }
        let vfs: &[(&str, u32)] = if listed { &[("0000:3b:02.0", g)] } else { &[] };
        let cfg = config(&format!(
            "physicalFunctions:\n{}",
            pf_yaml("0000:3b:00.0", "i40e", vfs)
        ));
        let r = reconcile(&cfg, &sysfs, ReconcileOptions::default()).unwrap();
        assert!(r.physical_functions.is_empty(), "listed: {listed}");
        assert_eq!(r.skipped.len(), 1);
        assert_eq!(r.skipped[0].reason, SkipReason::NoVfs { num_vfs: 4 });
        assert!(
            r.skipped[0]
                .to_string()
                .contains("sriov_numvfs is 4, but sysfs shows none of its VFs"),
            "{}",
            r.skipped[0]
        );
    }
}

#[test]
fn pf_bound_to_another_driver_is_a_warning() {
    let fake = node();
    let cfg = config(&format!(
        "physicalFunctions:\n{}",
        pf_yaml("0000:5e:00.0", "ice", &[])
    ));
    let r = reconcile(&cfg, &fake.sysfs(), ReconcileOptions::default()).unwrap();
    assert_eq!(r.physical_functions[0].vfs.len(), 2);
    assert_eq!(
        r.warnings[0].to_string(),
        "PF 0000:5e:00.0 is bound to \"mlx5_core\", not to pfKernelDriver \"ice\""
    );
}

#[test]
fn listed_vfs_are_used_exactly_and_never_twice() {
    let fake = node();
    let sysfs = fake.sysfs();
    let g0 = sysfs.iommu_group(pci("0000:3b:02.0")).unwrap().unwrap();
    let g2 = sysfs.iommu_group(pci("0000:3b:02.2")).unwrap().unwrap();
    let cfg = config(&format!(
        "physicalFunctions:\n{}",
        pf_yaml(
            "0000:3b:00.0",
            "i40e",
            &[("0000:3b:02.2", g2), ("3b:02.0", g0)]
        )
    ));
    let r = reconcile(&cfg, &sysfs, ReconcileOptions::default()).unwrap();
    let pf = &r.physical_functions[0];
    // The Go original appends the discovered VFs to the listed ones: 2 listed + 4 found = 6.
    let got: Vec<String> = pf.vfs.iter().map(|v| v.address.to_string()).collect();
    assert_eq!(got, ["0000:3b:02.0", "0000:3b:02.2"]);
    assert_eq!(
        r.warnings,
        [Warning::VfsNotListed {
            pf: pci("0000:3b:00.0"),
            vfs: vec![pci("0000:3b:02.1"), pci("0000:3b:02.3")]
        }]
    );
}

#[test]
fn listed_vfs_on_a_pf_without_vfs_are_checked_after_creation() {
    let fake = node();
    let sysfs = fake.sysfs();
    // Learn the groups the VFs will get, on a throwaway copy of the same node.
    let scratch = node();
    scratch.sysfs().set_num_vfs(pci("0000:01:00.0"), 7).unwrap();
    let g = scratch
        .sysfs()
        .iommu_group(pci("0000:01:10.2"))
        .unwrap()
        .unwrap();
    let cfg = config(&format!(
        "physicalFunctions:\n{}",
        pf_yaml("0000:01:00.0", "igb", &[("0000:01:10.2", g)])
    ));
    let r = reconcile(&cfg, &sysfs, ReconcileOptions::default()).unwrap();
    let pf = &r.physical_functions[0];
    assert_eq!(pf.created_vfs, 7);
    assert_eq!(pf.vfs.len(), 1);
    assert_eq!(pf.vfs[0].index, 1);
}

#[test]
fn vf_listed_under_the_wrong_pf_names_its_real_pf_and_line() {
    let fake = node();
    let sysfs = fake.sysfs();
    let g = sysfs.iommu_group(pci("0000:3b:0a.0")).unwrap().unwrap();
    let cfg = config(&format!(
        "physicalFunctions:\n{}",
        pf_yaml("0000:3b:00.0", "i40e", &[("0000:3b:0a.0", g)])
    ));
    let errs = file_errors(reconcile(&cfg, &sysfs, ReconcileOptions::default()).unwrap_err());
    assert_eq!(errs.len(), 1);
    assert_eq!(errs[0].line, Some(8));
    assert_eq!(
        errs[0].field,
        "physicalFunctions.0000:3b:00.0.virtualFunctions[0]"
    );
    assert_eq!(
        errs[0].to_string(),
        "/etc/sriov/pci.config:8: physicalFunctions.0000:3b:00.0.virtualFunctions[0]: VF \
         0000:3b:0a.0 is listed under PF 0000:3b:00.0, but sysfs says its PF is 0000:3b:00.1"
    );
}

#[test]
fn vf_listed_with_the_wrong_iommu_group_is_an_error() {
    let fake = node();
    let sysfs = fake.sysfs();
    let real = sysfs.iommu_group(pci("0000:3b:02.1")).unwrap().unwrap();
    let cfg = config(&format!(
        "physicalFunctions:\n{}",
        pf_yaml("0000:3b:00.0", "i40e", &[("0000:3b:02.1", real + 1000)])
    ));
    let errs = file_errors(reconcile(&cfg, &sysfs, ReconcileOptions::default()).unwrap_err());
    assert_eq!(
        errs[0].message,
        format!(
            "VF 0000:3b:02.1 is listed with iommuGroup {}, but sysfs says {real}",
            real + 1000
        )
    );
}

#[test]
fn vf_that_does_not_exist_or_is_not_a_vf_is_an_error_each() {
    let fake = node();
    let cfg = config(&format!(
        "physicalFunctions:\n{}",
        pf_yaml(
            "0000:3b:00.0",
            "i40e",
            &[("0000:3b:1f.7", 1), ("0000:00:1f.6", 2)]
        )
    ));
    let errs =
        file_errors(reconcile(&cfg, &fake.sysfs(), ReconcileOptions::default()).unwrap_err());
    assert_eq!(errs.len(), 2, "all disagreements reported: {errs:#?}");
    assert!(
        errs[0]
            .message
            .contains("VF 0000:3b:1f.7 does not exist in sysfs"),
        "{}",
        errs[0]
    );
    assert_eq!((errs[0].line, errs[1].line), (Some(8), Some(10)));
    assert!(errs[1].message.contains("it is not a VF"), "{}", errs[1]);
}

#[test]
fn shipped_sample_configs_reconcile_against_the_node_fixture() {
    let fake = node();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/config");
    let cfg = SriovConfig::load(&dir.join("x710-two-ports.yaml"))
        .unwrap()
        .config;
    // The sample uses 01:00.x addresses; the node fixture has its X710 at 3b:00.x and an 82576
    // at 01:00.0, so this exercises a PF that is there (but bound to igb) and one that is not.
    let r = reconcile(&cfg, &fake.sysfs(), ReconcileOptions { create_vfs: false }).unwrap();
    assert_eq!(r.physical_functions.len(), 1);
    assert_eq!(r.skipped.len(), 1);
    assert_eq!(r.skipped[0].pf, pci("0000:01:00.1"));
    assert!(r.skipped[0].reason.is_absent());
    assert!(
        r.warnings
            .iter()
            .any(|w| matches!(w, Warning::PfDriverMismatch { .. }))
    );
    assert!(
        r.warnings
            .iter()
            .any(|w| matches!(w, Warning::VfsNotCreated { total: 7, .. }))
    );
}

/// PFs are read side by side, yet what comes back is in the file's order: PFs, their VFs with
/// the IOMMU groups sysfs shows, skips and warnings, as one PF after the other would give.
#[test]
fn many_pfs_come_back_in_file_order_with_every_vf_and_group() {
    let fake = fixtures::generated(6, 12).build().unwrap();
    let sysfs = fake.sysfs();
    let pfs: Vec<String> = (0..6)
        .map(|i| format!("0000:{:02x}:00.0", 0x10 + 2 * i))
        .collect();
    let mut yaml = String::from("physicalFunctions:\n");
    for (i, pf) in pfs.iter().enumerate() {
        // Two PFs with a driver the config does not expect: a warning each, in order.
        let driver = if i == 1 || i == 4 { "i40e" } else { "ice" };
        yaml.push_str(&pf_yaml(pf, driver, &[]));
    }
    // Not on this node, and sorting between the others.
    yaml.push_str(&pf_yaml("0000:13:00.0", "ice", &[]));
    let cfg = config(&yaml);
    let r = reconcile(&cfg, &sysfs, ReconcileOptions::default()).unwrap();
    let served: Vec<String> = r
        .physical_functions
        .iter()
        .map(|p| p.address.to_string())
        .collect();
    assert_eq!(served, pfs);
    for pf in &r.physical_functions {
        let want: Vec<(u32, PciAddress, Option<u32>)> = sysfs
            .vfs(pf.address)
            .unwrap()
            .iter()
            .map(|v| (v.index, v.address, sysfs.iommu_group(v.address).unwrap()))
            .collect();
        let got: Vec<(u32, PciAddress, Option<u32>)> = pf
            .vfs
            .iter()
            .map(|v| (v.index, v.address, v.iommu_group))
            .collect();
        assert_eq!(got.len(), 12, "{}", pf.address);
        assert_eq!(got, want, "{}", pf.address);
        assert!(got.iter().all(|(_, _, g)| g.is_some()), "{}", pf.address);
    }
    let mismatched: Vec<PciAddress> = r
        .warnings
        .iter()
        .map(|w| match w {
            Warning::PfDriverMismatch { pf, .. } => *pf,
            other => panic!("unexpected warning {other}"),
        })
        .collect();
    assert_eq!(mismatched, [pci(&pfs[1]), pci(&pfs[4])]);
    assert_eq!(r.skipped.len(), 1);
    assert_eq!(r.skipped[0].pf, pci("0000:13:00.0"));
}
