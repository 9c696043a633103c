//! SRDP's config file: `{"resourceList": [...]}`, read the way Go's `encoding/json` reads it
//! (keys matched case-insensitively, `null` as absent), then validated strictly, with every
//! error naming its field.
//!
//! serde reads the types below through [`de`], which gives them Go's key matching and the
//! field paths; what serde cannot see (rules across fields, the keys a device type takes) is
//! checked once a value is read.

mod de;

use std::collections::BTreeMap;
use std::fmt;
use std::ops::RangeInclusive;
use std::path::Path;

use serde::de::{DeserializeSeed, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, de::Error as _};
use serde_json::Value;
use sriov_deviceplugin::AllocationPolicy;
use sriov_pci::{AddressError, PciAddress};

use crate::error::ConfigError;

/// Where SRDP reads its config by default.
pub const DEFAULT_CONFIG_FILE: &str = "/etc/pcidp/config.json";
/// The resource prefix when neither the flag nor the resource sets one.
pub const DEFAULT_RESOURCE_PREFIX: &str = "intel.com";

/// What kind of devices a resource pool holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeviceType {
    /// PCI network functions (class 0x02): VFs and PFs without VFs.
    NetDevice,
    /// PCI processing accelerators (class 0x12).
    Accelerator,
    /// Auxiliary network devices (mlx5 sub-functions).
    AuxNetDevice,
}

impl DeviceType {
    /// The name used in the config.
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceType::NetDevice => "netDevice",
            DeviceType::Accelerator => "accelerator",
            DeviceType::AuxNetDevice => "auxNetDevice",
        }
    }

    /// The PCI base class this type takes.
    pub fn pci_class(self) -> u8 {
        match self {
            DeviceType::Accelerator => 0x12,
            DeviceType::NetDevice | DeviceType::AuxNetDevice => 0x02,
        }
    }

    /// The CDI class SRDP uses for this type's pools (`<prefix>/<class>`).
    pub fn cdi_class(self) -> &'static str {
        match self {
            DeviceType::NetDevice => "net-pci",
            DeviceType::Accelerator => "net-accel",
            DeviceType::AuxNetDevice => "net-sf",
        }
    }

    fn selector_keys(self) -> &'static [&'static str] {
        match self {
            DeviceType::NetDevice => &[
                "vendors",
                "devices",
                "drivers",
                "pciAddresses",
                "acpiIndexes",
                "pfNames",
                "rootDevices",
                "linkTypes",
                "ddpProfiles",
                "pKeys",
                "isRdma",
                "needVhostNet",
                "vdpaType",
            ],
            DeviceType::Accelerator => &["vendors", "devices", "drivers", "pciAddresses"],
            DeviceType::AuxNetDevice => &[
                "vendors",
                "devices",
                "drivers",
                "pfNames",
                "rootDevices",
                "linkTypes",
                "isRdma",
                "acpiIndexes",
                "needVhostNet",
                "auxTypes",
            ],
        }
    }
}

impl fmt::Display for DeviceType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A vendor or device ID as written (`"8086"`) and its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HexId {
    /// The number.
    pub value: u16,
    /// The text from the config, for messages.
    pub raw: String,
}

/// A `pfNames` or `rootDevices` entry: a PF name or address, optionally with the VF indexes
/// taken from it (`ens785f0#0,2-7,9`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PfSelector {
    /// The PF's interface name or PCI address (compared case-insensitively).
    pub pf: String,
    /// VF index ranges, inclusive; `None` takes every function of the PF.
    pub indexes: Option<Vec<RangeInclusive<u32>>>,
    /// The entry as written.
    pub raw: String,
}

impl PfSelector {
    /// Whether VF `index` is taken by this entry.
    pub fn takes(&self, index: Option<u32>) -> bool {
        match (&self.indexes, index) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(ranges), Some(i)) => ranges.iter().any(|r| r.contains(&i)),
        }
    }
}

