//! The ResourceSlices a node should have: one pool per node (named after
//! the node, as the Go `kubeletplugin` helper names it), cut into slices of
//! at most [`MAX_DEVICES_PER_SLICE`] devices, and the [`plan`] that turns
//! what the API server has into them.
//!
//! Only healthy devices are offered: an unhealthy VF is withdrawn from the
//! slices so the scheduler stops picking it (claims already allocated keep
//! their allocation; the health stream tells kubelet about those).
//!
//! # Names
//!
//! Slice names are deterministic, `<node>-<driver>-<index>` made a DNS
//! subdomain, rather than `generateName`: a restarted plugin finds its
//! slices by name and updates them in place instead of creating a second
//! set, and two plugins racing on the same node collide on create (409)
//! instead of both publishing. Listing still goes by field selector
//! (`spec.nodeName`, `spec.driver`, both selectable in resource.k8s.io/v1),
//! so slices of ours under other names (an older release, a different
//! naming) are found and deleted too.
//!
//! # Generation
//!
//! Whenever the pool's content differs from what is published the pool
//! generation becomes one more than the highest published one, and every
//! slice is rewritten with it: consumers only trust the highest generation
//! and wait until they have seen `resourceSliceCount` slices of it.

use std::collections::BTreeMap;

use k8s_openapi::api::resource::v1::{Device, ResourcePool, ResourceSlice, ResourceSliceSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

use crate::attributes::{HostFacts, device_attributes, is_dns_label, is_dns_subdomain};
use crate::devices::{DraDevice, Inventory};

/// Most devices in one ResourceSlice (`ResourceSliceMaxDevices`, 128 in
/// resource.k8s.io/v1 as of Kubernetes 1.34; 64 for slices using taints or
/// counters, which ours do not).
pub const MAX_DEVICES_PER_SLICE: usize = 128;
/// Label set on every slice we publish, for people and tools reading them;
/// listing does not depend on it.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
/// Its value.
pub const MANAGED_BY: &str = "sriov-device-plugin";
/// Longest object name (a DNS subdomain).
const MAX_NAME_LEN: usize = 253;

/// Who publishes: the driver, the node, and the node's UID when known (then
/// slices are owned by the Node object and go away with it, as the Go
/// helper arranges).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolOwner {
    /// The DRA driver name.
    pub driver: String,
    /// The node name (also the pool name).
    pub node: String,
    /// The Node object's UID.
    pub node_uid: Option<String>,
}

/// Why a pool cannot be published at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SliceError {
    /// The driver name is not a DNS subdomain.
    #[error("driver name {0:?} is not a DNS subdomain")]
    Driver(String),
    /// The node name is not a DNS subdomain.
    #[error("node name {0:?} is not a DNS subdomain")]
    Node(String),
}

/// The devices one node offers, sorted by name, attributes computed: what
/// the slices should say, before it is cut into slices.
#[derive(Debug, Clone, PartialEq)]
pub struct DesiredPool {
    owner: PoolOwner,
    devices: Vec<Device>,
}

impl DesiredPool {
    /// The healthy devices of `inventory` for which `keep` holds, with
    /// attributes from `facts` (usually [`HostFacts::read`]). A device whose
    /// name is not a DNS label is left out with a warning.
    pub fn new(
        owner: PoolOwner,
        inventory: &Inventory,
        keep: impl Fn(&DraDevice) -> bool,
        facts: impl Fn(&DraDevice) -> HostFacts,
    ) -> Result<Self, SliceError> {
        if !is_dns_subdomain(&owner.driver) {
            return Err(SliceError::Driver(owner.driver));
        }
        if !is_dns_subdomain(&owner.node) {
            return Err(SliceError::Node(owner.node));
        }
        let mut devices = Vec::new();
        for device in inventory.iter() {
            if device.unhealthy.is_some() || !keep(device) {
                continue;
            }
            if !is_dns_label(&device.name) {
                tracing::warn!(device = %device.name, "device name is not a DNS label; not published");
                continue;
            }
            let attributes = device_attributes(device, &facts(device));
            devices.push(Device {
                name: device.name.clone(),
                attributes: (!attributes.is_empty()).then_some(attributes),
                ..Default::default()
            });
        }
        devices.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(Self { owner, devices })
    }

    /// Who publishes it.
    pub fn owner(&self) -> &PoolOwner {
        &self.owner
    }

    /// The devices, sorted by name.
    pub fn devices(&self) -> &[Device] {
        &self.devices
    }

    /// The slices at `generation`. A pool without devices is still one
    /// (empty) slice, so consumers see the node's pool exists and is empty.
    pub fn slices(&self, generation: i64) -> Vec<ResourceSlice> {
        let chunks: Vec<&[Device]> = if self.devices.is_empty() {
            vec![&[]]
        } else {
            self.devices.chunks(MAX_DEVICES_PER_SLICE).collect()
        };
        let count = chunks.len() as i64;
        chunks
            .into_iter()
            .enumerate()
            .map(|(index, devices)| ResourceSlice {
                metadata: ObjectMeta {
                    name: Some(slice_name(&self.owner.node, &self.owner.driver, index)),
                    labels: Some(self.labels()),
                    owner_references: self.owner_references(),
                    ..Default::default()
                },
                spec: ResourceSliceSpec {
                    driver: self.owner.driver.clone(),
                    node_name: Some(self.owner.node.clone()),
                    pool: ResourcePool {
                        name: self.owner.node.clone(),
                        generation,
                        resource_slice_count: count,
                    },
                    devices: (!devices.is_empty()).then(|| devices.to_vec()),
                    ..Default::default()
                },
            })
            .collect()
    }

