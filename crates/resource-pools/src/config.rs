//! SRDP's config file: `{"resourceList": [...]}`, read the way Go's `encoding/json` reads it
//! (keys matched case-insensitively, `null` as absent), then validated strictly, with every
//! error naming its field.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::RangeInclusive;
use std::path::Path;

use serde_json::{Map, Value};
use sriov_pci::PciAddress;

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
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selectors {
    /// PCI vendor IDs.
    pub vendors: Vec<HexId>,
    /// PCI device IDs.
    pub devices: Vec<HexId>,
    /// Bound driver names.
    pub drivers: Vec<String>,
    /// PCI addresses.
    pub pci_addresses: Vec<PciAddress>,
    /// ACPI indexes (`acpi_index` in sysfs).
    pub acpi_indexes: Vec<String>,
    /// PF interface names, with optional VF ranges.
    pub pf_names: Vec<PfSelector>,
    /// PF PCI addresses, with optional VF ranges.
    pub root_devices: Vec<PfSelector>,
    /// Link types (`ether`, `infiniband`).
    pub link_types: Vec<String>,
    /// DDP profile names.
    pub ddp_profiles: Vec<String>,
    /// InfiniBand partition keys.
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
    /// Advertise no NUMA node.
    pub exclude_topology: bool,
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
            source,
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
        let top = as_object(&value, "config")?;
        let top = fold_keys(top, &["resourceList"], &[], "", &mut warnings)?;
        let list = match top.get("resourceList") {
            None | Some(Value::Null) => {
                return Err(ConfigError::Empty {
                    field: "resourceList".into(),
                });
            }
            Some(v) => as_array(v, "resourceList")?,
        };
        if list.is_empty() {
            return Err(ConfigError::Empty {
                field: "resourceList".into(),
            });
        }
        let mut resources = Vec::new();
        let mut skipped = Vec::new();
        let mut first_skipped: Option<ConfigError> = None;
        let mut names: BTreeMap<String, usize> = BTreeMap::new();
        for (i, entry) in list.iter().enumerate() {
            let field = format!("resourceList[{i}]");
            let rc = match parse_resource(entry, i, &field, &mut warnings) {
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

/// Renames keys to their documented spelling the way Go's decoder matches them: an exact match
/// first, else a case-insensitive one. Unknown keys are dropped with a warning. Two keys
/// landing on the same field (`drivers` and `Drivers`) are refused: Go keeps the later one,
/// but which one was later is lost once the object is parsed, and such a config is a mistake.
fn fold_keys(
    obj: &Map<String, Value>,
    known: &[&str],
    ignored: &[&str],
    path: &str,
    warnings: &mut Vec<ConfigWarning>,
) -> Result<BTreeMap<String, Value>, ConfigError> {
    let mut out = BTreeMap::new();
    let mut origin: BTreeMap<&str, String> = BTreeMap::new();
    for (key, value) in obj {
        let at = join(path, key);
        if ignored.iter().any(|k| k.eq_ignore_ascii_case(key)) {
            continue;
        }
        let canonical = known
            .iter()
            .find(|k| **k == key)
            .or_else(|| known.iter().find(|k| k.eq_ignore_ascii_case(key)));
        let Some(canonical) = canonical else {
            warnings.push(ConfigWarning {
                field: at,
                message: format!("unknown key, ignored (known here: {})", known.join(", ")),
            });
            continue;
        };
        if let Some(previous) = origin.get(canonical) {
            return Err(invalid(
                at,
                format!("{canonical:?} is given twice (also as {previous:?}); keep one"),
            ));
        }
        origin.insert(canonical, key.clone());
        out.insert((*canonical).to_string(), value.clone());
    }
    Ok(out)
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn type_name(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => format!("boolean {b}"),
        Value::Number(n) => format!("number {n}"),
        Value::String(s) => format!("string {s:?}"),
        Value::Array(_) => "an array".into(),
        Value::Object(_) => "an object".into(),
    }
}

fn as_object<'a>(v: &'a Value, field: &str) -> Result<&'a Map<String, Value>, ConfigError> {
    v.as_object().ok_or_else(|| ConfigError::Type {
        field: field.to_string(),
        expected: "an object",
        found: type_name(v),
    })
}

fn as_array<'a>(v: &'a Value, field: &str) -> Result<&'a Vec<Value>, ConfigError> {
    v.as_array().ok_or_else(|| ConfigError::Type {
        field: field.to_string(),
        expected: "an array",
        found: type_name(v),
    })
}