/// The vDPA device types SRDP knows.
pub const VDPA_TYPES: &[&str] = &["virtio", "vhost"];

/// One selector object. Within a list, values are ORed; the lists are ANDed; an empty list
/// does not filter.
///
/// `Deserialize` checks each value; [`Config::parse`] adds Go's key matching, the keys each
/// device type takes and the rules across fields.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Selectors {
    /// PCI vendor IDs.
    #[serde(deserialize_with = "hex_ids")]
    pub vendors: Vec<HexId>,
    /// PCI device IDs.
    #[serde(deserialize_with = "hex_ids")]
    pub devices: Vec<HexId>,
    /// Bound driver names.
    pub drivers: Vec<String>,
    /// PCI addresses.
    #[serde(deserialize_with = "pci_addresses")]
    pub pci_addresses: Vec<PciAddress>,
    /// ACPI indexes (`acpi_index` in sysfs).
    pub acpi_indexes: Vec<String>,
    /// PF interface names, with optional VF ranges.
    #[serde(deserialize_with = "pf_names")]
    pub pf_names: Vec<PfSelector>,
    /// PF PCI addresses, with optional VF ranges.
    #[serde(deserialize_with = "root_devices")]
    pub root_devices: Vec<PfSelector>,
    /// Link types (`ether`, `infiniband`).
    pub link_types: Vec<String>,
    /// DDP profile names.
    pub ddp_profiles: Vec<String>,
    /// InfiniBand partition keys.
    #[serde(rename = "pKeys")]
    pub pkeys: Vec<String>,
    /// Only devices with RDMA resources; adds the RDMA character devices.
    pub is_rdma: bool,
    /// Adds `/dev/vhost-net` and `/dev/net/tun` to each device.
    pub need_vhost_net: bool,
    /// Only devices with a vDPA device of this type (`virtio` or `vhost`).
    pub vdpa_type: Option<String>,
    /// Auxiliary device types (auxNetDevice only).
    pub aux_types: Vec<String>,
}

/// `additionalInfo`: PCI address (or `*`) to key/value pairs.
pub type AdditionalInfo = BTreeMap<String, BTreeMap<String, String>>;

/// One entry of `resourceList`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceConfig {
    /// Index in `resourceList`.
    pub index: usize,
    /// The name after the prefix.
    pub resource_name: String,
    /// The resource's own prefix, overriding `--resource-prefix`.
    pub resource_prefix: Option<String>,
    /// What it holds.
    pub device_type: DeviceType,
    /// Advertise no NUMA node (SRDP's `excludeTopology`): kubelet's Topology Manager then
    /// places pods without regard to where the device is.
    pub exclude_topology: bool,
    /// `allocationPolicy`: how `GetPreferredAllocation` picks this resource's devices; `None`
    /// (absent or `""`, as SRDP, which has no such field) leaves the choice to kubelet.
    pub allocation_policy: Option<AllocationPolicy>,
    /// Selector objects, tried in order.
    pub selectors: Vec<Selectors>,
    /// `additionalInfo`: per PCI address (or `*` for all) key/value pairs for the `extra`
    /// entry of the `_INFO` env; `None` when absent (SRDP then adds no `extra` key).
    pub additional_info: Option<AdditionalInfo>,
}

impl ResourceConfig {
    /// The prefix in effect: the resource's own, else `default`.
    pub fn prefix<'a>(&'a self, default: &'a str) -> &'a str {
        self.resource_prefix
            .as_deref()
            .filter(|p| !p.is_empty())
            .unwrap_or(default)
    }

    /// `<prefix>/<name>`.
    pub fn full_name(&self, default_prefix: &str) -> String {
        format!("{}/{}", self.prefix(default_prefix), self.resource_name)
    }
}

/// Something in the config that works but deserves attention (an unknown key SRDP would ignore
/// silently, a key whose case differs from the documented one, ...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigWarning {
    /// Where.
    pub field: String,
    /// What.
    pub message: String,
}

