//! The devices DRA mode publishes: one per PCI member of a selector pool.
//!
//! The selector config decides which VFs are offered and under which
//! resource name, exactly as in device-plugin mode; DRA only renames them
//! (a DRA device name must be a DNS label, so `0000:3b:02.1` becomes
//! `0000-3b-02-1`, dra-driver-sriov's spelling) and lets the scheduler pick
//! by attribute instead of by count.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use sriov_pci::PciAddress;
use sriov_selector_pools::{HostDevice, ResourcePool};

/// One VF (or other PCI function) a pool offers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DraDevice {
    /// Its DRA device name ([`device_name`]).
    pub name: String,
    /// The pool's full resource name (`intel.com/intel_sriov_netdevice`).
    pub resource: String,
    /// What discovery knows of it.
    pub host: HostDevice,
    /// Why it is unhealthy; `None` when healthy.
    pub unhealthy: Option<String>,
}

impl DraDevice {
    /// Its PCI address.
    pub fn address(&self) -> PciAddress {
        self.host.address
    }
}

/// The DRA device name of a PCI function: its address with `:` and `.`
/// turned into `-`, a DNS label as the API requires.
pub fn device_name(address: PciAddress) -> String {
    address.to_string().replace([':', '.'], "-")
}

/// Every device of every pool, by device name: the snapshot the publisher,
/// Prepare and the health stream share.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Inventory {
    devices: BTreeMap<String, DraDevice>,
}

impl Inventory {
    /// The PCI members of `pools` (auxiliary sub-function devices have no
    /// PCI function of their own to prepare, so they are left out).
    pub fn from_pools(pools: &[Arc<ResourcePool>]) -> Self {
        let mut devices = BTreeMap::new();
        for pool in pools {
            for member in pool.members() {
                if member.device.aux.is_some() {
                    continue;
                }
                let name = device_name(member.device.address);
                devices.insert(
                    name.clone(),
                    DraDevice {
                        name,
                        resource: pool.resource_name().to_string(),
                        host: member.device,
                        unhealthy: member.unhealthy,
                    },
                );
            }
        }
        Self { devices }
    }

    /// An inventory of exactly these devices (tests, fixtures).
    pub fn from_devices(devices: impl IntoIterator<Item = DraDevice>) -> Self {
        Self {
            devices: devices.into_iter().map(|d| (d.name.clone(), d)).collect(),
        }
    }

    /// Adds the devices claims hold that the pools no longer list: a device a claim holds
    /// stays published and preparable even when its pool lets it go (a `drivers` selector
    /// stops matching once Prepare bound it to vfio-pci), also after a restart. The caller
    /// describes them from the checkpoint and the host; they count as healthy, since what
    /// took them out of the pool was Prepare's own rebind.
    pub fn keep_held(&mut self, held: impl IntoIterator<Item = DraDevice>) {
        for mut device in held {
            if !self.devices.contains_key(&device.name) {
                device.unhealthy = None;
                self.devices.insert(device.name.clone(), device);
            }
        }
    }

    /// This inventory as ResourceSlices see it: the devices of `held` count as healthy. A
    /// device a claim holds is allocated; withdrawing it from the slices (its driver unbound
    /// for a moment while Prepare rebinds it, or a real fault the health stream reports)
    /// would leave an allocation naming a device the node no longer publishes.
    pub fn held_published(&self, held: &BTreeSet<String>) -> Inventory {
        let mut out = self.clone();
        for name in held {
            if let Some(d) = out.devices.get_mut(name) {
                d.unhealthy = None;
            }
        }
        out
    }

    /// The device named `name`.
    pub fn get(&self, name: &str) -> Option<&DraDevice> {
        self.devices.get(name)
    }

    /// Every device, by name.
    pub fn iter(&self) -> impl Iterator<Item = &DraDevice> {
        self.devices.values()
    }

    /// How many devices.
    pub fn len(&self) -> usize {
        self.devices.len()
    }

    /// No devices at all.
    pub fn is_empty(&self) -> bool {
        self.devices.is_empty()
    }
}

/// An iavf VF at `address` for the crate's unit tests, unhealthy for `unhealthy`.
#[cfg(test)]
pub(crate) fn test_device(address: &str, unhealthy: Option<&str>) -> DraDevice {
    let address: PciAddress = address.parse().unwrap();
    DraDevice {
        name: device_name(address),
        resource: "intel.com/sriov".into(),
        host: HostDevice {
            address,
            vendor: 0x8086,
            device: 0x154c,
            class: 0x020000,
            driver: Some("iavf".into()),
            numa_node: None,
            iommu_group: None,
            netdevs: vec![],
            pf: None,
            pf_name: None,
            vf_index: None,
            link_type: None,
            acpi_index: None,
            rdma: Default::default(),
            pkey: None,
            ddp_profile: None,
            vdpa: None,
            uio: vec![],
            aux: None,
        },
        unhealthy: unhealthy.map(str::to_string),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn held_devices_stay_when_their_pool_lets_them_go() {
        let mut now = Inventory::from_devices([test_device("0000:3b:02.1", None)]);
        // Described from the host on the way to vfio-pci: its driver looked unbound.
        now.keep_held([
            test_device("0000:3b:02.0", Some("driver unbound")),
            test_device(
                "0000:3b:02.1",
                Some("not this one: the pool still lists it"),
            ),
        ]);
        let names: Vec<&str> = now.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(names, ["0000-3b-02-0", "0000-3b-02-1"]);
        assert_eq!(now.get("0000-3b-02-0").unwrap().unhealthy, None);
        assert_eq!(now.get("0000-3b-02-1").unwrap().unhealthy, None);
    }

    #[test]
    fn held_devices_stay_in_the_slices_whatever_their_health() {
        let held: BTreeSet<String> = ["0000-3b-02-0".to_string()].into();
        // Unhealthy while held: published all the same; others are not.
        let faulty = Inventory::from_devices([
            test_device("0000:3b:02.0", Some("PF link down")),
            test_device("0000:3b:02.1", Some("PF link down")),
        ]);
        let seen = faulty.held_published(&held);
        assert_eq!(seen.get("0000-3b-02-0").unwrap().unhealthy, None);
        assert!(seen.get("0000-3b-02-1").unwrap().unhealthy.is_some());
        assert!(faulty.get("0000-3b-02-0").unwrap().unhealthy.is_some());
    }

    #[test]
    fn device_names_are_dns_labels_from_the_address() {
        let a: PciAddress = "0000:3b:02.1".parse().unwrap();
        assert_eq!(device_name(a), "0000-3b-02-1");
    }
}