fn opt_string(
    obj: &BTreeMap<String, Value>,
    key: &str,
    path: &str,
) -> Result<Option<String>, ConfigError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(v) => Err(ConfigError::Type {
            field: join(path, key),
            expected: "a string",
            found: type_name(v),
        }),
    }
}

fn opt_bool(obj: &BTreeMap<String, Value>, key: &str, path: &str) -> Result<bool, ConfigError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(v) => Err(ConfigError::Type {
            field: join(path, key),
            expected: "a boolean",
            found: type_name(v),
        }),
    }
}

fn string_list(
    obj: &BTreeMap<String, Value>,
    key: &str,
    path: &str,
) -> Result<Vec<(String, String)>, ConfigError> {
    let field = join(path, key);
    let items = match obj.get(key) {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(v) => as_array(v, &field)?,
    };
    items
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let at = format!("{field}[{i}]");
            match v {
                Value::String(s) => Ok((at, s.clone())),
                other => Err(ConfigError::Type {
                    field: at,
                    expected: "a string",
                    found: type_name(other),
                }),
            }
        })
        .collect()
}

fn invalid(field: impl Into<String>, message: impl Into<String>) -> ConfigError {
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

fn parse_resource(
    entry: &Value,
    index: usize,
    path: &str,
    warnings: &mut Vec<ConfigWarning>,
) -> Result<ResourceConfig, ConfigError> {
    let obj = as_object(entry, path)?;
    let obj = fold_keys(
        obj,
        &[
            "resourceName",
            "resourcePrefix",
            "deviceType",
            "excludeTopology",
            "selectors",
            "additionalInfo",
        ],
        IGNORED_RESOURCE_KEYS,
        path,
        warnings,
    )?;
    let name_field = join(path, "resourceName");
    let resource_name = opt_string(&obj, "resourceName", path)?.ok_or(ConfigError::Missing {
        field: name_field.clone(),
    })?;
    if !valid_resource_name(&resource_name) {
        return Err(invalid(
            name_field,
            format!("{resource_name:?} must match ^[a-zA-Z0-9_-]+$"),
        ));
    }
    // Kubernetes limits the name part of a qualified name to 63 characters.
    if resource_name.len() > 63 {
        return Err(invalid(
            name_field,
            format!("{resource_name:?} is longer than 63 characters"),
        ));
    }
    let resource_prefix = opt_string(&obj, "resourcePrefix", path)?;
    if let Some(prefix) = resource_prefix.as_deref().filter(|p| !p.is_empty())
        && !valid_prefix(prefix)
    {
        return Err(invalid(
            join(path, "resourcePrefix"),
            format!("{prefix:?} is not a DNS subdomain (lower-case letters, digits, '-' and '.')"),
        ));
    }
    let device_type = match opt_string(&obj, "deviceType", path)?.as_deref() {
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
    let exclude_topology = opt_bool(&obj, "excludeTopology", path)?;
    let sel_field = join(path, "selectors");
    let selectors = match obj.get("selectors") {
        None | Some(Value::Null) => return Err(ConfigError::Missing { field: sel_field }),
        Some(Value::Object(o)) => vec![parse_selectors(o, device_type, &sel_field, warnings)?],
        Some(Value::Array(items)) => {
            if items.is_empty() {
                return Err(invalid(sel_field, "needs at least one selector object"));
            }
            items
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    let at = format!("{sel_field}[{i}]");
                    parse_selectors(as_object(v, &at)?, device_type, &at, warnings)
                })
                .collect::<Result<Vec<_>, _>>()?
        }
        Some(v) => {
            return Err(ConfigError::Type {
                field: sel_field,
                expected: "an object or an array of objects",
                found: type_name(v),
            });
        }
    };
    let additional_info = parse_additional_info(&obj, path)?;
    Ok(ResourceConfig {
        index,
        resource_name,
        resource_prefix,
        device_type,
        exclude_topology,
        selectors,
        additional_info,
    })
}

