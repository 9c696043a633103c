//! IOMMU groups and /dev/vfio device numbers against fake sysfs and /dev trees.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use common::{FileDeviceNodes, Tree};
use sriov_vfio::{DeviceNumber, Error, IommuGroup, StatDeviceNodes, VfioDir};

#[test]
fn iommu_group_is_read_from_the_devices_link() {
    let tree = Tree::new();
    let dev = tree.device("0000:01:10.0", 42, None);
    let group = IommuGroup::of_device_dir(&dev).unwrap();
    assert_eq!(group, IommuGroup::new(42));
    assert_eq!(group.device_file_name(), "42");
}

#[test]
fn vfio_noiommu_group_name_selects_the_noiommu_node() {
    let tree = Tree::new();
    let dev = tree.device("0000:01:10.2", 7, Some("vfio-noiommu"));
    let group = IommuGroup::of_device_dir(&dev).unwrap();
    assert!(group.noiommu);
    assert_eq!(group.device_file_name(), "noiommu-7");
    let vfio = VfioDir::new(tree.vfio_dir());
    assert_eq!(vfio.group_path(&group), tree.vfio_dir().join("noiommu-7"));
}

#[test]
fn other_group_names_are_ordinary_groups() {
    let tree = Tree::new();
    let dev = tree.device("0000:01:10.4", 8, Some("something-else"));
    assert!(!IommuGroup::of_device_dir(&dev).unwrap().noiommu);
}

#[test]
fn device_without_iommu_group_names_the_link() {
    let tree = Tree::new();
    let dev = tree.devices_dir().join("0000:02:00.0");
    std::fs::create_dir_all(&dev).unwrap();
    let err = IommuGroup::of_device_dir(&dev).unwrap_err();
    assert!(matches!(err, Error::IommuGroupLink { .. }), "{err}");
    assert!(
        err.to_string().contains("0000:02:00.0/iommu_group"),
        "{err}"
    );
}

#[test]
fn nonexistent_device_is_an_error_not_a_panic() {
    let tree = Tree::new();
    let err = IommuGroup::of_device_dir(&tree.devices_dir().join("0000:ff:1f.7")).unwrap_err();
    assert!(err.to_string().contains("0000:ff:1f.7"), "{err}");
}

#[test]
fn link_not_ending_in_a_number_is_refused() {
    let tree = Tree::new();
    let dev = tree.devices_dir().join("0000:03:00.0");
    std::fs::create_dir_all(&dev).unwrap();
    std::os::unix::fs::symlink(
        "../../../../kernel/iommu_groups/abc",
        dev.join("iommu_group"),
    )
    .unwrap();
    let err = IommuGroup::of_device_dir(&dev).unwrap_err();
    assert!(matches!(err, Error::IommuGroupTarget { .. }), "{err}");
    assert!(err.to_string().contains("iommu_groups/abc"), "{err}");
}

#[test]
fn textual_groups_parse_only_as_numbers() {
    assert_eq!("12".parse::<IommuGroup>().unwrap(), IommuGroup::new(12));
    assert_eq!(
        "noiommu-3".parse::<IommuGroup>().unwrap(),
        IommuGroup {
            id: 3,
            noiommu: true
        }
    );
    for hostile in [
        "",
        "../vfio",
        "1/../../x",
        "+1",
        "-1",
        "1\0",
        "noiommu-",
        "4294967296",
        " 1",
    ] {
        let err = hostile.parse::<IommuGroup>().unwrap_err();
        assert!(
            matches!(err, Error::InvalidIommuGroup { .. }),
            "{hostile:?}: {err}"
        );
    }
    let huge = "9".repeat(4096);
    let err = huge.parse::<IommuGroup>().unwrap_err();
    assert!(err.to_string().len() < 300, "message is bounded: {err}");
}

#[test]
fn device_numbers_of_the_container_and_group_nodes() {
    let tree = Tree::new();
    tree.node("vfio", DeviceNumber::new(10, 196));
    tree.node("42", DeviceNumber::new(243, 1));
    let vfio = VfioDir::with_device_nodes(tree.vfio_dir(), Arc::new(FileDeviceNodes));
    assert_eq!(vfio.container_path(), tree.vfio_dir().join("vfio"));
    assert_eq!(
        vfio.devices_for(&IommuGroup::new(42)).unwrap(),
        (DeviceNumber::new(10, 196), DeviceNumber::new(243, 1))
    );
}

#[test]
fn group_not_bound_to_vfio_has_no_node() {
    let tree = Tree::new();
    tree.node("vfio", DeviceNumber::new(10, 196));
    let vfio = VfioDir::with_device_nodes(tree.vfio_dir(), Arc::new(FileDeviceNodes));
    let err = vfio.group_device(&IommuGroup::new(99)).unwrap_err();
    assert!(matches!(err, Error::DeviceNode { .. }), "{err}");
    assert!(err.to_string().contains("dev/vfio/99"), "{err}");
}

#[test]
fn regular_file_is_not_a_device_node() {
    let tree = Tree::new();
    tree.node("vfio", DeviceNumber::new(10, 196));
    let err = VfioDir::new(tree.vfio_dir())
        .container_device()
        .unwrap_err();
    assert!(matches!(err, Error::NotCharDevice { .. }), "{err}");
}

#[test]
fn real_char_device_numbers_come_from_st_rdev() {
    let tree = Tree::new();
    let path = tree.vfio_dir().join("7");
    let made = nix::sys::stat::mknod(
        &path,
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::from_bits_truncate(0o600),
        nix::sys::stat::makedev(4095, 1_048_575),
    );
    if let Err(e) = made {
        eprintln!("SKIP real_char_device_numbers_come_from_st_rdev: mknod not permitted ({e})");
        return;
    }
    let vfio = VfioDir::with_device_nodes(tree.vfio_dir(), Arc::new(StatDeviceNodes));
    // The largest major and minor exercise both halves of the kernel's split encoding.
    assert_eq!(
        vfio.group_device(&IommuGroup::new(7)).unwrap(),
        DeviceNumber::new(4095, 1_048_575)
    );
}

#[test]
fn from_rdev_splits_the_kernel_encoding() {
    let rdev = nix::sys::stat::makedev(511, 300);
    assert_eq!(DeviceNumber::from_rdev(rdev), DeviceNumber::new(511, 300));
    assert_eq!(DeviceNumber::new(10, 196).cgroup_rule(), "c 10:196 rw");
}

#[test]
fn iommu_group_of_a_pci_address_in_a_kernel_shaped_tree() {
    let fake = sriov_pci_fake::fixtures::igb_82576(sriov_pci_fake::FakeSysfs::builder())
        .build()
        .unwrap();
    let sysfs = fake.sysfs();
    let pf: sriov_pci::PciAddress = "0000:01:00.0".parse().unwrap();
    assert_eq!(
        IommuGroup::of_device(sysfs.devices_dir(), pf).unwrap(),
        IommuGroup::new(3)
    );
    let vfs = sysfs.set_num_vfs(pf, 2).unwrap();
    let vf_group = IommuGroup::of_device(sysfs.devices_dir(), vfs[1].address).unwrap();
    assert_eq!(
        Some(vf_group.id),
        sysfs.iommu_group(vfs[1].address).unwrap()
    );
    assert!(!vf_group.noiommu);
    let missing: sriov_pci::PciAddress = "0000:77:00.0".parse().unwrap();
    let err = IommuGroup::of_device(sysfs.devices_dir(), missing).unwrap_err();
    assert!(
        err.to_string().contains("0000:77:00.0/iommu_group"),
        "{err}"
    );
}
