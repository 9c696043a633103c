//! The opaque device configuration dra-driver-sriov defines, `VfConfig`
//! (`sriovnetwork.k8snetworkplumbingwg.io/v1alpha1`), read strictly, and the
//! effective configuration of one allocated device.
//!
//! A claim's allocation carries every configuration that may apply: the
//! DeviceClass's (`FromClass`) and the claim's own (`FromClaim`), each for
//! some requests (none listed = all) and for one driver. Only ours count;
//! class entries apply first, then claim entries, each in order, and a later
//! entry's non-empty fields replace earlier ones, as dra-driver-sriov's
//! `Override` does.
//!
//! Two deliberate differences from dra-driver-sriov (v1alpha1 at its
//! current HEAD): an entry with no `requests` applies to every request, as
//! the resource.k8s.io API documents (dra-driver-sriov skips it); and
//! `netAttachDefNamespace` and `addVhostMount` are overridden like the other
//! fields (its `Override` forgets them, so a claim could not set them when
//! its class has a config).
//!
//! ```
//! use sriov_dra::vfconfig::VfConfig;
//!
//! let config = VfConfig::from_json(&serde_json::json!({
//!     "apiVersion": "sriovnetwork.k8snetworkplumbingwg.io/v1alpha1",
//!     "kind": "VfConfig",
//!     "driver": "vfio-pci",
//! }))?;
//! assert_eq!(config.wanted_driver(), Some("vfio-pci"));
//!
//! let err = VfConfig::from_json(&serde_json::json!({
//!     "apiVersion": "sriovnetwork.k8snetworkplumbingwg.io/v1alpha1",
//!     "kind": "VfConfig",
//!     "ifname": "net1",
//! })).unwrap_err();
//! assert!(err.to_string().contains("ifname"));
//! # Ok::<(), sriov_dra::vfconfig::VfConfigError>(())
//! ```

use k8s_openapi::api::resource::v1::DeviceAllocationConfiguration;

use crate::attributes::{is_dns_label, is_dns_subdomain};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The `apiVersion` of a `VfConfig`.
pub const API_VERSION: &str = "sriovnetwork.k8snetworkplumbingwg.io/v1alpha1";
/// The `kind` of a `VfConfig`.
pub const KIND: &str = "VfConfig";
/// `driver` value that leaves the VF with its kernel driver (as does "").
pub const DEFAULT_DRIVER: &str = "default";
/// The driver that hands a VF to user space.
pub const VFIO_PCI: &str = "vfio-pci";
/// Longest driver name accepted (the kernel's module names are far shorter).
pub const MAX_DRIVER_LEN: usize = 64;
/// Longest interface name Linux accepts (`IFNAMSIZ` - 1).
pub const MAX_IFNAME_LEN: usize = 15;
/// `source` of a DeviceClass's configuration.
pub const SOURCE_CLASS: &str = "FromClass";
/// `source` of the claim's own configuration.
pub const SOURCE_CLAIM: &str = "FromClaim";

/// The fields a `VfConfig` may have; anything else is refused, as the Go
/// driver's strict decoder does.
const FIELDS: &[&str] = &[
    "apiVersion",
    "kind",
    "driver",
    "ifName",
    "netAttachDefName",
    "netAttachDefNamespace",
    "addVhostMount",
];

/// A VF's configuration: checked, so every field holds what its doc says.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VfConfig {
    /// `""` or [`DEFAULT_DRIVER`] (keep the kernel driver), [`VFIO_PCI`], or
    /// another driver's name.
    pub driver: String,
    /// The interface name in the pod (empty: the CNI's choice).
    pub if_name: String,
    /// The NetworkAttachmentDefinition's name (a DNS-1123 subdomain, or empty).
    pub net_attach_def_name: String,
    /// Its namespace (a DNS-1123 label, or empty: the claim's).
    pub net_attach_def_namespace: String,
    /// Give the container `/dev/vhost-net` (and `/dev/net/tun`).
    pub add_vhost_mount: bool,
}