fn parse_additional_info(
    obj: &BTreeMap<String, Value>,
    path: &str,
) -> Result<Option<AdditionalInfo>, ConfigError> {
    let field = join(path, "additionalInfo");
    let map = match obj.get("additionalInfo") {
        None | Some(Value::Null) => return Ok(None),
        Some(v) => as_object(v, &field)?,
    };
    let mut out = BTreeMap::new();
    for (device, infos) in map {
        let at = format!("{field}.{device}");
        if device != "*" && device.parse::<PciAddress>().is_err() {
            return Err(invalid(at, "key must be a PCI address or \"*\""));
        }
        let mut kv = BTreeMap::new();
        if !infos.is_null() {
            for (k, v) in as_object(infos, &at)? {
                match v {
                    Value::String(s) => {
                        kv.insert(k.clone(), s.clone());
                    }
                    other => {
                        return Err(ConfigError::Type {
                            field: format!("{at}.{k}"),
                            expected: "a string",
                            found: type_name(other),
                        });
                    }
                }
            }
        }
        out.insert(device.clone(), kv);
    }
    Ok(Some(out))
}

fn parse_hex_ids(
    obj: &BTreeMap<String, Value>,
    key: &str,
    path: &str,
) -> Result<Vec<HexId>, ConfigError> {
    string_list(obj, key, path)?
        .into_iter()
        .map(|(at, raw)| {
            // SRDP compares these as strings against sysfs's 4 lower-case hex digits, so
            // anything else never matches there; here it is an error at load instead.
            if raw.is_empty() || raw.len() > 4 || !raw.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(invalid(
                    at,
                    format!("{raw:?} is not a hex ID of 1 to 4 digits (like \"8086\", no 0x)"),
                ));
            }
            let value = u16::from_str_radix(&raw, 16).map_err(|e| invalid(&at, e.to_string()))?;
            Ok(HexId { value, raw })
        })
        .collect()
}

fn parse_pf_selectors(
    obj: &BTreeMap<String, Value>,
    key: &str,
    path: &str,
    addresses: bool,
) -> Result<Vec<PfSelector>, ConfigError> {
    string_list(obj, key, path)?
        .into_iter()
        .map(|(at, raw)| parse_pf_selector(&at, &raw, addresses))
        .collect()
}

/// Parses `<pf>` or `<pf>#<i>,<a>-<b>,...`.
pub(crate) fn parse_pf_selector(
    at: &str,
    raw: &str,
    address: bool,
) -> Result<PfSelector, ConfigError> {
    let mut parts = raw.split('#');
    let pf = parts.next().unwrap_or_default().to_string();
    let ranges = parts.next();
    if parts.next().is_some() {
        return Err(invalid(at, format!("{raw:?} has more than one '#'")));
    }
    if pf.is_empty() {
        return Err(invalid(at, format!("{raw:?} has no PF before '#'")));
    }
    if address && pf.parse::<PciAddress>().is_err() {
        return Err(invalid(at, format!("{pf:?} is not a PCI address")));
    }
    let indexes = match ranges {
        None => None,
        Some(spec) => {
            let mut out = Vec::new();
            for item in spec.split(',') {
                let num = |s: &str| -> Result<u32, ConfigError> {
                    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
                        return Err(invalid(
                            at,
                            format!("{raw:?}: {item:?} is not an index or a range like 2-7"),
                        ));
                    }
                    s.parse()
                        .map_err(|_| invalid(at, format!("{raw:?}: index {s:?} is too large")))
                };
                let range = match item.split_once('-') {
                    Some((a, b)) => {
                        let (a, b) = (num(a)?, num(b)?);
                        if a > b {
                            return Err(invalid(
                                at,
                                format!("{raw:?}: range {item:?} ends before it starts"),
                            ));
                        }
                        a..=b
                    }
                    None => {
                        let n = num(item)?;
                        n..=n
                    }
                };
                out.push(range);
            }
            Some(out)
        }
    };
    Ok(PfSelector {
        pf,
        indexes,
        raw: raw.to_string(),
    })
}

