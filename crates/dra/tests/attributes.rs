//! The attributes of a VF described from a fake sysfs tree, as
//! dra-driver-sriov publishes them.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use k8s_openapi::api::resource::v1::DeviceAttribute;
use sriov_dra::attributes::*;
use sriov_dra::devices::{DraDevice, device_name};
use sriov_pci_fake::{FakeSysfs, fixtures};
use sriov_selector_pools::{Host, HostPaths};

fn s(v: &str) -> DeviceAttribute {
    DeviceAttribute {
        string: Some(v.into()),
        ..Default::default()
    }
}

fn i(v: i64) -> DeviceAttribute {
    DeviceAttribute {
        int: Some(v),
        ..Default::default()
    }
}

fn b(v: bool) -> DeviceAttribute {
    DeviceAttribute {
        bool: Some(v),
        ..Default::default()
    }
}

/// The second VF of the igb fixture, described as discovery describes it.
fn igb_vf(resource: &str) -> (FakeSysfs, DraDevice) {
    let fake = fixtures::igb_82576(FakeSysfs::builder()).build().unwrap();
    let sysfs = fake.sysfs();
    sysfs
        .set_num_vfs("0000:01:00.0".parse().unwrap(), 2)
        .unwrap();
    let host = Host::new(HostPaths {
        sysfs,
        ..Default::default()
    })
    .describe("0000:01:10.2".parse().unwrap())
    .unwrap();
    let device = DraDevice {
        name: device_name(host.address),
        resource: resource.into(),
        host,
        unhealthy: None,
    };
    (fake, device)
}

#[test]
fn a_vf_carries_dra_driver_sriov_names_and_value_types() {
    let (fake, device) = igb_vf("intel.com/igb_vfs");
    let facts = HostFacts::read(&fake.sysfs(), &device.host);
    assert_eq!(facts.pcie_root.as_deref(), Some("pci0000:00"));
    let attrs = device_attributes(&device, &facts);

    let expected = [
        (VENDOR, s("8086")),
        (DEVICE_ID, s("10ca")),
        (PF_DEVICE_ID, s("10c9")),
        (PCI_ADDRESS, s("0000:01:10.2")),
        (MULTUS_DEVICE_ID, s("0000:01:10.2")),
        (STANDARD_PCI_BUS_ID, s("0000:01:10.2")),
        (PF_PCI_ADDRESS, s("0000:01:00.0")),
        (PF_NAME, s("enp1s0")),
        (ESWITCH_MODE, s("legacy")),
        (VF_ID, i(1)),
        (RESOURCE_NAME, s("intel.com/igb_vfs")),
        (MULTUS_RESOURCE_NAME, s("intel.com/igb_vfs")),
        (STANDARD_PCIE_ROOT, s("pci0000:00")),
        (RDMA_CAPABLE, b(false)),
        (NUMA_NODE, i(device.host.numa_node.map_or(-1, i64::from))),
        (
            LINK_TYPE,
            s(match device.host.link_type.as_deref() {
                Some("ether") => "ethernet",
                _ => "unknown",
            }),
        ),
    ];
    for (name, value) in &expected {
        assert_eq!(attrs.get(*name), Some(value), "attribute {name}");
    }
    assert_eq!(
        attrs.len(),
        expected.len(),
        "{:?}",
        attrs.keys().collect::<Vec<_>>()
    );
    for name in attrs.keys() {
        check_qualified_name(name).unwrap();
    }
}

#[test]
fn numa_rdma_and_link_type_follow_the_host() {
    let mut device = common::vf(3);
    device.host.numa_node = None;
    device.host.rdma.names = vec!["mlx5_3".into()];
    device.host.link_type = Some("infiniband".into());
    let attrs = device_attributes(&device, &HostFacts::default());
    assert_eq!(attrs.get(NUMA_NODE), Some(&i(-1)));
    assert_eq!(attrs.get(RDMA_CAPABLE), Some(&b(true)));
    assert_eq!(attrs.get(LINK_TYPE), Some(&s("infiniband")));
    // Facts not known are left out rather than guessed.
    assert!(!attrs.contains_key(STANDARD_PCIE_ROOT));
    assert!(!attrs.contains_key(PF_DEVICE_ID));
}

#[test]
fn an_over_long_value_is_left_out_and_the_rest_kept() {
    let long = format!("example.com/{}", "r".repeat(60));
    let mut device = common::vf(0);
    device.resource = long;
    let attrs = device_attributes(&device, &HostFacts::default());
    assert!(!attrs.contains_key(RESOURCE_NAME));
    assert!(!attrs.contains_key(MULTUS_RESOURCE_NAME));
    assert_eq!(
        attrs.get(PCI_ADDRESS),
        Some(&s(&device.host.address.to_string()))
    );
    assert_eq!(attrs.get(VF_ID), Some(&i(0)));
}

#[test]
fn a_switchdev_pf_is_reported_as_such() {
    let (fake, device) = igb_vf("intel.com/igb_vfs");
    let rep = fake
        .root()
        .join("bus/pci/devices/0000:01:00.0/net/enp1s0_0");
    std::fs::create_dir_all(&rep).unwrap();
    std::fs::write(rep.join("phys_switch_id"), "aabbcc\n").unwrap();
    std::fs::write(rep.join("phys_port_name"), "pf0vf0\n").unwrap();
    let facts = HostFacts::read(&fake.sysfs(), &device.host);
    assert_eq!(facts.eswitch_mode.as_deref(), Some("switchdev"));
}