/// Why a configuration is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VfConfigError {
    /// The parameters are not a JSON object.
    #[error("VfConfig parameters must be a JSON object, found {found}")]
    NotAnObject {
        /// The JSON type found.
        found: &'static str,
    },
    /// A field the API does not define (names are case-sensitive).
    #[error("VfConfig has unknown field {field:?}; known fields: {FIELDS:?}")]
    UnknownField {
        /// The field.
        field: String,
    },
    /// A field of the wrong JSON type.
    #[error("VfConfig field {field} must be a {expected}, found {found}")]
    WrongType {
        /// The field.
        field: &'static str,
        /// The type it must have.
        expected: &'static str,
        /// The JSON type found.
        found: &'static str,
    },
    /// `apiVersion` or `kind` is missing.
    #[error("VfConfig field {field} is required")]
    Missing {
        /// The field.
        field: &'static str,
    },
    /// `apiVersion` is not [`API_VERSION`].
    #[error("VfConfig apiVersion {found:?} is not {API_VERSION:?}")]
    WrongApiVersion {
        /// What was given.
        found: String,
    },
    /// `kind` is not [`KIND`].
    #[error("VfConfig kind {found:?} is not {KIND:?}")]
    WrongKind {
        /// What was given.
        found: String,
    },
    /// A field's value breaks its rule.
    #[error("VfConfig field {field} value {value:?} is invalid: {rule}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// The value (cut to a bounded length).
        value: String,
        /// The rule it breaks.
        rule: &'static str,
    },
    /// A configuration entry's `source` is neither `FromClass` nor `FromClaim`.
    #[error(
        "allocation config #{index}: source {source_name:?} is not {SOURCE_CLASS} or {SOURCE_CLAIM}"
    )]
    Source {
        /// Its position in `status.allocation.devices.config`.
        index: usize,
        /// What was given.
        source_name: String,
    },
    /// A configuration entry with no opaque part: a newer API than ours, so
    /// it cannot be known whether it is meant for this driver.
    #[error(
        "allocation config #{index} has no opaque configuration; only opaque parameters are supported"
    )]
    NotOpaque {
        /// Its position in `status.allocation.devices.config`.
        index: usize,
    },
    /// A configuration entry for this driver whose parameters are refused.
    #[error("allocation config #{index} ({source_name}): {cause}")]
    Entry {
        /// Its position in `status.allocation.devices.config`.
        index: usize,
        /// `FromClass` or `FromClaim`.
        source_name: String,
        /// Why.
        cause: Box<VfConfigError>,
    },
}

impl VfConfig {
    /// Reads and checks one `VfConfig` from an opaque configuration's
    /// parameters.
    pub fn from_json(value: &Value) -> Result<Self, VfConfigError> {
        let Value::Object(map) = value else {
            return Err(VfConfigError::NotAnObject {
                found: json_type(value),
            });
        };
        if let Some(field) = map.keys().find(|k| !FIELDS.contains(&k.as_str())) {
            return Err(VfConfigError::UnknownField {
                field: bounded(field),
            });
        }
        let api_version = string_field(map, "apiVersion")?.ok_or(VfConfigError::Missing {
            field: "apiVersion",
        })?;
        if api_version != API_VERSION {
            return Err(VfConfigError::WrongApiVersion {
                found: bounded(&api_version),
            });
        }
        let kind = string_field(map, "kind")?.ok_or(VfConfigError::Missing { field: "kind" })?;
        if kind != KIND {
            return Err(VfConfigError::WrongKind {
                found: bounded(&kind),
            });
        }
        let config = Self {
            driver: string_field(map, "driver")?.unwrap_or_default(),
            if_name: string_field(map, "ifName")?.unwrap_or_default(),
            net_attach_def_name: string_field(map, "netAttachDefName")?.unwrap_or_default(),
            net_attach_def_namespace: string_field(map, "netAttachDefNamespace")?
                .unwrap_or_default(),
            add_vhost_mount: bool_field(map, "addVhostMount")?.unwrap_or(false),
        };
        config.validate()?;
        Ok(config)
    }

