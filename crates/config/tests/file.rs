//! The SR-IOV config file: good samples, and each bad config with the message it gets.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use sriov_config::{Error, FileError, SriovConfig, Warning};
use sriov_pci::PciAddress;

const FILE: &str = "/etc/sriov/pci.config";

fn testdata(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../testdata/config")
        .join(name)
}

fn pci(s: &str) -> PciAddress {
    s.parse().unwrap()
}

fn errors(yaml: &str) -> Vec<FileError> {
    match SriovConfig::parse(Path::new(FILE), yaml).unwrap_err() {
        Error::File { errors } => errors,
        other => panic!("expected a file error, got {other}"),
    }
}

/// The single error of a bad config; checks it names the file, and the line and field given.
fn the_error(yaml: &str, line: usize, field: &str, message: &str) -> String {
    let errs = errors(yaml);
    assert_eq!(errs.len(), 1, "expected one error, got {errs:#?}");
    let e = &errs[0];
    let text = e.to_string();
    assert!(text.starts_with(FILE), "{text}");
    assert_eq!(e.line, Some(line), "{text}");
    assert_eq!(e.field, field, "{text}");
    assert!(
        e.message.contains(message),
        "{text}\n  wanted message containing: {message}"
    );
    text
}

/// A valid PF body, indented for a PF key at column 2.
const BODY: &str = "    pfKernelDriver: i40e
    vfKernelDriver: iavf
    capabilities: [intel]
    serviceDomains: [sd.example]
";

#[test]
fn sample_two_port_config_parses_with_resource_names() {
    let loaded = SriovConfig::load(&testdata("x710-two-ports.yaml")).unwrap();
    assert!(loaded.warnings.is_empty());
    let pfs = &loaded.config.physical_functions;
    assert_eq!(pfs.len(), 2);
    let pf = &pfs[&pci("0000:01:00.0")];
    assert_eq!(pf.pf_kernel_driver, "i40e");
    assert_eq!(pf.vf_kernel_driver, "iavf");
    assert_eq!(
        pf.resource_names(),
        ["service.domain.1/intel", "service.domain.1/10G"]
    );
    assert_eq!(pf.virtual_functions, None);
    assert_eq!(pf.line, Some(3));
}

#[test]
fn listed_vfs_keep_their_addresses_groups_and_lines() {
    let loaded = SriovConfig::load(&testdata("listed-vfs.yaml")).unwrap();
    let pf = &loaded.config.physical_functions[&pci("0000:01:00.0")];
    let vfs = pf.virtual_functions.as_ref().unwrap();
    assert_eq!(vfs.len(), 2);
    assert_eq!(
        vfs[1].address,
        pci("0000:01:10.2"),
        "short form is canonicalised"
    );
    assert_eq!(vfs[1].iommu_group, 11);
    assert_eq!((vfs[0].line, vfs[1].line), (Some(9), Some(11)));
}

#[test]
fn empty_file_means_no_pfs_with_a_warning() {
    let loaded = SriovConfig::load(&testdata("empty.yaml")).unwrap();
    assert!(loaded.config.physical_functions.is_empty());
    assert_eq!(
        loaded.warnings,
        [Warning::NoPhysicalFunctions {
            file: testdata("empty.yaml")
        }]
    );
    let loaded = SriovConfig::parse(Path::new(FILE), "physicalFunctions:\n").unwrap();
    assert!(loaded.config.physical_functions.is_empty());
    assert_eq!(loaded.warnings.len(), 1);
}

#[test]
fn missing_file_names_the_path() {
    let err = SriovConfig::load(Path::new("/nonexistent/pci.config")).unwrap_err();
    assert!(matches!(err, Error::ReadFile { .. }));
    assert!(err.to_string().contains("/nonexistent/pci.config"), "{err}");
}

