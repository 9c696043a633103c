//! One fixture builder for the API-side tests: hand-built VFs of one PF.

#![allow(dead_code, clippy::unwrap_used)]

use sriov_dra::attributes::HostFacts;
use sriov_dra::devices::{DraDevice, Inventory, device_name};
use sriov_dra::slices::{DesiredPool, PoolOwner};
use sriov_pci::PciAddress;
use sriov_selector_pools::{HostDevice, RdmaDevice};

pub(crate) const DRIVER: &str = "sriovnetwork.k8snetworkplumbingwg.io";
pub(crate) const NODE: &str = "node-1";
pub(crate) const RESOURCE: &str = "intel.com/intel_sriov_netdevice";

/// VF number `n` (0-based) of PF 0000:3b:00.0, spread over buses so
/// hundreds fit.
pub(crate) fn vf(n: u32) -> DraDevice {
    let address: PciAddress = format!(
        "0000:{:02x}:{:02x}.{}",
        0x40 + n / 64,
        (n / 8) % 8 + 2,
        n % 8
    )
    .parse()
    .unwrap();
    let host = HostDevice {
        address,
        vendor: 0x8086,
        device: 0x154c,
        class: 0x020000,
        driver: Some("iavf".into()),
        numa_node: Some(1),
        iommu_group: None,
        netdevs: vec![format!("ens1f0v{n}")],
        pf: Some("0000:3b:00.0".parse().unwrap()),
        pf_name: Some("ens1f0".into()),
        vf_index: Some(n),
        link_type: Some("ether".into()),
        acpi_index: None,
        rdma: RdmaDevice::default(),
        pkey: None,
        ddp_profile: None,
        vdpa: None,
        uio: Vec::new(),
        aux: None,
    };
    DraDevice {
        name: device_name(address),
        resource: RESOURCE.into(),
        host,
        unhealthy: None,
    }
}

pub(crate) fn inventory(count: u32) -> Inventory {
    Inventory::from_devices((0..count).map(vf))
}

pub(crate) fn owner() -> PoolOwner {
    PoolOwner {
        driver: DRIVER.into(),
        node: NODE.into(),
        node_uid: None,
    }
}

pub(crate) fn pool(inventory: &Inventory) -> DesiredPool {
    DesiredPool::new(owner(), inventory, |_| true, |_| HostFacts::default()).unwrap()
}