impl fmt::Display for ConfigWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// A validated config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The resources, in file order (which is the order pools claim devices in).
    pub resources: Vec<ResourceConfig>,
    /// Things worth a log line.
    pub warnings: Vec<ConfigWarning>,
    /// Resources left out because their selectors do not parse (SRDP logs
    /// and skips them); always empty from a [`Strictness::Strict`] load,
    /// which fails instead.
    pub skipped: Vec<ConfigWarning>,
}

/// How a resource with bad selectors is treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Strictness {
    /// As SRDP: the resource is skipped (see [`Config::skipped`]) and the
    /// others are served. Every other mistake (JSON, a resource name, a
    /// duplicate, a device type) still fails the load, as in SRDP.
    #[default]
    Lenient,
    /// `--strict`: any mistake fails the load.
    Strict,
}

impl Config {
    /// Reads and validates a config file. `default_prefix` is `--resource-prefix`, used for the
    /// uniqueness check.
    pub fn load(path: &Path, default_prefix: &str) -> Result<Self, ConfigError> {
        Self::load_with(path, default_prefix, Strictness::Strict)
    }

    /// [`Config::load`] with a choice of [`Strictness`].
    pub fn load_with(
        path: &Path,
        default_prefix: &str,
        strictness: Strictness,
    ) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            cause: source,
        })?;
        Self::parse_with(&text, default_prefix, strictness)
    }

    /// Validates config text; any mistake is an error.
    pub fn parse(text: &str, default_prefix: &str) -> Result<Self, ConfigError> {
        Self::parse_with(text, default_prefix, Strictness::Strict)
    }

    /// Validates config text, skipping resources whose selectors do not
    /// parse when `strictness` is [`Strictness::Lenient`].
    pub fn parse_with(
        text: &str,
        default_prefix: &str,
        strictness: Strictness,
    ) -> Result<Self, ConfigError> {
        let value: Value = serde_json::from_str(text).map_err(ConfigError::Json)?;
        let mut warnings = Vec::new();
        let top: RawConfig = de::read(&value, "", None, &[], &mut warnings)?;
        if top.resource_list.is_empty() {
            return Err(ConfigError::Empty {
                field: "resourceList".into(),
            });
        }
        let mut resources = Vec::new();
        let mut skipped = Vec::new();
        let mut first_skipped: Option<ConfigError> = None;
        let mut names: BTreeMap<String, usize> = BTreeMap::new();
        for (i, entry) in top.resource_list.iter().enumerate() {
            let field = format!("resourceList[{i}]");
            let rc = match resource(entry, i, &field, &mut warnings) {
                Ok(rc) => rc,
                Err(e)
                    if strictness == Strictness::Lenient
                        && e.field()
                            .is_some_and(|f| f.starts_with(&format!("{field}.selectors"))) =>
                {
                    skipped.push(ConfigWarning {
                        field: field.clone(),
                        message: format!("skipped: {e}"),
                    });
                    first_skipped.get_or_insert(e);
                    continue;
                }
                Err(e) => return Err(e),
            };
            let full = rc.full_name(default_prefix);
            if let Some(first) = names.get(&full) {
                return Err(ConfigError::Duplicate {
                    field: format!("{field}.resourceName"),
                    resource: full,
                    first: *first,
                });
            }
            names.insert(full, i);
            resources.push(rc);
        }
        // Nothing left to serve is a config mistake, not a quiet plugin.
        if let (true, Some(e)) = (resources.is_empty(), first_skipped) {
            return Err(e);
        }
        Ok(Config {
            resources,
            warnings,
            skipped,
        })
    }
}

/// Keys SRDP's Go structs have no JSON tag for, or that sriov-network-operator writes and Go
/// ignores; accepted without a warning.
const IGNORED_RESOURCE_KEYS: &[&str] = &["SelectorObjs", "SelectorObj"];

