//! SRDP configs: what loads (as Go would read it), what is warned about, and what is refused
//! with which field named.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use sriov_selector_pools::{Config, ConfigError, DeviceType};

fn testdata(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../testdata/srdp")
        .join(name)
}

#[test]
fn the_readme_example_config_loads_with_defaults_filled_in() {
    let cfg = Config::load(&testdata("config.json"), "intel.com").unwrap();
    assert!(cfg.warnings.is_empty(), "{:?}", cfg.warnings);
    let names: Vec<String> = cfg
        .resources
        .iter()
        .map(|r| r.full_name("intel.com"))
        .collect();
    assert_eq!(
        names,
        vec![
            "intel.com/intel_sriov_netdevice",
            "intel.com/intel_sriov_dpdk",
            "nvidia.com/mlnx_sriov_rdma",
            "intel.com/intel_fpga"
        ]
    );
    let net = &cfg.resources[0];
    assert_eq!(net.device_type, DeviceType::NetDevice);
    assert_eq!(net.selectors.len(), 1);
    assert_eq!(net.selectors[0].vendors[0].value, 0x8086);
    assert_eq!(net.selectors[0].devices.len(), 3);
    assert!(cfg.resources[2].selectors[0].is_rdma);
    assert_eq!(cfg.resources[3].device_type, DeviceType::Accelerator);
}

#[test]
fn keys_match_case_insensitively_as_go_reads_what_the_operator_writes() {
    // sriov-network-operator marshals Go structs without json tags for some fields.
    let cfg = Config::load(&testdata("operator-style.json"), "openshift.io").unwrap();
    assert!(cfg.warnings.is_empty(), "{:?}", cfg.warnings);
    let rc = &cfg.resources[0];
    assert_eq!(rc.full_name("openshift.io"), "openshift.io/mlxnics");
    let sel = &rc.selectors[0];
    assert!(sel.is_rdma);
    assert!(sel.need_vhost_net);
    assert_eq!(sel.vendors[0].raw, "15b3");
    assert_eq!(sel.pf_names[0].pf, "ens1f0");
    assert_eq!(sel.pf_names[0].indexes, Some(vec![0..=3]));
    assert!(rc.exclude_topology);
}

#[test]
fn allocation_policy_is_read_per_resource_with_go_key_matching() {
    use sriov_selector_pools::AllocationPolicy;
    let cfg = Config::parse(
        r#"{"resourceList":[
            {"resourceName":"a","allocationPolicy":"packed","selectors":{}},
            {"resourceName":"b","AllocationPolicy":"spread","ExcludeTopology":true,"selectors":{}},
            {"resourceName":"c","allocationpolicy":"numa","selectors":{}},
            {"resourceName":"d","allocationPolicy":"","selectors":{}},
            {"resourceName":"e","allocationPolicy":null,"selectors":{}},
            {"resourceName":"f","selectors":{}}
        ]}"#,
        "intel.com",
    )
    .unwrap();
    let got: Vec<Option<AllocationPolicy>> =
        cfg.resources.iter().map(|r| r.allocation_policy).collect();
    assert_eq!(
        got,
        vec![
            Some(AllocationPolicy::Packed),
            Some(AllocationPolicy::Spread),
            Some(AllocationPolicy::Numa),
            None,
            None,
            None
        ]
    );
    assert!(cfg.resources[1].exclude_topology);
    // Mixed-case keys, as the operator writes them, are Go's matching, not worth a warning.
    assert!(cfg.warnings.is_empty(), "{:?}", cfg.warnings);
}

#[test]
fn unknown_keys_are_warned_about_with_their_field_and_ignored() {
    let cfg = Config::parse(
        r#"{"resourceList":[{"resourceName":"a","selectors":{"vendor":["8086"],"drivers":["iavf"]},"resourcename2":1}],"extra":true}"#,
        "intel.com",
    )
    .unwrap();
    let fields: Vec<&str> = cfg.warnings.iter().map(|w| w.field.as_str()).collect();
    assert_eq!(
        fields,
        vec![
            "extra",
            "resourceList[0].resourcename2",
            "resourceList[0].selectors.vendor"
        ]
    );
    assert!(cfg.warnings[2].message.contains("unknown key"));
    assert!(cfg.resources[0].selectors[0].vendors.is_empty());
}

#[test]
fn selectors_may_be_an_array_tried_in_order() {
    let cfg = Config::parse(
        r#"{"resourceList":[{"resourceName":"a","selectors":[{"drivers":["iavf"]},{"pfNames":["p#1"]}]}]}"#,
        "intel.com",
    )
    .unwrap();
    assert_eq!(cfg.resources[0].selectors.len(), 2);
}

