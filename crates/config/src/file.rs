//! The SR-IOV config file, parsed and checked without touching sysfs.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use sriov_pci::PciAddress;

use crate::error::{Error, FileError};
use crate::locate::{Step, locate};
use crate::warning::Warning;

/// The SR-IOV config file: which PFs to serve and under which resource names.
///
/// ```yaml
/// physicalFunctions:
///   0000:01:00.0:
///     pfKernelDriver: i40e
///     vfKernelDriver: iavf
///     capabilities: [intel, 10G]
///     serviceDomains: [service.domain.1]
///     virtualFunctions:          # optional: use exactly these VFs
///       - address: 0000:01:02.0
///         iommuGroup: 1
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SriovConfig {
    /// The file it came from, for messages.
    pub file: PathBuf,
    /// The PFs, keyed by canonical PCI address.
    pub physical_functions: BTreeMap<PciAddress, PfConfig>,
}

/// One PF of the config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PfConfig {
    /// Driver the PF must be bound to (checked, not changed).
    pub pf_kernel_driver: String,
    /// Kernel driver of its VFs when handed out as kernel interfaces.
    pub vf_kernel_driver: String,
    /// Capabilities, e.g. `intel`, `10G`; non-empty, unique.
    pub capabilities: Vec<String>,
    /// Service domains; non-empty, unique.
    pub service_domains: Vec<String>,
    /// When present, exactly the VFs to use (each must be a VF of this PF in sysfs).
    pub virtual_functions: Option<Vec<VfConfig>>,
    /// Line of the PF's key in the file.
    pub line: Option<usize>,
}

impl PfConfig {
    /// The resource names this PF serves: every `serviceDomain/capability` pair.
    pub fn resource_names(&self) -> Vec<String> {
        self.service_domains
            .iter()
            .flat_map(|d| self.capabilities.iter().map(move |c| format!("{d}/{c}")))
            .collect()
    }
}

/// A VF listed in the config file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VfConfig {
    /// The VF's PCI address.
    pub address: PciAddress,
    /// The IOMMU group the file claims for it.
    pub iommu_group: u32,
    /// Line of its `address` in the file.
    pub line: Option<usize>,
}

/// A parsed config file and its warnings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadedConfig {
    /// The config.
    pub config: SriovConfig,
    /// Non-fatal findings (for example: no PFs at all).
    pub warnings: Vec<Warning>,
}

#[derive(Deserialize)]
#[serde(
    rename_all = "camelCase",
    deny_unknown_fields,
    expecting = "a mapping with the key physicalFunctions"
)]
struct RawFile {
    #[serde(default)]
    physical_functions: Option<RawPfMap>,
}

/// The PF map as written, duplicates and all (a plain map would let the last one win silently).
struct RawPfMap(Vec<(String, RawPf)>);

impl<'de> Deserialize<'de> for RawPfMap {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = RawPfMap;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a map from PCI address to physical function")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<RawPfMap, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = map.next_entry::<String, RawPf>()? {
                    entries.push(entry);
                }
                Ok(RawPfMap(entries))
            }
        }
        d.deserialize_map(Visitor)
    }
}

#[derive(Deserialize)]
#[serde(
    rename_all = "camelCase",
    deny_unknown_fields,
    expecting = "a physical function (pfKernelDriver, vfKernelDriver, capabilities, serviceDomains)"
)]
struct RawPf {
    pf_kernel_driver: String,
    vf_kernel_driver: String,
    capabilities: Vec<String>,
    service_domains: Vec<String>,
    #[serde(default)]
    virtual_functions: Option<Vec<RawVf>>,
}

#[derive(Deserialize)]
#[serde(
    rename_all = "camelCase",
    deny_unknown_fields,
    expecting = "a virtual function (address, iommuGroup)"
)]
struct RawVf {
    address: String,
    iommu_group: u32,
}

impl SriovConfig {
    /// Reads and parses `file` (see [`SriovConfig::parse`]).
    pub fn load(file: &Path) -> Result<LoadedConfig, Error> {
        let text = std::fs::read_to_string(file).map_err(|source| Error::ReadFile {
            file: file.to_path_buf(),
            cause: source,
        })?;
        Self::parse(file, &text)
    }

