//! The attributes a VF is published with: dra-driver-sriov's names, types
//! and spellings, so DeviceClasses, CEL selectors and Multus written for it
//! select and read our devices unchanged.
//!
//! Wire facts (dra-driver-sriov `pkg/consts/consts.go`,
//! `pkg/devicestate/discovery.go`): IDs are strings of lower-case hex
//! without `0x` (`8086`, `154c`: ghw's spelling for vendor and PF device,
//! the VF's sysfs `device` with `0x` trimmed); `vfID` and `dra.net/numaNode`
//! are ints (`-1` for no NUMA affinity, the kernel's convention);
//! `rdmaCapable` is a bool; `linkType` is `ethernet`, `infiniband` or
//! `unknown`; `EswitchMode` is `legacy` unless the PF's e-switch is in
//! `switchdev`. `resource.kubernetes.io/pcieRoot` is Kubernetes' standard
//! attribute (`k8s.io/dynamic-resource-allocation/deviceattribute`):
//! `pci<domain>:<bus>`, the first directory under `/sys/devices` that the
//! device's `bus/pci/devices/<BDF>` link resolves into.
//!
//! Every name and value is checked against the API server's validation
//! before it is published: an attribute that would fail it is left out with
//! a warning, so one odd interface name cannot get the whole slice refused.

use std::collections::BTreeMap;
use std::path::{Component, Path};

use k8s_openapi::api::resource::v1::DeviceAttribute;
use sriov_pci::{PciAddress, Sysfs};
use sriov_selector_pools::HostDevice;

use crate::devices::DraDevice;

/// The attribute domain of dra-driver-sriov (its driver name).
pub const SRIOV_DOMAIN: &str = "sriovnetwork.k8snetworkplumbingwg.io";
/// `<domain>/pciAddress`: the VF's PCI address.
pub const PCI_ADDRESS: &str = "sriovnetwork.k8snetworkplumbingwg.io/pciAddress";
/// `<domain>/PFName`: the PF's interface.
pub const PF_NAME: &str = "sriovnetwork.k8snetworkplumbingwg.io/PFName";
/// `<domain>/EswitchMode`: `legacy` or `switchdev`.
pub const ESWITCH_MODE: &str = "sriovnetwork.k8snetworkplumbingwg.io/EswitchMode";
/// `<domain>/vendor`: vendor ID, lower-case hex without `0x`.
pub const VENDOR: &str = "sriovnetwork.k8snetworkplumbingwg.io/vendor";
/// `<domain>/deviceID`: the VF's device ID.
pub const DEVICE_ID: &str = "sriovnetwork.k8snetworkplumbingwg.io/deviceID";
/// `<domain>/pfDeviceID`: the PF's device ID.
pub const PF_DEVICE_ID: &str = "sriovnetwork.k8snetworkplumbingwg.io/pfDeviceID";
/// `<domain>/vfID`: the VF index (int).
pub const VF_ID: &str = "sriovnetwork.k8snetworkplumbingwg.io/vfID";
/// `<domain>/resourceName`: the selector pool's resource name.
pub const RESOURCE_NAME: &str = "sriovnetwork.k8snetworkplumbingwg.io/resourceName";
/// `<domain>/linkType`: `ethernet`, `infiniband` or `unknown`.
pub const LINK_TYPE: &str = "sriovnetwork.k8snetworkplumbingwg.io/linkType";
/// `<domain>/rdmaCapable` (bool).
pub const RDMA_CAPABLE: &str = "sriovnetwork.k8snetworkplumbingwg.io/rdmaCapable";
/// `<domain>/pfPciAddress`: the PF's PCI address.
pub const PF_PCI_ADDRESS: &str = "sriovnetwork.k8snetworkplumbingwg.io/pfPciAddress";
/// Multus reads the device ID (PCI address) for its device-info lookup here.
pub const MULTUS_DEVICE_ID: &str = "k8s.cni.cncf.io/deviceID";
/// Multus reads the resource name for its device-info lookup here.
pub const MULTUS_RESOURCE_NAME: &str = "k8s.cni.cncf.io/resourceName";
/// Kubernetes' standard PCI address attribute.
pub const STANDARD_PCI_BUS_ID: &str = "resource.kubernetes.io/pciBusID";
/// Kubernetes' standard PCIe root complex attribute (`pci0000:00`).
pub const STANDARD_PCIE_ROOT: &str = "resource.kubernetes.io/pcieRoot";
/// The NUMA node, under the prefix dranet and dracpu share (int).
pub const NUMA_NODE: &str = "dra.net/numaNode";