/// The file's top level as serde reads it. Each resource is read on its own, so that one with
/// bad selectors can be skipped ([`Strictness::Lenient`]).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawConfig {
    #[serde(default)]
    resource_list: Vec<Value>,
}

/// A `resourceList` entry as serde reads it, before [`resource`] checks it.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawResource {
    resource_name: String,
    resource_prefix: Option<String>,
    device_type: Option<String>,
    #[serde(default)]
    exclude_topology: bool,
    allocation_policy: Option<String>,
    /// Read once the device type, which decides the keys taken, is known; and after the
    /// other fields' rules, since [`Strictness::Lenient`] skips a resource for a selectors
    /// mistake only when nothing else is wrong with it.
    selectors: Option<Value>,
    /// Read after the selectors, for the same reason.
    additional_info: Option<Value>,
}

fn resource(
    value: &Value,
    index: usize,
    path: &str,
    warnings: &mut Vec<ConfigWarning>,
) -> Result<ResourceConfig, ConfigError> {
    let raw: RawResource = de::read(value, path, None, IGNORED_RESOURCE_KEYS, warnings)?;
    let name = &raw.resource_name;
    if !valid_resource_name(name) {
        return Err(invalid(
            join(path, "resourceName"),
            format!("{name:?} must match ^[a-zA-Z0-9_-]+$"),
        ));
    }
    // Kubernetes limits the name part of a qualified name to 63 characters.
    if name.len() > 63 {
        return Err(invalid(
            join(path, "resourceName"),
            format!("{name:?} is longer than 63 characters"),
        ));
    }
    if let Some(prefix) = raw.resource_prefix.as_deref().filter(|p| !p.is_empty())
        && !valid_prefix(prefix)
    {
        return Err(invalid(
            join(path, "resourcePrefix"),
            format!("{prefix:?} is not a DNS subdomain (lower-case letters, digits, '-' and '.')"),
        ));
    }
    let device_type = match raw.device_type.as_deref() {
        None | Some("") | Some("netDevice") => DeviceType::NetDevice,
        Some("accelerator") => DeviceType::Accelerator,
        Some("auxNetDevice") => DeviceType::AuxNetDevice,
        Some(other) => {
            return Err(invalid(
                join(path, "deviceType"),
                format!("unsupported {other:?} (netDevice, accelerator or auxNetDevice)"),
            ));
        }
    };
    let allocation_policy =
        crate::policy::allocation_policy(raw.allocation_policy.as_deref(), path)?;
    let selectors = selectors(
        raw.selectors.as_ref(),
        device_type,
        &join(path, "selectors"),
        warnings,
    )?;
    let info_path = join(path, "additionalInfo");
    let additional_info: Option<AdditionalInfo> = raw
        .additional_info
        .map(|v| de::read(&v, &info_path, None, &[], warnings))
        .transpose()?;
    let mut info_keys = additional_info.iter().flat_map(BTreeMap::keys);
    if let Some(bad) = info_keys.find(|k| *k != "*" && k.parse::<PciAddress>().is_err()) {
        return Err(invalid(
            format!("{info_path}.{bad}"),
            "key must be a PCI address or \"*\"",
        ));
    }
    Ok(ResourceConfig {
        index,
        resource_name: raw.resource_name,
        resource_prefix: raw.resource_prefix,
        device_type,
        exclude_topology: raw.exclude_topology,
        allocation_policy,
        selectors,
        additional_info,
    })
}

/// `selectors`: one object, or an array of them tried in order.
fn selectors(
    value: Option<&Value>,
    device_type: DeviceType,
    path: &str,
    warnings: &mut Vec<ConfigWarning>,
) -> Result<Vec<Selectors>, ConfigError> {
    let mut one = |value: &Value, path: &str| {
        let keys = Some(device_type.selector_keys());
        de::read::<Selectors>(value, path, keys, &[], warnings)?.check(device_type, path, warnings)
    };
    match value {
        None => Err(ConfigError::Missing {
            field: path.to_string(),
        }),
        Some(value @ Value::Object(_)) => Ok(vec![one(value, path)?]),
        Some(Value::Array(items)) if items.is_empty() => {
            Err(invalid(path, "needs at least one selector object"))
        }
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, v)| one(v, &format!("{path}[{i}]")))
            .collect(),
        Some(other) => Err(ConfigError::Type {
            field: path.to_string(),
            expected: "an object or an array of objects",
            found: de::found(other),
        }),
    }
}