#[test]
fn every_broken_rule_is_reported_with_its_line() {
    let text = std::fs::read_to_string(testdata("bad-many-rules.yaml")).unwrap();
    let errs = errors(&text);
    let got: Vec<(Option<usize>, &str)> = errs.iter().map(|e| (e.line, e.field.as_str())).collect();
    assert_eq!(
        got,
        [
            (Some(4), "physicalFunctions.0000:01:00.0.pfKernelDriver"),
            (Some(6), "physicalFunctions.0000:01:00.0.capabilities"),
            (Some(8), "physicalFunctions.0000:01:00.0.serviceDomains[0]"),
            (Some(9), "physicalFunctions.01:00.0"),
        ],
        "{errs:#?}"
    );
}

// ---- bad configs, one rule each ----

#[test]
fn bad_yaml_syntax_tab_indentation() {
    let yaml = "physicalFunctions:\n  0000:01:00.0:\n\tpfKernelDriver: i40e\n";
    the_error(yaml, 3, "", "found character that cannot start any token");
}

#[test]
fn bad_yaml_syntax_unclosed_flow_sequence() {
    let yaml = "physicalFunctions:\n  0000:01:00.0:\n    capabilities: [intel\n";
    let errs = errors(yaml);
    assert_eq!(errs.len(), 1);
    assert!(errs[0].line.is_some(), "{}", errs[0]);
    assert!(errs[0].to_string().starts_with(FILE));
}

#[test]
fn bad_type_capabilities_as_a_string() {
    let yaml = "physicalFunctions:
  0000:01:00.0:
    pfKernelDriver: i40e
    vfKernelDriver: iavf
    capabilities: intel
    serviceDomains: [sd]
";
    the_error(
        yaml,
        5,
        "physicalFunctions.0000:01:00.0.capabilities",
        "invalid type: string \"intel\", expected a sequence",
    );
}

#[test]
fn bad_type_iommu_group_negative() {
    let yaml = format!(
        "physicalFunctions:\n  0000:01:00.0:\n{BODY}    virtualFunctions:\n      - address: 0000:01:02.0\n        iommuGroup: -1\n"
    );
    the_error(
        &yaml,
        9,
        "physicalFunctions.0000:01:00.0.virtualFunctions[0].iommuGroup",
        "invalid type: integer `-1`, expected u32",
    );
}

#[test]
fn bad_type_iommu_group_not_a_number() {
    let yaml = format!(
        "physicalFunctions:\n  0000:01:00.0:\n{BODY}    virtualFunctions:\n      - address: 0000:01:02.0\n        iommuGroup: seven\n"
    );
    the_error(
        &yaml,
        9,
        "physicalFunctions.0000:01:00.0.virtualFunctions[0].iommuGroup",
        "invalid type: string \"seven\", expected u32",
    );
}

#[test]
fn missing_required_field() {
    let yaml = "physicalFunctions:
  0000:01:00.0:
    pfKernelDriver: i40e
    capabilities: [intel]
    serviceDomains: [sd]
";
    the_error(
        yaml,
        3,
        "physicalFunctions.0000:01:00.0",
        "missing field `vfKernelDriver`",
    );
}

#[test]
fn empty_capabilities() {
    let yaml = "physicalFunctions:
  0000:01:00.0:
    pfKernelDriver: i40e
    vfKernelDriver: iavf
    capabilities: []
    serviceDomains: [sd]
";
    the_error(
        yaml,
        5,
        "physicalFunctions.0000:01:00.0.capabilities",
        "must not be empty",
    );
}

#[test]
fn empty_service_domains() {
    let yaml = "physicalFunctions:
  0000:01:00.0:
    pfKernelDriver: i40e
    vfKernelDriver: iavf
    capabilities: [intel]
    serviceDomains: []
";
    the_error(
        yaml,
        6,
        "physicalFunctions.0000:01:00.0.serviceDomains",
        "must not be empty",
    );
}

#[test]
fn bad_pf_address() {
    let yaml = format!("physicalFunctions:\n  0000:01:00.8:\n{BODY}");
    the_error(
        &yaml,
        2,
        "physicalFunctions.0000:01:00.8",
        "the key is not a PCI address: invalid PCI address \"0000:01:00.8\"",
    );
}