/// Longest domain part of an attribute name (`DeviceMaxDomainLength`).
pub const MAX_DOMAIN_LEN: usize = 63;
/// Longest identifier part of an attribute name (`DeviceMaxIDLength`).
pub const MAX_ID_LEN: usize = 32;
/// Longest string or version value (`DeviceAttributeMaxValueLength`).
pub const MAX_VALUE_LEN: usize = 64;
/// Most attributes and capacities of one device (`ResourceSliceMaxAttributesAndCapacitiesPerDevice`).
pub const MAX_ATTRIBUTES: usize = 32;

/// Why an attribute (or a name elsewhere in a slice) fails the API's validation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AttributeError {
    /// The name is not `[<dns subdomain>/]<C identifier>` within the length limits.
    #[error("attribute name {name:?} is not a qualified name: {rule}")]
    Name {
        /// The name.
        name: String,
        /// The rule it breaks.
        rule: &'static str,
    },
    /// The value breaks the value rules.
    #[error("attribute {name}: {rule}")]
    Value {
        /// The attribute's name.
        name: String,
        /// The rule it breaks.
        rule: &'static str,
    },
}

/// Host facts beyond [`HostDevice`] the attributes need.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostFacts {
    /// `pci<domain>:<bus>` of the device's root complex.
    pub pcie_root: Option<String>,
    /// The PF's device ID.
    pub pf_device_id: Option<u16>,
    /// `legacy` or `switchdev`; `None` when the device has no PF.
    pub eswitch_mode: Option<String>,
}

impl HostFacts {
    /// Reads the facts of `host` from `sysfs`. Whatever cannot be read is
    /// left `None` (and its attribute out), with a debug log: a missing fact
    /// must not hide the device.
    pub fn read(sysfs: &Sysfs, host: &HostDevice) -> Self {
        let pcie_root = pcie_root(sysfs, host.address);
        if pcie_root.is_none() {
            tracing::debug!(device = %host.address, "no PCIe root found under its sysfs link");
        }
        let pf_device_id = host.pf.and_then(|pf| match sysfs.ids(pf) {
            Ok(ids) => Some(ids.device),
            Err(error) => {
                tracing::debug!(device = %host.address, %pf, %error, "cannot read the PF's device ID");
                None
            }
        });
        let eswitch_mode = host.pf.map(|pf| {
            if has_vf_representors(&sysfs.device_dir(pf)) {
                "switchdev".to_string()
            } else {
                "legacy".to_string()
            }
        });
        Self {
            pcie_root,
            pf_device_id,
            eswitch_mode,
        }
    }
}

/// The root complex `address` sits under: the `pci<dddd>:<bb>` component of
/// what its `bus/pci/devices/<BDF>` link points to (the kernel's link is
/// `../../../devices/pci0000:00/0000:00:02.0/0000:3b:00.0`). The link is read,
/// not followed, so a tree copied elsewhere (a fixture) gives the same answer.
pub fn pcie_root(sysfs: &Sysfs, address: PciAddress) -> Option<String> {
    let target = std::fs::read_link(sysfs.device_dir(address)).ok()?;
    target.components().find_map(|c| match c {
        Component::Normal(part) => part.to_str().filter(|p| is_pci_root(p)).map(str::to_string),
        _ => None,
    })
}

/// `pci` followed by a 4-hex-digit domain, `:`, and a 2-hex-digit bus.
fn is_pci_root(name: &str) -> bool {
    let Some(rest) = name.strip_prefix("pci") else {
        return false;
    };
    let bytes = rest.as_bytes();
    bytes.len() == 7
        && bytes.iter().enumerate().all(|(i, b)| {
            if i == 4 {
                *b == b':'
            } else {
                b.is_ascii_hexdigit()
            }
        })
}

/// Whether a PF's `net/` lists VF representors, which exist only while its
/// e-switch is in switchdev mode. dra-driver-sriov asks devlink and falls
/// back to `legacy` when it cannot; sysfs shows the same through the
/// representors' `phys_port_name` (`pf0vf3`) beside a `phys_switch_id`.
fn has_vf_representors(pf_dir: &Path) -> bool {
    let Ok(entries) = std::fs::read_dir(pf_dir.join("net")) else {
        return false;
    };
    entries.flatten().any(|entry| {
        let read = |attr: &str| {
            std::fs::read_to_string(entry.path().join(attr))
                .ok()
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
        };
        read("phys_switch_id").is_some()
            && read("phys_port_name").is_some_and(|p| is_vf_port_name(&p))
    })
}