impl Selectors {
    /// The rules `Deserialize` cannot see: across fields, and of the device type.
    fn check(
        mut self,
        device_type: DeviceType,
        path: &str,
        warnings: &mut Vec<ConfigWarning>,
    ) -> Result<Self, ConfigError> {
        self.vdpa_type = self.vdpa_type.filter(|t| !t.is_empty());
        if let Some(t) = &self.vdpa_type {
            if !VDPA_TYPES.contains(&t.as_str()) {
                return Err(invalid(
                    join(path, "vdpaType"),
                    format!("unsupported {t:?} (virtio or vhost)"),
                ));
            }
            if self.is_rdma {
                return Err(invalid(
                    join(path, "vdpaType"),
                    "isRdma and vdpaType are mutually exclusive",
                ));
            }
        }
        if device_type == DeviceType::AuxNetDevice {
            let field = join(path, "auxTypes");
            if self.aux_types.is_empty() {
                return Err(invalid(
                    field,
                    "auxNetDevice needs auxTypes (only \"sf\" is supported)",
                ));
            }
            if let Some(bad) = self.aux_types.iter().find(|t| *t != "sf") {
                return Err(invalid(
                    field,
                    format!("unsupported {bad:?} (only \"sf\" is supported)"),
                ));
            }
        }
        if self.link_types.len() > 1 {
            warnings.push(ConfigWarning {
                field: join(path, "linkTypes"),
                message: "a device has one link type; more than one value is unusual".into(),
            });
        }
        Ok(self)
    }
}

pub(crate) fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

pub(crate) fn invalid(field: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field: field.into(),
        message: message.into(),
    }
}

/// `^[a-zA-Z0-9_-]+$`, SRDP's rule for resource names.
fn valid_resource_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// A DNS subdomain, which Kubernetes requires of an extended resource's prefix.
fn valid_prefix(prefix: &str) -> bool {
    prefix.len() <= 253
        && prefix.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// Reads an array of strings, each parsed by `parse` as it is read: an error raised there is
/// placed by [`de`] at the string's own index (`vendors[1]`), not at the array.
fn each<'de, D: Deserializer<'de>, T>(
    d: D,
    parse: fn(&str) -> Result<T, String>,
) -> Result<Vec<T>, D::Error> {
    struct Item<T>(fn(&str) -> Result<T, String>);
    impl<'de, T> DeserializeSeed<'de> for Item<T> {
        type Value = T;
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<T, D::Error> {
            (self.0)(&String::deserialize(d)?).map_err(D::Error::custom)
        }
    }
    struct List<T>(fn(&str) -> Result<T, String>);
    impl<'de, T> Visitor<'de> for List<T> {
        type Value = Vec<T>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an array of strings")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
            let mut out = Vec::new();
            while let Some(item) = seq.next_element_seed(Item(self.0))? {
                out.push(item);
            }
            Ok(out)
        }
    }
    d.deserialize_seq(List(parse))
}

fn hex_ids<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<HexId>, D::Error> {
    each(d, |raw| {
        // SRDP compares these as strings against sysfs's 4 lower-case hex digits, so
        // anything else never matches there; here it is an error at load instead.
        if raw.is_empty() || raw.len() > 4 || !raw.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!(
                "{raw:?} is not a hex ID of 1 to 4 digits (like \"8086\", no 0x)"
            ));
        }
        let value = u16::from_str_radix(raw, 16).map_err(|e| e.to_string())?;
        Ok(HexId {
            value,
            raw: raw.to_string(),
        })
    })
}

