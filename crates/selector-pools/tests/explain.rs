//! `explain`'s report on the shipped `node` fixture: one reason for every device left out, and
//! why every pool has its count, with configs as SRDP's README and the SR-IOV Network Operator
//! write them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use sriov_pci_fake::{FakeSysfs, testdata_sysfs};
use sriov_selector_pools::{
    Config, Host, HostPaths, LinkHealth, LinkTable, NoLinkHealth, Outcome, PoolManager,
    PoolSettings, Report, Strictness,
};

struct Node {
    fake: FakeSysfs,
    tmp: tempfile::TempDir,
}

impl Node {
    fn new() -> Self {
        let fake = FakeSysfs::copy_of(testdata_sysfs().join("node")).unwrap();
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(
            tmp.path().join("route"),
            "Iface\tDestination\tGateway\tFlags\tRefCnt\tUse\tMetric\tMask\tMTU\tWindow\tIRTT\n",
        )
        .unwrap();
        Self { fake, tmp }
    }

    fn report_with(&self, config: &Config, prefix: &str, links: Arc<dyn LinkHealth>) -> Report {
        let host = Host::new(HostPaths {
            sysfs: self.fake.sysfs(),
            proc_net_route: self.tmp.path().join("route"),
            dev_dir: self.tmp.path().to_path_buf(),
        });
        PoolManager::new(config, host, PoolSettings::new(prefix), links)
            .report()
            .unwrap()
    }

    fn report(&self, json: &str) -> Report {
        let config = Config::parse(json, "openshift.io").unwrap();
        self.report_with(&config, "openshift.io", Arc::new(NoLinkHealth))
    }

    fn report_file(&self, name: &str) -> Report {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../testdata/srdp")
            .join(name);
        let config = Config::load(&path, "intel.com").unwrap();
        self.report_with(&config, "intel.com", Arc::new(NoLinkHealth))
    }
}

fn outcome<'a>(report: &'a Report, id: &str) -> &'a Outcome {
    &report
        .devices
        .iter()
        .find(|d| d.id == id)
        .unwrap_or_else(|| panic!("{id} not in the report"))
        .outcome
}

fn excluded_reason<'a>(report: &'a Report, id: &str) -> &'a str {
    match outcome(report, id) {
        Outcome::Excluded { reason, .. } => reason,
        other => panic!("{id}: {other:?}"),
    }
}

fn pool<'a>(report: &'a Report, resource: &str) -> &'a sriov_selector_pools::PoolReport {
    report
        .pools
        .iter()
        .find(|p| p.resource == resource)
        .unwrap()
}

#[test]
fn every_device_of_the_shipped_node_has_its_pool_or_a_reason() {
    let node = Node::new();
    let report = node.report_file("config.json");
    assert_eq!(report.devices.len(), 16, "{report}");
    for d in &report.devices {
        match &d.outcome {
            Outcome::Joined { resource, .. } => {
                assert_eq!(resource, "intel.com/intel_sriov_netdevice", "{}", d.id)
            }
            Outcome::Excluded { reason, refusals } => {
                assert!(reason.contains(": selectors[0]: "), "{}: {reason}", d.id);
                assert_eq!(refusals.len(), 4, "one per pool: {refusals:?}");
            }
            Outcome::Skipped { reason } => assert!(!reason.is_empty(), "{}", d.id),
        }
    }
    // Passing vendors, devices and drivers, the RDMA pool's isRdma is the nearest miss; the
    // other pools' refusals stay in the report.
    assert_eq!(
        excluded_reason(&report, "0000:5e:00.2"),
        "nvidia.com/mlnx_sriov_rdma: selectors[0]: isRdma: it has no RDMA device (are the RDMA modules loaded?)"
    );
    assert_eq!(
        excluded_reason(&report, "0000:00:1f.6"),
        "intel.com/intel_sriov_netdevice: selectors[0]: devices: device 15bb is not in [154c, 10ed, 1889]"
    );
    assert_eq!(
        outcome(&report, "0000:3b:00.0"),
        &Outcome::Skipped {
            reason: "it is a PF with 4 VFs enabled (its VFs are offered instead)".into()
        }
    );
    assert_eq!(
        outcome(&report, "0000:00:14.3"),
        &Outcome::Skipped {
            reason: "no driver is bound to it".into()
        }
    );

    let net = pool(&report, "intel.com/intel_sriov_netdevice");
    assert_eq!(
        (net.allocatable, net.members, &net.by_selector[..]),
        (8, 8, &[8][..])
    );
    assert!(net.registered && net.nearest_miss.is_none());
    // The DPDK pool wants the same VFs on vfio-pci: its count is 0 because of their driver.
    let dpdk = pool(&report, "intel.com/intel_sriov_dpdk");
    assert_eq!((dpdk.allocatable, dpdk.registered), (0, false));
    let near = dpdk.nearest_miss.as_ref().unwrap();
    assert_eq!(near.id, "0000:3b:02.0");
    assert_eq!(
        near.why,
        "selectors[0]: drivers: driver iavf is not in [vfio-pci]"
    );
    let text = report.to_string();
    assert!(
        text.contains("intel.com/intel_sriov_dpdk: 0 allocatable\n    no device matched its selectors\n    nearest miss: 0000:3b:02.0: selectors[0]: drivers: driver iavf is not in [vfio-pci]\n    not registered with kubelet until a device matches"),
        "{text}"
    );
    assert!(text.contains("also not intel.com/intel_sriov_dpdk: selectors[0]: vendors: vendor 15b3 is not in [8086]"), "{text}");
}