fn parse_selectors(
    obj: &Map<String, Value>,
    device_type: DeviceType,
    path: &str,
    warnings: &mut Vec<ConfigWarning>,
) -> Result<Selectors, ConfigError> {
    let obj = fold_keys(obj, device_type.selector_keys(), &[], path, warnings)?;
    let strings = |key: &str| -> Result<Vec<String>, ConfigError> {
        Ok(string_list(&obj, key, path)?
            .into_iter()
            .map(|(_, s)| s)
            .collect())
    };
    let pci_addresses = string_list(&obj, "pciAddresses", path)?
        .into_iter()
        .map(|(at, raw)| {
            raw.parse::<PciAddress>()
                .map_err(|e| invalid(at, format!("{raw:?} is not a PCI address: {}", e.reason)))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let vdpa_type = opt_string(&obj, "vdpaType", path)?.filter(|s| !s.is_empty());
    if let Some(t) = &vdpa_type
        && !VDPA_TYPES.contains(&t.as_str())
    {
        return Err(invalid(
            join(path, "vdpaType"),
            format!("unsupported {t:?} (virtio or vhost)"),
        ));
    }
    let is_rdma = opt_bool(&obj, "isRdma", path)?;
    if is_rdma && vdpa_type.is_some() {
        return Err(invalid(
            join(path, "vdpaType"),
            "isRdma and vdpaType are mutually exclusive",
        ));
    }
    let aux_types = strings("auxTypes")?;
    if device_type == DeviceType::AuxNetDevice {
        let field = join(path, "auxTypes");
        if aux_types.is_empty() {
            return Err(invalid(
                field,
                "auxNetDevice needs auxTypes (only \"sf\" is supported)",
            ));
        }
        if let Some(bad) = aux_types.iter().find(|t| *t != "sf") {
            return Err(invalid(
                field,
                format!("unsupported {bad:?} (only \"sf\" is supported)"),
            ));
        }
    }
    let link_types = strings("linkTypes")?;
    if link_types.len() > 1 {
        warnings.push(ConfigWarning {
            field: join(path, "linkTypes"),
            message: "a device has one link type; more than one value is unusual".into(),
        });
    }
    Ok(Selectors {
        vendors: parse_hex_ids(&obj, "vendors", path)?,
        devices: parse_hex_ids(&obj, "devices", path)?,
        drivers: strings("drivers")?,
        pci_addresses,
        acpi_indexes: strings("acpiIndexes")?,
        pf_names: parse_pf_selectors(&obj, "pfNames", path, false)?,
        root_devices: parse_pf_selectors(&obj, "rootDevices", path, true)?,
        link_types,
        ddp_profiles: strings("ddpProfiles")?,
        pkeys: strings("pKeys")?,
        is_rdma,
        need_vhost_net: opt_bool(&obj, "needVhostNet", path)?,
        vdpa_type,
        aux_types,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn pf_selector_ranges_take_listed_indexes_only() {
        let s = parse_pf_selector("f", "ens1f0#0,2-4,9", false).unwrap();
        let taken: Vec<u32> = (0..12).filter(|i| s.takes(Some(*i))).collect();
        assert_eq!(taken, vec![0, 2, 3, 4, 9]);
        assert!(!s.takes(None), "a PF itself has no VF index");
        let all = parse_pf_selector("f", "ens1f0", false).unwrap();
        assert!(all.takes(None) && all.takes(Some(63)));
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