fn pci_addresses<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<PciAddress>, D::Error> {
    each(d, |raw| {
        raw.parse()
            .map_err(|e: AddressError| format!("{raw:?} is not a PCI address: {}", e.reason))
    })
}

fn pf_names<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<PfSelector>, D::Error> {
    each(d, |raw| parse_pf_selector(raw, false))
}

fn root_devices<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<PfSelector>, D::Error> {
    each(d, |raw| parse_pf_selector(raw, true))
}

/// Parses `<pf>` or `<pf>#<i>,<a>-<b>,...`; `address` asks for the PF to be a PCI address.
fn parse_pf_selector(raw: &str, address: bool) -> Result<PfSelector, String> {
    let (pf, spec) = match raw.split_once('#') {
        Some((pf, spec)) => (pf, Some(spec)),
        None => (raw, None),
    };
    if spec.is_some_and(|s| s.contains('#')) {
        return Err(format!("{raw:?} has more than one '#'"));
    }
    if pf.is_empty() {
        return Err(format!("{raw:?} has no PF before '#'"));
    }
    if address && pf.parse::<PciAddress>().is_err() {
        return Err(format!("{pf:?} is not a PCI address"));
    }
    let indexes = spec
        .map(|spec| spec.split(',').map(|item| index_range(raw, item)).collect())
        .transpose()?;
    Ok(PfSelector {
        pf: pf.to_string(),
        indexes,
        raw: raw.to_string(),
    })
}

/// One item of a `#` list: `3` or `2-7`.
fn index_range(raw: &str, item: &str) -> Result<RangeInclusive<u32>, String> {
    let num = |s: &str| {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!(
                "{raw:?}: {item:?} is not an index or a range like 2-7"
            ));
        }
        s.parse::<u32>()
            .map_err(|_| format!("{raw:?}: index {s:?} is too large"))
    };
    let (a, b) = match item.split_once('-') {
        Some((a, b)) => (num(a)?, num(b)?),
        None => (num(item)?, num(item)?),
    };
    if a > b {
        return Err(format!("{raw:?}: range {item:?} ends before it starts"));
    }
    Ok(a..=b)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn pf_selector_ranges_take_listed_indexes_only() {
        let s = parse_pf_selector("ens1f0#0,2-4,9", false).unwrap();
        let taken: Vec<u32> = (0..12).filter(|i| s.takes(Some(*i))).collect();
        assert_eq!(taken, vec![0, 2, 3, 4, 9]);
        assert!(!s.takes(None), "a PF itself has no VF index");
        let all = parse_pf_selector("ens1f0", false).unwrap();
        assert!(all.takes(None) && all.takes(Some(63)));
    }

    #[test]
    fn null_is_absent_and_a_null_map_is_empty_as_in_go() {
        let cfg = Config::parse(
            r#"{"resourceList":[{"resourceName":"a","resourcePrefix":null,"deviceType":"accelerator",
                "selectors":{"vendors":null,"pfNames":["p"]},"additionalInfo":{"*":null}}]}"#,
            "intel.com",
        )
        .unwrap();
        let rc = &cfg.resources[0];
        assert_eq!(rc.resource_prefix, None);
        assert_eq!(
            rc.additional_info,
            Some(BTreeMap::from([("*".into(), BTreeMap::new())]))
        );
        // pfNames is not a key accelerator selectors take: warned about, not read.
        assert!(rc.selectors[0].pf_names.is_empty());
        assert_eq!(cfg.warnings[0].field, "resourceList[0].selectors.pfNames");
    }

    #[test]
    fn prefixes_must_be_dns_subdomains() {
        assert!(valid_prefix("intel.com"));
        assert!(valid_prefix("openshift.io"));
        assert!(!valid_prefix("Intel.com"));
        assert!(!valid_prefix("intel..com"));
        assert!(!valid_prefix("-intel.com"));
    }
}