#[test]
fn bad_vf_address() {
    let yaml = format!(
        "physicalFunctions:\n  0000:01:00.0:\n{BODY}    virtualFunctions:\n      - address: 0000:01:02\n        iommuGroup: 1\n"
    );
    the_error(
        &yaml,
        8,
        "physicalFunctions.0000:01:00.0.virtualFunctions[0].address",
        "not a PCI address",
    );
}

#[test]
fn duplicate_pf() {
    let yaml = format!("physicalFunctions:\n  0000:01:00.0:\n{BODY}  0000:01:00.0:\n{BODY}");
    the_error(
        &yaml,
        7,
        "physicalFunctions.0000:01:00.0",
        "PF 0000:01:00.0 is listed twice",
    );
}

#[test]
fn duplicate_pf_in_short_and_long_form() {
    let yaml = format!("physicalFunctions:\n  0000:01:00.0:\n{BODY}  01:00.0:\n{BODY}");
    the_error(
        &yaml,
        7,
        "physicalFunctions.01:00.0",
        "PF 0000:01:00.0 is listed twice (also as 0000:01:00.0)",
    );
}

#[test]
fn unknown_key_in_a_pf() {
    let yaml = format!("physicalFunctions:\n  0000:01:00.0:\n{BODY}    pfDriver: i40e\n");
    the_error(
        &yaml,
        7,
        "physicalFunctions.0000:01:00.0",
        "unknown field `pfDriver`, expected one of `pfKernelDriver`",
    );
}

#[test]
fn unknown_top_level_key() {
    let yaml = format!("physicalFunction:\n  0000:01:00.0:\n{BODY}");
    the_error(
        &yaml,
        1,
        "",
        "unknown field `physicalFunction`, expected `physicalFunctions`",
    );
}

#[test]
fn unknown_key_in_a_vf() {
    let yaml = format!(
        "physicalFunctions:\n  0000:01:00.0:\n{BODY}    virtualFunctions:\n      - address: 0000:01:02.0\n        iommuGroup: 1\n        mac: 00:11:22:33:44:55\n"
    );
    the_error(
        &yaml,
        10,
        "physicalFunctions.0000:01:00.0.virtualFunctions[0]",
        "unknown field `mac`",
    );
}

#[test]
fn vf_listed_under_two_pfs() {
    let vfs = "    virtualFunctions:\n      - address: 0000:01:02.0\n        iommuGroup: 1\n";
    let yaml =
        format!("physicalFunctions:\n  0000:01:00.0:\n{BODY}{vfs}  0000:01:00.1:\n{BODY}{vfs}");
    the_error(
        &yaml,
        16,
        "physicalFunctions.0000:01:00.1.virtualFunctions[0].address",
        "VF 0000:01:02.0 is already listed under PF 0000:01:00.0",
    );
}

#[test]
fn vf_listed_twice_under_one_pf() {
    let yaml = format!(
        "physicalFunctions:\n  0000:01:00.0:\n{BODY}    virtualFunctions:\n      - address: 0000:01:02.0\n        iommuGroup: 1\n      - iommuGroup: 1\n        address: 01:02.0\n"
    );
    the_error(
        &yaml,
        11,
        "physicalFunctions.0000:01:00.0.virtualFunctions[1].address",
        "VF 0000:01:02.0 is listed twice under this PF",
    );
}

#[test]
fn vf_that_is_a_pf() {
    let yaml = format!(
        "physicalFunctions:\n  0000:01:00.0:\n{BODY}    virtualFunctions:\n      - address: 0000:01:00.0\n        iommuGroup: 1\n"
    );
    the_error(
        &yaml,
        8,
        "physicalFunctions.0000:01:00.0.virtualFunctions[0].address",
        "0000:01:00.0 is a PF of this file, not a VF",
    );
}

#[test]
fn empty_virtual_functions_list() {
    let yaml = format!("physicalFunctions:\n  0000:01:00.0:\n{BODY}    virtualFunctions: []\n");
    the_error(
        &yaml,
        7,
        "physicalFunctions.0000:01:00.0.virtualFunctions",
        "leave the key out to use every VF",
    );
}