/// `(c<N>)?pf<N>vf<M>`.
fn is_vf_port_name(name: &str) -> bool {
    let rest = match name.strip_prefix('c') {
        Some(after) => after.trim_start_matches(|c: char| c.is_ascii_digit()),
        None => name,
    };
    let Some(rest) = rest.strip_prefix("pf") else {
        return false;
    };
    let after_pf = rest.trim_start_matches(|c: char| c.is_ascii_digit());
    if after_pf.len() == rest.len() {
        return false;
    }
    let Some(vf) = after_pf.strip_prefix("vf") else {
        return false;
    };
    !vf.is_empty() && vf.bytes().all(|b| b.is_ascii_digit())
}

/// dra-driver-sriov's link type names, from the kernel's `type` as
/// selector-pools reports it (`ether`, `infiniband`).
fn link_type_name(link_type: Option<&str>) -> &'static str {
    match link_type {
        Some("ether") | Some("ethernet") => "ethernet",
        Some("infiniband") => "infiniband",
        _ => "unknown",
    }
}

fn hex4(id: u16) -> String {
    format!("{id:04x}")
}

fn string(value: impl Into<String>) -> DeviceAttribute {
    DeviceAttribute {
        string: Some(value.into()),
        ..Default::default()
    }
}

fn int(value: i64) -> DeviceAttribute {
    DeviceAttribute {
        int: Some(value),
        ..Default::default()
    }
}

fn boolean(value: bool) -> DeviceAttribute {
    DeviceAttribute {
        bool: Some(value),
        ..Default::default()
    }
}

/// The attributes of `device`, each checked with [`check_attribute`]; one
/// that fails is left out with a warning naming the device and the rule.
pub fn device_attributes(
    device: &DraDevice,
    facts: &HostFacts,
) -> BTreeMap<String, DeviceAttribute> {
    let host = &device.host;
    let address = host.address.to_string();
    let mut wanted: Vec<(&str, DeviceAttribute)> = vec![
        (VENDOR, string(hex4(host.vendor))),
        (DEVICE_ID, string(hex4(host.device))),
        (PCI_ADDRESS, string(address.clone())),
        (MULTUS_DEVICE_ID, string(address.clone())),
        (STANDARD_PCI_BUS_ID, string(address)),
        (RESOURCE_NAME, string(device.resource.clone())),
        (MULTUS_RESOURCE_NAME, string(device.resource.clone())),
        (LINK_TYPE, string(link_type_name(host.link_type.as_deref()))),
        (
            RDMA_CAPABLE,
            boolean(!host.rdma.names.is_empty() || host.rdma.exclusive),
        ),
        (NUMA_NODE, int(host.numa_node.map(i64::from).unwrap_or(-1))),
    ];
    if let Some(pf) = host.pf {
        wanted.push((PF_PCI_ADDRESS, string(pf.to_string())));
    }
    if let Some(pf_name) = &host.pf_name {
        wanted.push((PF_NAME, string(pf_name.clone())));
    }
    if let Some(index) = host.vf_index {
        wanted.push((VF_ID, int(i64::from(index))));
    }
    if let Some(id) = facts.pf_device_id {
        wanted.push((PF_DEVICE_ID, string(hex4(id))));
    }
    if let Some(mode) = &facts.eswitch_mode {
        wanted.push((ESWITCH_MODE, string(mode.clone())));
    }
    if let Some(root) = &facts.pcie_root {
        wanted.push((STANDARD_PCIE_ROOT, string(root.clone())));
    }

    let mut out = BTreeMap::new();
    for (name, value) in wanted {
        match check_attribute(name, &value) {
            Ok(()) => {
                out.insert(name.to_string(), value);
            }
            Err(error) => {
                tracing::warn!(device = %device.name, %error, "attribute left out of the ResourceSlice");
            }
        }
    }
    out
}