    /// Parses config text; `file` is only used in messages. Pure: sysfs is not consulted (see
    /// [`reconcile()`](crate::reconcile()) for that step).
    ///
    /// Syntax, type and unknown-key errors stop at the first one, with serde_yaml's position.
    /// Rule violations (empty lists, bad addresses or names, duplicates) are all collected, each with
    /// the line of the offending key.
    pub fn parse(file: &Path, text: &str) -> Result<LoadedConfig, Error> {
        let yaml_error = |e: serde_yaml::Error| Error::File {
            errors: vec![from_yaml_error(file, &e)],
        };
        // An empty document (or only comments) is no PFs, as the Go forwarder's tests rely on.
        let raw = serde_yaml::from_str::<Option<RawFile>>(text)
            .map_err(yaml_error)?
            .unwrap_or(RawFile {
                physical_functions: None,
            });
        let mut checker = Checker {
            file,
            text,
            errors: Vec::new(),
        };
        let config = checker.check(raw.physical_functions.map(|m| m.0).unwrap_or_default());
        if !checker.errors.is_empty() {
            return Err(Error::File {
                errors: checker.errors,
            });
        }
        let mut warnings = Vec::new();
        if config.physical_functions.is_empty() {
            warnings.push(Warning::NoPhysicalFunctions {
                file: file.to_path_buf(),
            });
        }
        Ok(LoadedConfig { config, warnings })
    }
}

fn from_yaml_error(file: &Path, e: &serde_yaml::Error) -> FileError {
    let location = e.location();
    let mut text = e.to_string();
    if let Some(l) = &location {
        let suffix = format!(" at line {} column {}", l.line(), l.column());
        if let Some(stripped) = text.strip_suffix(&suffix) {
            text = stripped.to_string();
        }
    }
    // serde_yaml prefixes the field path ("physicalFunctions.0000:01:00.0.capabilities: ...").
    let (field, message) = match text.split_once(": ") {
        Some((path, rest)) if path.starts_with("physicalFunctions") && !path.contains(' ') => {
            (path.to_string(), rest.to_string())
        }
        _ => (String::new(), text.clone()),
    };
    FileError {
        file: file.to_path_buf(),
        line: location.as_ref().map(|l| l.line()),
        column: location.as_ref().map(|l| l.column()),
        field,
        message,
    }
}

struct Checker<'a> {
    file: &'a Path,
    text: &'a str,
    errors: Vec<FileError>,
}