#[test]
fn the_same_name_under_different_prefixes_is_fine() {
    let cfg = Config::parse(
        r#"{"resourceList":[
            {"resourceName":"a","selectors":{}},
            {"resourceName":"a","resourcePrefix":"example.com","selectors":{}}]}"#,
        "intel.com",
    )
    .unwrap();
    assert_eq!(cfg.resources.len(), 2);
}

/// Each bad config, the field its error must name, and a piece of the message.
const BAD: &[(&str, &str, &str)] = &[
    ("not json", "", "not valid JSON"),
    ("[]", "config", "expected an object"),
    ("{}", "resourceList", "no resources configured"),
    (
        r##"{"resourceList":[]}"##,
        "resourceList",
        "no resources configured",
    ),
    (
        r##"{"resourceList":{}}"##,
        "resourceList",
        "expected an array",
    ),
    (
        r##"{"resourceList":["a"]}"##,
        "resourceList[0]",
        "expected an object",
    ),
    (
        r##"{"resourceList":[{"selectors":{}}]}"##,
        "resourceList[0].resourceName",
        "required",
    ),
    (
        r##"{"resourceList":[{"resourceName":"","selectors":{}}]}"##,
        "resourceList[0].resourceName",
        "must match ^[a-zA-Z0-9_-]+$",
    ),
    (
        r##"{"resourceList":[{"resourceName":"intel.sriov","selectors":{}}]}"##,
        "resourceList[0].resourceName",
        "must match",
    ),
    (
        r##"{"resourceList":[{"resourceName":42,"selectors":{}}]}"##,
        "resourceList[0].resourceName",
        "expected a string, found number 42",
    ),
    (
        r##"{"resourceList":[{"resourceName":"a","selectors":{}},{"resourceName":"a","resourcePrefix":"intel.com","selectors":{}}]}"##,
        "resourceList[1].resourceName",
        "intel.com/a is already used by resourceList[0]",
    ),
    (
        r##"{"resourceList":[{"resourceName":"a","deviceType":"netdevice","selectors":{}}]}"##,
        "resourceList[0].deviceType",
        "unsupported \"netdevice\"",
    ),
    (
        r##"{"resourceList":[{"resourceName":"a","resourcePrefix":"Intel_com","selectors":{}}]}"##,
        "resourceList[0].resourcePrefix",
        "not a DNS subdomain",
    ),
    (
        r##"{"resourceList":[{"resourceName":"a"}]}"##,
        "resourceList[0].selectors",
        "required",
    ),
    (
        r##"{"resourceList":[{"resourceName":"a","selectors":null}]}"##,
        "resourceList[0].selectors",
        "required",
    ),
    (
        r##"{"resourceList":[{"resourceName":"a","selectors":[]}]}"##,
        "resourceList[0].selectors",
        "at least one selector",
    ),
    (
        r##"{"resourceList":[{"resourceName":"a","selectors":"iavf"}]}"##,
        "resourceList[0].selectors",
        "an object or an array of objects",
    ),
    (
        r##"{"resourceList":[{"resourceName":"a","selectors":[{},3]}]}"##,
        "resourceList[0].selectors[1]",
        "expected an object",
    ),
    (
        r##"{"resourceList":[{"resourceName":"a","selectors":{"vendors":"8086"}}]}"##,
        "resourceList[0].selectors.vendors",
        "expected an array",
    ),
    (
        r##"{"resourceList":[{"resourceName":"a","selectors":{"vendors":[8086]}}]}"##,
        "resourceList[0].selectors.vendors[0]",
        "expected a string",
    ),
    (
        r##"{"resourceList":[{"resourceName":"a","selectors":{"vendors":["80g6"]}}]}"##,
        "resourceList[0].selectors.vendors[0]",
        "not a hex ID",
    ),
    (
        r##"{"resourceList":[{"resourceName":"a","selectors":{"devices":["0x154c"]}}]}"##,
        "resourceList[0].selectors.devices[0]",
        "no 0x",
    ),
    (
        r##"{"resourceList":[{"resourceName":"a","selectors":{"devices":["1","154c0"]}}]}"##,
        "resourceList[0].selectors.devices[1]",
        "1 to 4 digits",
    ),
    (
        r##"{"resourceList":[{"resourceName":"a","selectors":{"pfNames":["ens1f0#"]}}]}"##,
        "resourceList[0].selectors.pfNames[0]",
        "is not an index or a range",
    ),
    (
        r##"{"resourceList":[{"resourceName":"a","selectors":{"pfNames":["ens1f0#1-"]}}]}"##,
        "resourceList[0].selectors.pfNames[0]",
        "\"1-\" is not an index or a range",
    ),
    (
        r##"{"resourceList":[{"resourceName":"a","selectors":{"pfNames":["ens1f0#7-2"]}}]}"##,
        "resourceList[0].selectors.pfNames[0]",
        "ends before it starts",
    ),
    (
        r##"{"resourceList":[{"resourceName":"a","selectors":{"pfNames":["ens1f0#1#2"]}}]}"##,
        "resourceList[0].selectors.pfNames[0]",
        "more than one '#'",
    ),
    (
        r##"{"resourceList":[{"resourceName":"a","selectors":{"pfNames":["#1"]}}]}"##,
        "resourceList[0].selectors.pfNames[0]",
        "no PF before '#'",
    ),
    (
        r##"{"resourceList":[{"resourceName":"a","selectors":{"pfNames":["p#a-b"]}}]}"##,
        "resourceList[0].selectors.pfNames[0]",
        "\"a-b\" is not an index",
    ),
    (
        r##"{"resourceList":[{"resourceName":"a","selectors":{"rootDevices":["ens1f0#1"]}}]}"##,
        "resourceList[0].selectors.rootDevices[0]",
        "not a PCI address",
    ),
    (
        r##"{"resourceList":[{"resourceName":"a","selectors":{"pciAddresses":["0000:3b:20.0"]}}]}"##,
        "resourceList[0].selectors.pciAddresses[0]",
        "above 0x1f",
    ),
    (
        r##"{"resourceList":[{"resourceName":"a","selectors":{"isRdma":"true"}}]}"##,
        "resourceList[0].selectors.isRdma",
        "expected a boolean",
    ),
    (
        r##"{"resourceList":[{"resourceName":"a","selectors":{"isRdma":true,"vdpaType":"vhost"}}]}"##,
        "resourceList[0].selectors.vdpaType",
        "mutually exclusive",
    ),
    (
        r##"{"resourceList":[{"resourceName":"a","selectors":{"vdpaType":"vdpa"}}]}"##,
        "resourceList[0].selectors.vdpaType",
        "virtio or vhost",
    ),
    (
        r##"{"resourceList":[{"resourceName":"a","excludeTopology":"yes","selectors":{}}]}"##,
        "resourceList[0].excludeTopology",
        "expected a boolean",
    ),
    (
        r##"{"resourceList":[{"resourceName":"a","allocationPolicy":"balanced","selectors":{}}]}"##,
        "resourceList[0].allocationPolicy",
        "unsupported \"balanced\" (packed, spread, numa",
    ),
    (
        r##"{"resourceList":[{"resourceName":"a","AllocationPolicy":"Packed","selectors":{}}]}"##,
        "resourceList[0].allocationPolicy",
        "did you mean \"packed\"",
    ),
    (
        r##"{"resourceList":[{"resourceName":"a","allocationPolicy":1,"selectors":{}}]}"##,
        "resourceList[0].allocationPolicy",
        "expected a string",
    ),
    (
        r##"{"resourceList":[{"resourceName":"a","selectors":{},"additionalInfo":{"*":{"k":1}}}]}"##,
        "resourceList[0].additionalInfo.*.k",
        "expected a string",
    ),
    (
        r##"{"resourceList":[{"resourceName":"a","selectors":{},"additionalInfo":{"eth0":{}}}]}"##,
        "resourceList[0].additionalInfo.eth0",
        "PCI address or \"*\"",
    ),
    (
        r##"{"resourceList":[{"resourceName":"a","selectors":{"drivers":["iavf"],"Drivers":["ixgbevf"]}}]}"##,
        "resourceList[0].selectors.drivers",
        "given twice (also as \"Drivers\")",
    ),
    (
        r##"{"resourceList":[{"resourceName":"this_name_is_far_too_long_for_kubernetes_to_accept_as_a_resource_name","selectors":{}}]}"##,
        "resourceList[0].resourceName",
        "longer than 63",
    ),
];

#[test]
fn bad_configs_fail_at_load_naming_their_field() {
    assert!(BAD.len() >= 20);
    for (text, field, message) in BAD {
        let err = Config::parse(text, "intel.com").expect_err(text);
        let shown = err.to_string();
        assert_eq!(err.field().unwrap_or(""), *field, "config {text}: {shown}");
        assert!(
            shown.contains(message),
            "config {text}: {shown:?} lacks {message:?}"
        );
        if !field.is_empty() {
            assert!(shown.starts_with(field), "{shown}");
        }
    }
}

#[test]
fn a_missing_file_is_named_in_the_error() {
    let err =
        Config::load(std::path::Path::new("/nonexistent/pcidp.json"), "intel.com").unwrap_err();
    assert!(matches!(err, ConfigError::Read { .. }));
    assert!(err.to_string().contains("/nonexistent/pcidp.json"));
}