#[test]
fn driver_name_that_is_a_path() {
    let yaml = "physicalFunctions:
  0000:01:00.0:
    pfKernelDriver: i40e
    vfKernelDriver: ../vfio-pci
    capabilities: [intel]
    serviceDomains: [sd]
";
    the_error(
        yaml,
        4,
        "physicalFunctions.0000:01:00.0.vfKernelDriver",
        "\"../vfio-pci\" is not a driver name: it must be a single path component",
    );
}

#[test]
fn empty_driver_name() {
    let yaml = "physicalFunctions:
  0000:01:00.0:
    pfKernelDriver: \"\"
    vfKernelDriver: iavf
    capabilities: [intel]
    serviceDomains: [sd]
";
    the_error(
        yaml,
        3,
        "physicalFunctions.0000:01:00.0.pfKernelDriver",
        "it is empty",
    );
}

#[test]
fn capability_with_a_slash() {
    let yaml = "physicalFunctions:
  0000:01:00.0:
    pfKernelDriver: i40e
    vfKernelDriver: iavf
    capabilities:
      - intel
      - 10G/25G
    serviceDomains: [sd]
";
    the_error(
        yaml,
        7,
        "physicalFunctions.0000:01:00.0.capabilities[1]",
        "\"10G/25G\" is not a valid capability",
    );
}

#[test]
fn service_domain_not_a_dns_subdomain() {
    let yaml = "physicalFunctions:
  0000:01:00.0:
    pfKernelDriver: i40e
    vfKernelDriver: iavf
    capabilities: [intel]
    serviceDomains:
      - Service.Domain
";
    the_error(
        yaml,
        7,
        "physicalFunctions.0000:01:00.0.serviceDomains[0]",
        "\"Service.Domain\" is not a valid service domain: use a DNS subdomain",
    );
}

#[test]
fn capability_listed_twice() {
    let yaml = "physicalFunctions:
  0000:01:00.0:
    pfKernelDriver: i40e
    vfKernelDriver: iavf
    capabilities:
      - intel
      - intel
    serviceDomains: [sd]
";
    the_error(
        yaml,
        7,
        "physicalFunctions.0000:01:00.0.capabilities[1]",
        "\"intel\" is listed twice",
    );
}

#[test]
fn top_level_list_instead_of_a_map() {
    let yaml = "- physicalFunctions: {}\n";
    the_error(
        yaml,
        1,
        "",
        "invalid type: sequence, expected a mapping with the key physicalFunctions",
    );
}

#[test]
fn physical_functions_as_a_list() {
    let yaml = "physicalFunctions:\n  - 0000:01:00.0\n";
    the_error(
        yaml,
        2,
        "physicalFunctions",
        "invalid type: sequence, expected a map from PCI address to physical function",
    );
}

#[test]
fn more_than_one_document() {
    let yaml = format!("physicalFunctions:\n  0000:01:00.0:\n{BODY}---\nphysicalFunctions: {{}}\n");
    let errs = errors(&yaml);
    assert_eq!(errs.len(), 1);
    assert!(
        errs[0].message.contains("more than one document"),
        "{}",
        errs[0]
    );
}

#[test]
fn pf_without_a_body() {
    let yaml = "physicalFunctions:\n  0000:01:00.0:\n";
    the_error(
        yaml,
        2,
        "physicalFunctions.0000:01:00.0",
        "missing field `pfKernelDriver`",
    );
}

#[test]
fn vf_entry_that_is_not_a_mapping() {
    let yaml = format!(
        "physicalFunctions:\n  0000:01:00.0:\n{BODY}    virtualFunctions:\n      - 0000:01:02.0\n"
    );
    let text = the_error(
        &yaml,
        8,
        "physicalFunctions.0000:01:00.0.virtualFunctions[0]",
        "invalid type",
    );
    assert!(text.contains("expected a virtual function"), "{text}");
}
