//! The devices DRA mode publishes: one per PCI member of a selector pool.
//!
//! The selector config decides which VFs are offered and under which
//! resource name, exactly as in device-plugin mode; DRA only renames them
//! (a DRA device name must be a DNS label, so `0000:3b:02.1` becomes
//! `0000-3b-02-1`, dra-driver-sriov's spelling) and lets the scheduler pick
//! by attribute instead of by count.

use std::collections::BTreeMap;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_names_are_dns_labels_from_the_address() {
        let a: PciAddress = "0000:3b:02.1".parse().unwrap();
        assert_eq!(device_name(a), "0000-3b-02-1");
    }
}