#[test]
fn the_operators_pf_name_typo_is_the_reason_given() {
    // The shipped operator-style config names ens1f0, the node's PF is ens1f0np0.
    let report = Node::new().report_file("operator-style.json");
    for vf in ["0000:5e:00.2", "0000:5e:00.3"] {
        assert_eq!(
            excluded_reason(&report, vf),
            "intel.com/mlxnics: selectors[0]: pfNames: PF ens1f0np0 is not in [ens1f0#0-3]"
        );
    }
    let p = &report.pools[0];
    assert_eq!(p.allocatable, 0);
    assert_eq!(
        p.nearest_miss.as_ref().unwrap().why,
        "selectors[0]: pfNames: PF ens1f0np0 is not in [ens1f0#0-3]"
    );
}

/// As the operator renders a SriovNetworkNodePolicy: Go field names for some keys, the VF
/// range as `#first-last`, selectors as an array.
const OPERATOR_RANGE: &str = r#"{"resourceList":[
  {"resourceName":"mlx_vf1to3","selectors":[{"Vendors":["15b3"],"Devices":["1018"],"Drivers":["mlx5_core"],"PfNames":["ens1f0np0#1-3"],"IsRdma":false}],"ExcludeTopology":true,"SelectorObjs":null},
  {"resourceName":"intel_dpdk","selectors":[{"vendors":["8086"],"drivers":["vfio-pci"],"pfNames":["ens785f0#0-3"]},{"vendors":["8086"],"pfNames":["ens785f1#2-3"]}]}
]}"#;