    fn labels(&self) -> BTreeMap<String, String> {
        // The driver and node are in the spec and field-selectable; a label
        // of our own under a kubernetes.io prefix would squat on theirs.
        BTreeMap::from([(MANAGED_BY_LABEL.to_string(), MANAGED_BY.to_string())])
    }

    fn owner_references(&self) -> Option<Vec<OwnerReference>> {
        let uid = self.owner.node_uid.as_ref()?;
        Some(vec![OwnerReference {
            api_version: "v1".to_string(),
            kind: "Node".to_string(),
            name: self.owner.node.clone(),
            uid: uid.clone(),
            controller: Some(true),
            ..Default::default()
        }])
    }
}

/// The name of slice `index` of the pool of `driver` on `node`: a DNS
/// subdomain of at most 253 characters. When node and driver are too long
/// together the prefix is cut and a hash of the whole keeps names of
/// different nodes apart.
pub fn slice_name(node: &str, driver: &str, index: usize) -> String {
    let suffix = format!("-{index}");
    let prefix = sanitize(&format!("{node}-{driver}"));
    if prefix.len() + suffix.len() <= MAX_NAME_LEN {
        return format!("{prefix}{suffix}");
    }
    let hash = format!("-{:016x}", fnv1a(format!("{node}/{driver}").as_bytes()));
    let keep = MAX_NAME_LEN - suffix.len() - hash.len();
    let cut: String = prefix.chars().take(keep).collect();
    let cut = cut.trim_end_matches(['-', '.']);
    format!("{cut}{hash}{suffix}")
}

/// Lower-case, every character outside `[a-z0-9.-]` turned into `-`, no
/// empty labels, starting alphanumeric.
fn sanitize(raw: &str) -> String {
    let mapped: String = raw
        .chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    let labels: Vec<String> = mapped
        .split('.')
        .map(|l| l.trim_matches('-').to_string())
        .filter(|l| !l.is_empty())
        .collect();
    let joined = labels.join(".");
    if joined.is_empty() {
        "slice".to_string()
    } else {
        joined
    }
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// What to do to the API server's slices to make them the desired pool.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    /// The pool generation the slices will carry.
    pub generation: i64,
    /// Slices to create.
    pub create: Vec<ResourceSlice>,
    /// Slices to replace, each carrying the published resourceVersion.
    pub update: Vec<ResourceSlice>,
    /// Names of slices to delete.
    pub delete: Vec<String>,
}

impl Plan {
    /// Nothing to write.
    pub fn is_empty(&self) -> bool {
        self.create.is_empty() && self.update.is_empty() && self.delete.is_empty()
    }
}

/// Compares `published` (the API server's slices of this driver on this
/// node) with `desired`. When they agree in everything but resourceVersion
/// and server-set metadata, the plan is empty and keeps the published
/// generation; otherwise every slice is written at the next generation.
pub fn plan(desired: &DesiredPool, published: &[ResourceSlice]) -> Plan {
    let current = published
        .iter()
        .map(|s| s.spec.pool.generation)
        .max()
        .unwrap_or(0);
    let by_name: BTreeMap<&str, &ResourceSlice> = published
        .iter()
        .filter_map(|s| s.metadata.name.as_deref().map(|n| (n, s)))
        .collect();
    let unchanged = desired.slices(current);
    let same = current > 0
        && unchanged.len() == published.len()
        && unchanged.iter().all(|want| {
            want.metadata
                .name
                .as_deref()
                .and_then(|n| by_name.get(n))
                .is_some_and(|have| agrees(want, have))
        });
    if same {
        return Plan {
            generation: current,
            ..Default::default()
        };
    }

    let generation = current.saturating_add(1);
    let mut plan = Plan {
        generation,
        ..Default::default()
    };
    let wanted = desired.slices(generation);
    let wanted_names: Vec<&str> = wanted
        .iter()
        .filter_map(|s| s.metadata.name.as_deref())
        .collect();
    for have in published {
        let Some(name) = have.metadata.name.as_deref() else {
            continue;
        };
        if !wanted_names.contains(&name) {
            plan.delete.push(name.to_string());
        }
    }
    for mut want in wanted {
        let have = want
            .metadata
            .name
            .as_deref()
            .and_then(|n| by_name.get(n).copied());
        match have {
            // The pool name is immutable: a slice of ours from another pool
            // under the same object name is replaced by delete and create.
            Some(have) if have.spec.pool.name != want.spec.pool.name => {
                if let Some(name) = &have.metadata.name {
                    plan.delete.push(name.clone());
                }
                plan.create.push(want);
            }
            Some(have) => {
                want.metadata.resource_version = have.metadata.resource_version.clone();
                plan.update.push(want);
            }
            None => plan.create.push(want),
        }
    }
    plan
}

/// Same spec, labels and owners (server-set metadata ignored).
fn agrees(want: &ResourceSlice, have: &ResourceSlice) -> bool {
    want.spec == have.spec
        && want.metadata.labels == have.metadata.labels
        && want.metadata.owner_references == have.metadata.owner_references
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_dns_subdomains_even_from_odd_input() {
        assert_eq!(
            slice_name("node-1", "sriovnetwork.k8snetworkplumbingwg.io", 0),
            "node-1-sriovnetwork.k8snetworkplumbingwg.io-0"
        );
        assert_eq!(slice_name("Node_A", "x..y", 2), "node-a-x.y-2");
        let long = "n".repeat(250);
        let a = slice_name(&long, "driver.example.com", 1);
        let b = slice_name(&format!("{long}x"), "driver.example.com", 1);
        assert!(a.len() <= MAX_NAME_LEN && is_dns_subdomain(&a), "{a}");
        assert_ne!(a, b);
    }
}