    /// Checks every field against its rule.
    pub fn validate(&self) -> Result<(), VfConfigError> {
        check_driver(&self.driver)?;
        if !self.if_name.is_empty() {
            check_if_name(&self.if_name)?;
        }
        if !self.net_attach_def_name.is_empty() {
            check_dns_subdomain("netAttachDefName", &self.net_attach_def_name)?;
        }
        if !self.net_attach_def_namespace.is_empty() {
            check_dns_label("netAttachDefNamespace", &self.net_attach_def_namespace)?;
        }
        Ok(())
    }

    /// The driver the VF must be bound to; `None` to leave it as it is.
    pub fn wanted_driver(&self) -> Option<&str> {
        match self.driver.as_str() {
            "" | DEFAULT_DRIVER => None,
            other => Some(other),
        }
    }

    /// Replaces this configuration's fields with `other`'s non-empty ones.
    pub fn override_with(&mut self, other: &VfConfig) {
        let replace = |mine: &mut String, theirs: &String| {
            if !theirs.is_empty() {
                mine.clone_from(theirs);
            }
        };
        replace(&mut self.driver, &other.driver);
        replace(&mut self.if_name, &other.if_name);
        replace(&mut self.net_attach_def_name, &other.net_attach_def_name);
        replace(
            &mut self.net_attach_def_namespace,
            &other.net_attach_def_namespace,
        );
        // `false` is the Go type's empty value, so it never overrides.
        self.add_vhost_mount |= other.add_vhost_mount;
    }
}

/// Whether a configuration listing `requests` applies to the allocation
/// result of `request` (`<request>` or `<request>/<subrequest>`): an empty
/// list applies to all; a main request's name covers its subrequests.
pub fn applies_to(requests: &[String], request: &str) -> bool {
    requests.is_empty()
        || requests.iter().any(|r| {
            r == request
                || request
                    .strip_prefix(r.as_str())
                    .is_some_and(|rest| rest.starts_with('/'))
        })
}

/// The effective `VfConfig` of the device allocated for `request`, from a
/// claim's `status.allocation.devices.config`: our driver's entries only,
/// class entries before claim entries, later non-empty fields winning.
/// Every entry for our driver is checked, whichever request it names, so a
/// bad configuration fails the claim rather than waiting for a request that
/// uses it.
pub fn resolve(
    driver_name: &str,
    configs: &[DeviceAllocationConfiguration],
    request: &str,
) -> Result<VfConfig, VfConfigError> {
    let mut class = Vec::new();
    let mut claim = Vec::new();
    for (index, entry) in configs.iter().enumerate() {
        match entry.source.as_str() {
            SOURCE_CLASS => class.push((index, entry)),
            SOURCE_CLAIM => claim.push((index, entry)),
            other => {
                return Err(VfConfigError::Source {
                    index,
                    source_name: bounded(other),
                });
            }
        }
    }
    let mut effective = VfConfig::default();
    for (index, entry) in class.into_iter().chain(claim) {
        let Some(opaque) = &entry.opaque else {
            return Err(VfConfigError::NotOpaque { index });
        };
        // A request may be satisfiable by several drivers, so configs for
        // others are expected here: they are theirs to read.
        if opaque.driver != driver_name {
            continue;
        }
        let parsed =
            VfConfig::from_json(&opaque.parameters.0).map_err(|cause| VfConfigError::Entry {
                index,
                source_name: entry.source.clone(),
                cause: Box::new(cause),
            })?;
        if applies_to(entry.requests.as_deref().unwrap_or_default(), request) {
            effective.override_with(&parsed);
        }
    }
    Ok(effective)
}

fn string_field(
    map: &serde_json::Map<String, Value>,
    field: &'static str,
) -> Result<Option<String>, VfConfigError> {
    match map.get(field) {
        // Go's decoder leaves a field at its zero value for `null`.
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(VfConfigError::WrongType {
            field,
            expected: "string",
            found: json_type(other),
        }),
    }
}