/// Checks one attribute as the API server does: a qualified name, exactly
/// one value, string and version values at most [`MAX_VALUE_LEN`].
pub fn check_attribute(name: &str, value: &DeviceAttribute) -> Result<(), AttributeError> {
    check_qualified_name(name)?;
    let set = [
        value.bool.is_some(),
        value.int.is_some(),
        value.string.is_some(),
        value.version.is_some(),
    ]
    .iter()
    .filter(|s| **s)
    .count();
    let fail = |rule| {
        Err(AttributeError::Value {
            name: name.to_string(),
            rule,
        })
    };
    if set != 1 {
        return fail("exactly one of bool, int, string, version must be set");
    }
    let long = |v: &Option<String>| {
        v.as_ref()
            .is_some_and(|s| s.chars().count() > MAX_VALUE_LEN)
    };
    if long(&value.string) {
        return fail("string value longer than 64 characters");
    }
    if long(&value.version) {
        return fail("version value longer than 64 characters");
    }
    Ok(())
}

/// `[<DNS subdomain of at most 63>/]<C identifier of at most 32>`.
pub fn check_qualified_name(name: &str) -> Result<(), AttributeError> {
    let fail = |rule| {
        Err(AttributeError::Name {
            name: name.to_string(),
            rule,
        })
    };
    let (domain, id) = match name.split_once('/') {
        Some((domain, id)) => (Some(domain), id),
        None => (None, name),
    };
    if let Some(domain) = domain {
        if domain.len() > MAX_DOMAIN_LEN {
            return fail("domain longer than 63 characters");
        }
        if !is_dns_subdomain(domain) {
            return fail("domain is not a DNS subdomain");
        }
    }
    if id.len() > MAX_ID_LEN {
        return fail("identifier longer than 32 characters");
    }
    if !is_c_identifier(id) {
        return fail("identifier is not a C identifier");
    }
    Ok(())
}

/// A C identifier: a letter or `_`, then letters, digits and `_`.
pub fn is_c_identifier(s: &str) -> bool {
    let mut bytes = s.bytes();
    match bytes.next() {
        Some(b) if b.is_ascii_alphabetic() || b == b'_' => {}
        _ => return false,
    }
    bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// An RFC 1123 DNS label: at most 63 lower-case alphanumerics or `-`,
/// starting and ending alphanumeric.
pub fn is_dns_label(s: &str) -> bool {
    let bytes = s.as_bytes();
    let alnum = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes.first().is_some_and(alnum)
        && bytes.last().is_some_and(alnum)
        && bytes.iter().all(|b| alnum(b) || *b == b'-')
}

/// A DNS subdomain as Kubernetes checks it (`IsDNS1123Subdomain`): at most
/// 253 characters of dot-separated labels of lower-case alphanumerics and
/// `-`, each starting and ending alphanumeric. Unlike RFC 1123 the labels
/// have no length limit of their own, so node names of one long label pass.
pub fn is_dns_subdomain(s: &str) -> bool {
    let alnum = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            let bytes = label.as_bytes();
            bytes.first().is_some_and(alnum)
                && bytes.last().is_some_and(alnum)
                && bytes.iter().all(|b| alnum(b) || *b == b'-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pci_root_names_need_domain_and_bus() {
        assert!(is_pci_root("pci0000:00"));
        assert!(is_pci_root("pci10de:3a"));
        assert!(!is_pci_root("pci0000:0"));
        assert!(!is_pci_root("0000:00:02.0"));
        assert!(!is_pci_root("pcie0000:00"));
    }

    #[test]
    fn vf_representor_port_names() {
        assert!(is_vf_port_name("pf0vf3"));
        assert!(is_vf_port_name("c1pf0vf12"));
        assert!(!is_vf_port_name("p0"));
        assert!(!is_vf_port_name("pf0"));
        assert!(!is_vf_port_name("pf0sf1"));
        assert!(!is_vf_port_name("pfvf1"));
    }

    #[test]
    fn qualified_names_follow_the_api_rules() {
        assert!(check_qualified_name(PF_NAME).is_ok());
        assert!(check_qualified_name(NUMA_NODE).is_ok());
        assert!(check_qualified_name("plain").is_ok());
        assert!(check_qualified_name("Example.com/x").is_err());
        assert!(check_qualified_name("example.com/1x").is_err());
        assert!(check_qualified_name(&format!("example.com/{}", "a".repeat(33))).is_err());
        assert!(check_qualified_name(&format!("{}.com/x", "a".repeat(60))).is_err());
    }

    #[test]
    fn an_attribute_needs_exactly_one_value() {
        let both = DeviceAttribute {
            int: Some(1),
            bool: Some(true),
            ..Default::default()
        };
        assert!(check_attribute(VF_ID, &both).is_err());
        assert!(check_attribute(VF_ID, &DeviceAttribute::default()).is_err());
        assert!(check_attribute(VF_ID, &int(1)).is_ok());
    }
}
