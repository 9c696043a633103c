//! The nodes a container needs for one VF, and the node's cgroup mode, on fake trees.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::sync::Arc;

use common::{FileDeviceNodes, Tree};
use sriov_vfio::{CgroupMode, DeviceNumber, Error, VfioDir, vfio_cdev_name};

const VF: &str = "0000:3b:02.0";

fn vfio(tree: &Tree) -> VfioDir {
    VfioDir::with_device_nodes(tree.vfio_dir(), Arc::new(FileDeviceNodes))
}

#[test]
fn nodes_name_container_group_and_cdev_at_host_paths() {
    let tree = Tree::new();
    let dev = tree.device(VF, 9, None);
    cdev_entry(&dev, "vfio4");
    std::fs::create_dir_all(tree.vfio_dir().join("devices")).unwrap();
    tree.node("vfio", DeviceNumber::new(10, 196));
    tree.node("9", DeviceNumber::new(243, 9));
    tree.node("devices/vfio4", DeviceNumber::new(239, 4));

    let nodes = vfio(&tree)
        .nodes_for(&tree.devices_dir(), VF.parse().unwrap())
        .unwrap();
    assert_eq!(nodes.group.id, 9);
    let seen: Vec<(&Path, &Path, DeviceNumber)> = nodes
        .all()
        .into_iter()
        .map(|n| (n.host_path.as_path(), n.container_path.as_path(), n.device))
        .collect();
    assert_eq!(
        seen,
        [
            (
                Path::new("/dev/vfio/vfio"),
                Path::new("/dev/vfio/vfio"),
                DeviceNumber::new(10, 196)
            ),
            (
                Path::new("/dev/vfio/9"),
                Path::new("/dev/vfio/9"),
                DeviceNumber::new(243, 9)
            ),
            (
                Path::new("/dev/vfio/devices/vfio4"),
                Path::new("/dev/vfio/devices/vfio4"),
                DeviceNumber::new(239, 4)
            ),
        ]
    );
}

#[test]
fn a_noiommu_group_is_read_from_noiommu_node_and_shown_as_the_plain_group() {
    let tree = Tree::new();
    tree.device(VF, 3, Some("vfio-noiommu"));
    tree.node("vfio", DeviceNumber::new(10, 196));
    tree.node("noiommu-3", DeviceNumber::new(243, 0));

    let nodes = vfio(&tree)
        .nodes_for(&tree.devices_dir(), VF.parse().unwrap())
        .unwrap();
    assert!(nodes.group.noiommu);
    assert_eq!(nodes.group_node.host_path, Path::new("/dev/vfio/noiommu-3"));
    assert_eq!(nodes.group_node.container_path, Path::new("/dev/vfio/3"));
    assert_eq!(nodes.group_node.device, DeviceNumber::new(243, 0));
    assert!(nodes.cdev.is_none(), "no vfio-dev directory, no cdev");
}

#[test]
fn a_vf_not_on_vfio_pci_has_no_group_node_and_fails_naming_it() {
    let tree = Tree::new();
    tree.device(VF, 5, None);
    tree.node("vfio", DeviceNumber::new(10, 196));
    let err = vfio(&tree)
        .nodes_for(&tree.devices_dir(), VF.parse().unwrap())
        .unwrap_err();
    assert!(
        matches!(&err, Error::DeviceNode { path, .. } if path.ends_with("dev/vfio/5")),
        "{err}"
    );
}

/// `vfio-dev/<name>` as a kernel with `CONFIG_VFIO_DEVICE_CDEV` shows it: with a `dev` attribute.
fn cdev_entry(dev: &Path, name: &str) {
    let entry = dev.join("vfio-dev").join(name);
    std::fs::create_dir_all(&entry).unwrap();
    std::fs::write(entry.join("dev"), "239:0\n").unwrap();
}

/// Without `CONFIG_VFIO_DEVICE_CDEV` (Debian's 6.12 in the VM test) the kernel still lists
/// `vfio-dev/vfioN` for a device on vfio-pci, with no `dev` attribute and no /dev node.
#[test]
fn vfio_dev_entry_without_a_device_number_is_no_cdev() {
    let tree = Tree::new();
    let dev = tree.device(VF, 9, None);
    std::fs::create_dir_all(dev.join("vfio-dev/vfio0")).unwrap();
    assert_eq!(vfio_cdev_name(&dev).unwrap(), None);
    tree.node("vfio", DeviceNumber::new(10, 196));
    tree.node("9", DeviceNumber::new(243, 9));
    let nodes = vfio(&tree)
        .nodes_for(&tree.devices_dir(), VF.parse().unwrap())
        .unwrap();
    assert!(nodes.cdev.is_none(), "{nodes:?}");
    assert_eq!(nodes.all().len(), 2);
}

#[test]
fn cdev_names_are_vfio_and_digits_only_and_one_per_device() {
    let tree = Tree::new();
    let dev = tree.device(VF, 5, None);
    assert_eq!(vfio_cdev_name(&dev).unwrap(), None);
    cdev_entry(&dev, "vfio..");
    cdev_entry(&dev, "other7");
    assert_eq!(vfio_cdev_name(&dev).unwrap(), None);
    cdev_entry(&dev, "vfio12");
    assert_eq!(vfio_cdev_name(&dev).unwrap().as_deref(), Some("vfio12"));
    cdev_entry(&dev, "vfio13");
    assert!(matches!(
        vfio_cdev_name(&dev),
        Err(Error::CdevAmbiguous { names, .. }) if names == ["vfio12", "vfio13"]
    ));
}

#[test]
fn cgroup_mode_tells_v1_hybrid_and_v2_mounts_apart() {
    // v1: <mount>/devices is a plain directory.
    let v1 = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(v1.path().join("devices")).unwrap();
    let mode = CgroupMode::detect(&v1.path().join("devices")).unwrap();
    assert_eq!(mode, CgroupMode::V1);
    assert!(mode.grants_at_request());

    // Hybrid: the same, beside a unified hierarchy at <mount>/unified.
    let hybrid = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(hybrid.path().join("devices")).unwrap();
    std::fs::create_dir_all(hybrid.path().join("unified")).unwrap();
    std::fs::write(hybrid.path().join("unified/cgroup.controllers"), "").unwrap();
    let mode = CgroupMode::detect(&hybrid.path().join("devices")).unwrap();
    assert_eq!(mode, CgroupMode::Hybrid);
    assert!(mode.grants_at_request());

    // v2: the mount itself is unified and has no devices directory.
    let v2 = tempfile::tempdir().unwrap();
    std::fs::write(v2.path().join("cgroup.controllers"), "cpu memory\n").unwrap();
    let mode = CgroupMode::detect(&v2.path().join("devices")).unwrap();
    assert_eq!(mode, CgroupMode::V2);
    assert!(!mode.grants_at_request());

    // Nothing at all: an error naming the root.
    let none = tempfile::tempdir().unwrap();
    let err = CgroupMode::detect(&none.path().join("devices")).unwrap_err();
    assert!(err.to_string().contains("devices"), "{err}");
}