fn bool_field(
    map: &serde_json::Map<String, Value>,
    field: &'static str,
) -> Result<Option<bool>, VfConfigError> {
    match map.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(other) => Err(VfConfigError::WrongType {
            field,
            expected: "boolean",
            found: json_type(other),
        }),
    }
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// A value for an error message: hostile input must not make the log line
/// arbitrarily long.
fn bounded(s: &str) -> String {
    const MAX: usize = 256;
    match s.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}...", s.get(..cut).unwrap_or_default()),
        None => s.to_string(),
    }
}

fn invalid(field: &'static str, value: &str, rule: &'static str) -> VfConfigError {
    VfConfigError::Invalid {
        field,
        value: bounded(value),
        rule,
    }
}

fn check_driver(driver: &str) -> Result<(), VfConfigError> {
    if driver.len() > MAX_DRIVER_LEN {
        return Err(invalid("driver", driver, "at most 64 characters"));
    }
    // The name becomes a sysfs path component (`drivers/<name>`), so only
    // the characters kernel module names use are let through.
    if !driver
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
    {
        return Err(invalid(
            "driver",
            driver,
            "only lower-case letters, digits, '_' and '-'",
        ));
    }
    Ok(())
}

fn check_if_name(name: &str) -> Result<(), VfConfigError> {
    // The kernel's dev_valid_name().
    if name.len() > MAX_IFNAME_LEN {
        return Err(invalid("ifName", name, "at most 15 bytes (IFNAMSIZ - 1)"));
    }
    if name == "." || name == ".." {
        return Err(invalid("ifName", name, "must not be \".\" or \"..\""));
    }
    if name
        .chars()
        .any(|c| c == '/' || c == ':' || c.is_whitespace() || c == '\0')
    {
        return Err(invalid(
            "ifName",
            name,
            "no '/', ':', whitespace or NUL (the kernel's dev_valid_name)",
        ));
    }
    Ok(())
}

fn check_dns_label(field: &'static str, value: &str) -> Result<(), VfConfigError> {
    if is_dns_label(value) {
        Ok(())
    } else {
        Err(invalid(
            field,
            value,
            "a DNS-1123 label: at most 63 of [a-z0-9-], starting and ending alphanumeric",
        ))
    }
}