#[test]
fn operator_written_ranges_and_arrays_give_the_index_and_the_selector() {
    let report = Node::new().report(OPERATOR_RANGE);
    assert_eq!(
        excluded_reason(&report, "0000:5e:00.2"),
        "openshift.io/mlx_vf1to3: selectors[0]: pfNames: VF index 0 of ens1f0np0 is outside [ens1f0np0#1-3]"
    );
    assert_eq!(
        outcome(&report, "0000:5e:00.3"),
        &Outcome::Joined {
            resource: "openshift.io/mlx_vf1to3".into(),
            selector: 0,
            unhealthy: None
        }
    );
    // Port 1's VFs 2 and 3 join through the second selector object; 0 and 1 are outside it,
    // and the first object refuses them on their driver.
    let dpdk = pool(&report, "openshift.io/intel_dpdk");
    assert_eq!((dpdk.members, &dpdk.by_selector[..]), (2, &[0, 2][..]));
    match outcome(&report, "0000:3b:0a.1") {
        Outcome::Excluded { reason, refusals } => {
            assert_eq!(
                reason,
                "openshift.io/intel_dpdk: selectors[1]: pfNames: VF index 1 of ens785f1 is outside [ens785f1#2-3]"
            );
            let dpdk = refusals
                .iter()
                .find(|r| r.resource == dpdk.resource)
                .unwrap();
            assert_eq!(
                dpdk.reasons,
                vec![
                    "selectors[0]: drivers: driver iavf is not in [vfio-pci]",
                    "selectors[1]: pfNames: VF index 1 of ens785f1 is outside [ens785f1#2-3]"
                ]
            );
        }
        other => panic!("{other:?}"),
    }
    // Port 0's VFs pass the second object's vendors and fail its pfNames, which comes after
    // the first object's drivers in SRDP's order: that is the reason shown, the other stays.
    match outcome(&report, "0000:3b:02.0") {
        Outcome::Excluded { reason, refusals } => {
            assert_eq!(
                reason,
                "openshift.io/intel_dpdk: selectors[1]: pfNames: PF ens785f0 is not in [ens785f1#2-3]"
            );
            assert!(refusals[1].reasons[0].contains("driver iavf is not in [vfio-pci]"));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_pool_names_what_an_earlier_pool_took_and_what_discovery_left_out() {
    let report = Node::new().report(
        r#"{"resourceList":[
          {"resourceName":"all_intel","selectors":{"vendors":["8086"],"drivers":["iavf"]}},
          {"resourceName":"port0","selectors":{"pfNames":["ens785f0"]}},
          {"resourceName":"x710_pf","selectors":{"devices":["1572"]}}
        ]}"#,
    );
    let port0 = pool(&report, "openshift.io/port0");
    assert_eq!(port0.allocatable, 0);
    assert_eq!(port0.taken_earlier.len(), 4);
    assert_eq!(port0.taken_earlier[0].why, "in openshift.io/all_intel");
    let pf = pool(&report, "openshift.io/x710_pf");
    let skipped: Vec<&str> = pf.skipped.iter().map(|n| n.id.as_str()).collect();
    assert_eq!(skipped, ["0000:3b:00.0", "0000:3b:00.1"]);
    let why = pf.why().join("\n");
    assert!(
        why.contains("2 more match but were left out: 0000:3b:00.0 (it is a PF with 4 VFs enabled"),
        "{why}"
    );
    assert!(
        port0
            .why()
            .join("\n")
            .contains("4 more match but an earlier pool took them (first match wins)")
    );
}

#[test]
fn a_down_pf_link_makes_its_vfs_unhealthy_and_the_count_says_so() {
    let node = Node::new();
    let links = Arc::new(LinkTable::new());
    links.replace_all([
        ("ens785f0".to_string(), false),
        ("ens785f1".to_string(), true),
    ]);
    let config = Config::parse(
        r#"{"resourceList":[{"resourceName":"x710","selectors":{"drivers":["iavf"]}}]}"#,
        "intel.com",
    )
    .unwrap();
    let report = node.report_with(&config, "intel.com", links);
    let p = &report.pools[0];
    assert_eq!((p.members, p.allocatable, p.unhealthy.len()), (8, 4, 4));
    assert_eq!(p.unhealthy[0].why, "link ens785f0 is down");
    assert!(
        p.why().contains(&"minus 4 unhealthy: 0000:3b:02.0 (link ens785f0 is down), 0000:3b:02.1 (link ens785f0 is down), 0000:3b:02.2 (link ens785f0 is down), 0000:3b:02.3 (link ens785f0 is down)".to_string()),
        "{:?}",
        p.why()
    );
    assert!(
        report
            .to_string()
            .contains("in intel.com/x710, UNHEALTHY: link ens785f0 is down")
    );
}

#[test]
fn the_json_form_round_trips_and_tags_each_outcome() {
    let report = Node::new().report_file("config.json");
    let json = serde_json::to_string_pretty(&report).unwrap();
    let back: Report = serde_json::from_str(&json).unwrap();
    assert_eq!(back, report);
    let value: serde_json::Value = serde_json::from_str(&json).unwrap();
    let rdma_vf = value["devices"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["id"] == "0000:5e:00.2")
        .unwrap();
    assert_eq!(rdma_vf["outcome"]["result"], "excluded");
    assert_eq!(rdma_vf["pfName"], "ens1f0np0");
    assert_eq!(value["pools"][0]["allocatable"], 8);
    assert_eq!(value["pools"][0]["bySelector"][0], 8);
}

#[test]
fn a_resource_skipped_for_bad_selectors_is_named_in_the_report() {
    let config = Config::parse_with(
        r#"{"resourceList":[
          {"resourceName":"good","selectors":{"drivers":["iavf"]}},
          {"resourceName":"bad","selectors":{"vendors":["intel"]},"bogus":1}
        ]}"#,
        "intel.com",
        Strictness::Lenient,
    )
    .unwrap();
    let report = Node::new().report_with(&config, "intel.com", Arc::new(NoLinkHealth));
    assert_eq!(report.pools.len(), 1, "the bad resource has no pool");
    assert_eq!(report.config.len(), 2, "{:?}", report.config);
    assert!(
        report.config[0]
            .starts_with("resourceList[1]: skipped: resourceList[1].selectors.vendors[0]"),
        "{:?}",
        report.config
    );
    assert!(
        report.config[1].starts_with("resourceList[1].bogus: "),
        "{:?}",
        report.config
    );
    assert!(
        report
            .to_string()
            .contains("\nCONFIG\n    resourceList[1]: skipped: ")
    );
}