impl Checker<'_> {
    fn error(&mut self, path: &[Step<'_>], field: String, message: String) {
        self.errors.push(FileError {
            file: self.file.to_path_buf(),
            line: locate(self.text, path),
            column: None,
            field,
            message,
        });
    }

    fn check(&mut self, raw: Vec<(String, RawPf)>) -> SriovConfig {
        let root = Step::Key("physicalFunctions", 0);
        let mut pfs: BTreeMap<PciAddress, PfConfig> = BTreeMap::new();
        let mut key_seen: BTreeMap<String, usize> = BTreeMap::new();
        let mut pf_spelling: BTreeMap<PciAddress, String> = BTreeMap::new();
        // Every VF address listed so far, and the PF key it was listed under.
        let mut vf_owner: BTreeMap<PciAddress, String> = BTreeMap::new();
        let pf_keys: BTreeSet<PciAddress> =
            raw.iter().filter_map(|(k, _)| k.parse().ok()).collect();

        for (key, pf) in raw {
            let occurrence = key_seen.entry(key.clone()).or_insert(0);
            let at = Step::Key(&key, *occurrence);
            *occurrence += 1;
            let pf_field = format!("physicalFunctions.{key}");
            let pf_line = locate(self.text, &[root, at]);

            let address = match key.parse::<PciAddress>() {
                Ok(a) => Some(a),
                Err(e) => {
                    self.error(
                        &[root, at],
                        pf_field.clone(),
                        format!("the key is not a PCI address: {e}"),
                    );
                    None
                }
            };
            if let Some(a) = address
                && let Some(first) = pf_spelling.get(&a)
            {
                let message = if *first == key {
                    format!("PF {a} is listed twice")
                } else {
                    format!("PF {a} is listed twice (also as {first})")
                };
                self.error(&[root, at], pf_field.clone(), message);
            }

            for (name, value) in [
                ("pfKernelDriver", &pf.pf_kernel_driver),
                ("vfKernelDriver", &pf.vf_kernel_driver),
            ] {
                if let Some(problem) = driver_problem(value) {
                    self.error(
                        &[root, at, Step::Key(name, 0)],
                        format!("{pf_field}.{name}"),
                        format!("{value:?} is not a driver name: {problem}"),
                    );
                }
            }
            self.check_names(
                &[root, at],
                &pf_field,
                "capabilities",
                &pf.capabilities,
                capability_problem,
            );
            self.check_names(
                &[root, at],
                &pf_field,
                "serviceDomains",
                &pf.service_domains,
                service_domain_problem,
            );

            let vfs = pf.virtual_functions.map(|list| {
                let vfs_step = Step::Key("virtualFunctions", 0);
                let vfs_field = format!("{pf_field}.virtualFunctions");
                if list.is_empty() {
                    self.error(
                        &[root, at, vfs_step],
                        vfs_field.clone(),
                        "is empty: list the VFs to use, or leave the key out to use every VF"
                            .into(),
                    );
                }
                let mut vfs = Vec::new();
                for (i, vf) in list.into_iter().enumerate() {
                    let path = [root, at, vfs_step, Step::Item(i), Step::Key("address", 0)];
                    let field = format!("{vfs_field}[{i}].address");
                    let line = locate(self.text, &path);
                    let vf_address = match vf.address.parse::<PciAddress>() {
                        Ok(v) => v,
                        Err(e) => {
                            self.error(&path, field, format!("not a PCI address: {e}"));
                            continue;
                        }
                    };
                    if pf_keys.contains(&vf_address) {
                        self.error(
                            &path,
                            field,
                            format!("{vf_address} is a PF of this file, not a VF"),
                        );
                        continue;
                    }
                    if let Some(owner) = vf_owner.get(&vf_address) {
                        let message = if *owner == key {
                            format!("VF {vf_address} is listed twice under this PF")
                        } else {
                            format!("VF {vf_address} is already listed under PF {owner}")
                        };
                        self.error(&path, field, message);
                        continue;
                    }
                    vf_owner.insert(vf_address, key.clone());
                    vfs.push(VfConfig {
                        address: vf_address,
                        iommu_group: vf.iommu_group,
                        line,
                    });
                }
                vfs
            });

            if let Some(a) = address
                && !pf_spelling.contains_key(&a)
            {
                pf_spelling.insert(a, key.clone());
                pfs.insert(
                    a,
                    PfConfig {
                        pf_kernel_driver: pf.pf_kernel_driver,
                        vf_kernel_driver: pf.vf_kernel_driver,
                        capabilities: pf.capabilities,
                        service_domains: pf.service_domains,
                        virtual_functions: vfs,
                        line: pf_line,
                    },
                );
            }
        }
        SriovConfig {
            file: self.file.to_path_buf(),
            physical_functions: pfs,
        }
    }

    fn check_names(
        &mut self,
        pf_path: &[Step<'_>],
        pf_field: &str,
        key: &str,
        names: &[String],
        problem_of: fn(&str) -> Option<String>,
    ) {
        let mut path = pf_path.to_vec();
        path.push(Step::Key(key, 0));
        if names.is_empty() {
            self.error(
                &path,
                format!("{pf_field}.{key}"),
                "must not be empty".into(),
            );
            return;
        }
        let mut seen = BTreeSet::new();
        for (i, name) in names.iter().enumerate() {
            let mut item = path.clone();
            item.push(Step::Item(i));
            let field = format!("{pf_field}.{key}[{i}]");
            if let Some(problem) = problem_of(name) {
                self.error(&item, field, format!("{name:?} {problem}"));
            } else if !seen.insert(name.as_str()) {
                self.error(&item, field, format!("{name:?} is listed twice"));
            }
        }
    }
}

/// Driver names become a path component under the drivers directory, so they must be one.
fn driver_problem(name: &str) -> Option<String> {
    if name.is_empty() {
        return Some("it is empty".into());
    }
    if name.len() > 64 {
        return Some("it is longer than 64 bytes".into());
    }
    if name == "." || name == ".." || name.contains('/') {
        return Some("it must be a single path component".into());
    }
    if name.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Some("it contains whitespace or control characters".into());
    }
    None
}

/// Capabilities are the name half of a Kubernetes extended resource name (`domain/name`):
/// at most 63 characters, alphanumerics with `-`, `_`, `.` inside.
fn capability_problem(name: &str) -> Option<String> {
    let ok_inner = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    let edges_ok = name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    if name.is_empty() || name.len() > 63 || !edges_ok || !name.chars().all(ok_inner) {
        return Some(
            "is not a valid capability: use 1-63 letters, digits, '-', '_' or '.', starting and \
             ending with a letter or digit (it becomes the name part of serviceDomain/capability)"
                .into(),
        );
    }
    None
}

/// Service domains are the domain half of a Kubernetes extended resource name: a DNS subdomain.
fn service_domain_problem(name: &str) -> Option<String> {
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
            && l.ends_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
            && l.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    };
    if name.is_empty() || name.len() > 253 || !name.split('.').all(label_ok) {
        return Some(
            "is not a valid service domain: use a DNS subdomain (lower-case letters, digits, '-', \
             dot-separated; it becomes the domain part of serviceDomain/capability)"
                .into(),
        );
    }
    None
}