fn check_dns_subdomain(field: &'static str, value: &str) -> Result<(), VfConfigError> {
    if is_dns_subdomain(value) {
        Ok(())
    } else {
        Err(invalid(
            field,
            value,
            "a DNS-1123 subdomain: at most 253 characters of dot-separated [a-z0-9-] labels, each starting and ending alphanumeric",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::resource::v1::OpaqueDeviceConfiguration;
    use k8s_openapi::apimachinery::pkg::runtime::RawExtension;
    use serde_json::json;

    const DRIVER: &str = crate::DEFAULT_DRIVER_NAME;

    fn params(extra: Value) -> Value {
        let mut v = json!({"apiVersion": API_VERSION, "kind": KIND});
        if let (Value::Object(base), Value::Object(more)) = (&mut v, extra) {
            base.extend(more);
        }
        v
    }

    fn entry(
        source: &str,
        driver: &str,
        requests: &[&str],
        p: Value,
    ) -> DeviceAllocationConfiguration {
        DeviceAllocationConfiguration {
            source: source.into(),
            requests: (!requests.is_empty())
                .then(|| requests.iter().map(|r| r.to_string()).collect()),
            opaque: Some(OpaqueDeviceConfiguration {
                driver: driver.into(),
                parameters: RawExtension(p),
            }),
        }
    }

    #[test]
    fn a_full_config_is_read() {
        let c = VfConfig::from_json(&params(json!({
            "driver": "vfio-pci",
            "ifName": "net1",
            "netAttachDefName": "sriov.net-a",
            "netAttachDefNamespace": "team-a",
            "addVhostMount": true,
        })))
        .unwrap();
        assert_eq!(
            c,
            VfConfig {
                driver: "vfio-pci".into(),
                if_name: "net1".into(),
                net_attach_def_name: "sriov.net-a".into(),
                net_attach_def_namespace: "team-a".into(),
                add_vhost_mount: true,
            }
        );
        assert_eq!(c.wanted_driver(), Some("vfio-pci"));
    }

    #[test]
    fn default_and_empty_driver_keep_the_kernel_driver() {
        for d in ["", "default"] {
            let c = VfConfig::from_json(&params(json!({"driver": d}))).unwrap();
            assert_eq!(c.wanted_driver(), None, "{d:?}");
        }
        let c = VfConfig::from_json(&params(json!({"driver": "igb_uio"}))).unwrap();
        assert_eq!(c.wanted_driver(), Some("igb_uio"));
    }

    #[test]
    fn unknown_fields_are_refused_by_name_even_in_another_case() {
        for field in ["ifname", "Driver", "extra"] {
            let err = VfConfig::from_json(&params(json!({field: "x"}))).unwrap_err();
            assert_eq!(
                err,
                VfConfigError::UnknownField {
                    field: field.into()
                }
            );
            assert!(err.to_string().contains(field));
        }
    }

    #[test]
    fn wrong_kind_version_type_or_shape_is_refused() {
        let err = VfConfig::from_json(&json!({"apiVersion": API_VERSION, "kind": "GpuConfig"}))
            .unwrap_err();
        assert_eq!(
            err,
            VfConfigError::WrongKind {
                found: "GpuConfig".into()
            }
        );
        let err = VfConfig::from_json(&json!({"apiVersion": "gpu.example.com/v1", "kind": KIND}))
            .unwrap_err();
        assert!(matches!(err, VfConfigError::WrongApiVersion { .. }));
        let err = VfConfig::from_json(&json!({"kind": KIND})).unwrap_err();
        assert_eq!(
            err,
            VfConfigError::Missing {
                field: "apiVersion"
            }
        );
        let err = VfConfig::from_json(&params(json!({"addVhostMount": "yes"}))).unwrap_err();
        assert_eq!(
            err,
            VfConfigError::WrongType {
                field: "addVhostMount",
                expected: "boolean",
                found: "string"
            }
        );
        let err = VfConfig::from_json(&json!(["VfConfig"])).unwrap_err();
        assert_eq!(err, VfConfigError::NotAnObject { found: "array" });
    }

    #[test]
    fn bad_interface_names_are_refused() {
        for bad in [
            "a-name-of-16-chr",
            ".",
            "..",
            "a/b",
            "a b",
            "eth0:1",
            "tab\there",
        ] {
            let err = VfConfig::from_json(&params(json!({"ifName": bad}))).unwrap_err();
            assert!(
                matches!(
                    err,
                    VfConfigError::Invalid {
                        field: "ifName",
                        ..
                    }
                ),
                "{bad:?}: {err:?}"
            );
        }
        for good in ["net1", "a-name-of-15-ch", "..."] {
            VfConfig::from_json(&params(json!({"ifName": good}))).unwrap();
        }
    }

    #[test]
    fn bad_drivers_and_names_are_refused() {
        let long = "a".repeat(65);
        for bad in ["VFIO", "../vfio", "vfio pci", long.as_str()] {
            let err = VfConfig::from_json(&params(json!({"driver": bad}))).unwrap_err();
            assert!(
                matches!(
                    err,
                    VfConfigError::Invalid {
                        field: "driver",
                        ..
                    }
                ),
                "{bad:?}"
            );
        }
        let err = VfConfig::from_json(&params(json!({"netAttachDefName": "Net_A"}))).unwrap_err();
        assert!(matches!(
            err,
            VfConfigError::Invalid {
                field: "netAttachDefName",
                ..
            }
        ));
        let err =
            VfConfig::from_json(&params(json!({"netAttachDefNamespace": "a.b"}))).unwrap_err();
        assert!(matches!(
            err,
            VfConfigError::Invalid {
                field: "netAttachDefNamespace",
                ..
            }
        ));
        let err = VfConfig::from_json(&params(json!({"netAttachDefNamespace": "-a"}))).unwrap_err();
        assert!(matches!(err, VfConfigError::Invalid { .. }));
    }

    #[test]
    fn claim_configs_override_class_configs_whatever_their_order() {
        let configs = [
            entry(
                SOURCE_CLAIM,
                DRIVER,
                &[],
                params(json!({"ifName": "claim0", "netAttachDefNamespace": "ns-claim"})),
            ),
            entry(
                SOURCE_CLASS,
                DRIVER,
                &[],
                params(
                    json!({"driver": "vfio-pci", "ifName": "class0", "netAttachDefName": "net-class"}),
                ),
            ),
            entry(
                SOURCE_CLAIM,
                DRIVER,
                &[],
                params(json!({"ifName": "claim1"})),
            ),
        ];
        let c = resolve(DRIVER, &configs, "vf").unwrap();
        assert_eq!(c.driver, "vfio-pci", "a class field no claim sets stays");
        assert_eq!(c.net_attach_def_name, "net-class");
        assert_eq!(c.if_name, "claim1", "the later claim entry wins");
        assert_eq!(c.net_attach_def_namespace, "ns-claim");
    }

    #[test]
    fn configs_apply_to_their_requests_and_subrequests_only() {
        let configs = [
            entry(
                SOURCE_CLAIM,
                DRIVER,
                &["a"],
                params(json!({"ifName": "net-a"})),
            ),
            entry(
                SOURCE_CLAIM,
                DRIVER,
                &["b/fast"],
                params(json!({"ifName": "net-b-fast"})),
            ),
            entry(
                SOURCE_CLAIM,
                DRIVER,
                &["ab"],
                params(json!({"ifName": "net-ab"})),
            ),
        ];
        assert_eq!(resolve(DRIVER, &configs, "a").unwrap().if_name, "net-a");
        assert_eq!(resolve(DRIVER, &configs, "a/x").unwrap().if_name, "net-a");
        assert_eq!(
            resolve(DRIVER, &configs, "b/fast").unwrap().if_name,
            "net-b-fast"
        );
        assert_eq!(resolve(DRIVER, &configs, "b/slow").unwrap().if_name, "");
        assert_eq!(resolve(DRIVER, &configs, "ab").unwrap().if_name, "net-ab");
        assert_eq!(resolve(DRIVER, &configs, "c").unwrap(), VfConfig::default());
    }

    #[test]
    fn other_drivers_configs_are_skipped_unread_but_ours_are_all_checked() {
        let configs = [
            entry(SOURCE_CLASS, "gpu.example.com", &[], json!({"anything": 1})),
            entry(
                SOURCE_CLAIM,
                DRIVER,
                &["vf"],
                params(json!({"ifName": "net1"})),
            ),
        ];
        assert_eq!(resolve(DRIVER, &configs, "vf").unwrap().if_name, "net1");

        let configs = [entry(
            SOURCE_CLAIM,
            DRIVER,
            &["other"],
            params(json!({"bogus": 1})),
        )];
        let err = resolve(DRIVER, &configs, "vf").unwrap_err();
        assert!(matches!(&err, VfConfigError::Entry { index: 0, cause, .. }
            if **cause == VfConfigError::UnknownField { field: "bogus".into() }));
        assert!(err.to_string().contains("bogus"));
    }

    #[test]
    fn an_unknown_source_or_a_non_opaque_config_is_refused() {
        let mut bad = entry("FromNowhere", DRIVER, &[], params(json!({})));
        let err = resolve(DRIVER, std::slice::from_ref(&bad), "vf").unwrap_err();
        assert!(matches!(err, VfConfigError::Source { index: 0, .. }));
        bad.source = SOURCE_CLASS.into();
        bad.opaque = None;
        let err = resolve(DRIVER, &[bad], "vf").unwrap_err();
        assert_eq!(err, VfConfigError::NotOpaque { index: 0 });
    }
}
