#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Discovery and device facts against kernel-shaped fake trees.

use sriov_pci::{PciAddress, PciError};
use sriov_pci_fake::{FakeSysfs, fixtures, testdata_sysfs};

fn addr(s: &str) -> PciAddress {
    s.parse().unwrap()
}

#[test]
fn x710_fixture_has_two_ports_with_four_vfs_each() {
    let fake = FakeSysfs::copy_of(testdata_sysfs().join("x710-2port")).unwrap();
    let inv = fake.sysfs().discover_all().unwrap();
    assert_eq!(inv.physical_functions.len(), 2);
    assert!(inv.other_devices.is_empty());
    let p0 = &inv.physical_functions[0];
    assert_eq!(p0.device.address, addr("0000:3b:00.0"));
    assert_eq!(p0.device.driver.as_deref(), Some("i40e"));
    assert_eq!(p0.device.netdevs, ["ens785f0"]);
    assert_eq!(p0.device.numa_node, Some(0));
    assert_eq!(p0.total_vfs, 64);
    assert_eq!(p0.vf_device_id, Some(0x154c));
    let vfs: Vec<String> = p0.vfs.iter().map(|v| v.address.to_string()).collect();
    assert_eq!(
        vfs,
        [
            "0000:3b:02.0",
            "0000:3b:02.1",
            "0000:3b:02.2",
            "0000:3b:02.3"
        ]
    );
    assert!(p0.vfs.iter().all(|v| v.driver.as_deref() == Some("iavf")));
    assert!(p0.vfs.iter().all(|v| v.netdevs.len() == 1));
    let p1 = &inv.physical_functions[1];
    assert_eq!(p1.vfs[0].address, addr("0000:3b:0a.0"));
    let mut groups: Vec<u32> = inv
        .physical_functions
        .iter()
        .flat_map(|p| p.vfs.iter().map(|v| v.iommu_group.unwrap()))
        .collect();
    groups.sort();
    groups.dedup();
    assert_eq!(groups.len(), 8, "every VF sits in its own IOMMU group");
}

#[test]
fn node_fixture_separates_pfs_from_other_devices() {
    let fake = FakeSysfs::copy_of(testdata_sysfs().join("node")).unwrap();
    let inv = fake.sysfs().discover_all().unwrap();
    let pfs: Vec<String> = inv
        .physical_functions
        .iter()
        .map(|p| p.device.address.to_string())
        .collect();
    assert_eq!(
        pfs,
        [
            "0000:01:00.0",
            "0000:3b:00.0",
            "0000:3b:00.1",
            "0000:5e:00.0"
        ]
    );
    let others: Vec<(String, Option<String>)> = inv
        .other_devices
        .iter()
        .map(|d| (d.address.to_string(), d.driver.clone()))
        .collect();
    assert_eq!(
        others,
        [
            ("0000:00:14.3".to_string(), None),
            ("0000:00:1f.6".to_string(), Some("e1000e".to_string()))
        ]
    );
    let mlx = &inv.physical_functions[3];
    assert_eq!(mlx.device.numa_node, Some(1));
    assert_eq!(mlx.device.ids.vendor, 0x15b3);
    assert_eq!(mlx.vfs.len(), 2);
    let igb = &inv.physical_functions[0];
    assert!(igb.vfs.is_empty());
    assert_eq!(igb.device.iommu_group, Some(3));
}

#[test]
fn vfs_are_ordered_by_index_as_a_number() {
    let fake = fixtures::generated(1, 12).build().unwrap();
    let sysfs = fake.sysfs();
    let vfs = sysfs.vfs(addr("0000:10:00.0")).unwrap();
    let idx: Vec<u32> = vfs.iter().map(|v| v.index).collect();
    assert_eq!(idx, (0..12).collect::<Vec<_>>());
    // virtfn10 is routing id PF + offset 8 + 10: 10:02.2, not virtfn1's neighbour.
    assert_eq!(vfs[10].address, addr("0000:10:02.2"));
    assert_eq!(vfs[2].address, addr("0000:10:01.2"));
}

#[test]
fn vf_knows_its_pf_and_a_pf_has_none() {
    let fake = FakeSysfs::copy_of(testdata_sysfs().join("x710-2port")).unwrap();
    let sysfs = fake.sysfs();
    assert_eq!(
        sysfs.physfn(addr("3b:0a.2")).unwrap(),
        Some(addr("3b:00.1"))
    );
    assert_eq!(sysfs.physfn(addr("3b:00.1")).unwrap(), None);
}

#[test]
fn device_facts_include_ids_class_and_netdev_state() {
    let fake = FakeSysfs::copy_of(testdata_sysfs().join("node")).unwrap();
    let sysfs = fake.sysfs();
    let d = sysfs.device(addr("0000:00:1f.6")).unwrap();
    assert_eq!((d.ids.vendor, d.ids.device), (0x8086, 0x15bb));
    assert_eq!(d.ids.base_class(), 0x02);
    assert!(d.sriov.is_none());
    assert!(d.physfn.is_none());
    let n = sysfs.netdev(d.address, "eno1").unwrap();
    assert_eq!(n.link_type, 1);
    assert_eq!(n.operstate, "down");
    assert_eq!(n.mac.len(), 17);
    let pf = sysfs.device(addr("0000:3b:00.0")).unwrap();
    let cap = pf.sriov.unwrap();
    assert_eq!((cap.total_vfs, cap.num_vfs), (64, 4));
}

#[test]
fn discovering_named_pfs_reads_fewer_files_than_the_whole_bus() {
    let fake = FakeSysfs::copy_of(testdata_sysfs().join("node")).unwrap();
    let all = fake.sysfs();
    all.discover_all().unwrap();
    let some = fake.sysfs();
    let pfs = some.discover_pfs(&[addr("0000:5e:00.0")]).unwrap();
    assert_eq!(pfs.len(), 1);
    assert!(
        some.files_read() * 3 < all.files_read(),
        "{} vs {}",
        some.files_read(),
        all.files_read()
    );
}

#[test]
fn discovering_a_device_without_sriov_names_it() {
    let fake = FakeSysfs::copy_of(testdata_sysfs().join("node")).unwrap();
    let err = fake
        .sysfs()
        .discover_pfs(&[addr("0000:00:1f.6")])
        .unwrap_err();
    assert!(matches!(err, PciError::NotSriov { .. }), "{err}");
    assert!(err.to_string().contains("0000:00:1f.6"));
    assert!(err.to_string().contains("sriov_totalvfs"));
}

#[test]
fn a_missing_device_is_not_found_with_its_path() {
    let fake = FakeSysfs::copy_of(testdata_sysfs().join("node")).unwrap();
    let err = fake.sysfs().device(addr("0000:99:00.0")).unwrap_err();
    assert!(matches!(err, PciError::NoDevice { .. }));
    assert!(
        err.to_string().contains("bus/pci/devices/0000:99:00.0"),
        "{err}"
    );
}

#[test]
fn missing_and_unparsable_attributes_name_the_file() {
    let fake = FakeSysfs::copy_of(testdata_sysfs().join("node")).unwrap();
    let sysfs = fake.sysfs();
    let dir = sysfs.device_dir(addr("0000:00:1f.6"));
    std::fs::remove_file(dir.join("vendor")).unwrap();
    let err = sysfs.device(addr("0000:00:1f.6")).unwrap_err();
    assert!(matches!(err, PciError::Read { .. }));
    assert!(err.to_string().contains("0000:00:1f.6/vendor"), "{err}");

    let dir = sysfs.device_dir(addr("0000:00:14.3"));
    std::fs::write(dir.join("numa_node"), "zero\n").unwrap();
    let err = sysfs.numa_node(addr("0000:00:14.3")).unwrap_err();
    assert!(matches!(err, PciError::Parse { .. }));
    assert!(err.to_string().contains("numa_node"), "{err}");
    assert!(err.to_string().contains("\"zero\""), "{err}");
}

#[test]
fn numa_node_minus_one_means_no_affinity() {
    let fake = FakeSysfs::copy_of(testdata_sysfs().join("node")).unwrap();
    assert_eq!(fake.sysfs().numa_node(addr("0000:00:1f.6")).unwrap(), None);
}

#[test]
fn igb_tree_has_the_real_kernels_link_shapes() {
    let fake = fixtures::igb_82576(FakeSysfs::builder()).build().unwrap();
    let sysfs = fake.sysfs();
    let pf = addr("0000:01:00.0");
    assert_eq!(sysfs.total_vfs(pf).unwrap(), 7);
    sysfs.set_num_vfs(pf, 2).unwrap();
    let dir = sysfs.device_dir(pf);
    let link = |p: std::path::PathBuf| {
        std::fs::read_link(p)
            .unwrap()
            .to_string_lossy()
            .into_owned()
    };
    assert_eq!(link(dir.join("virtfn0")), "../0000:01:10.0");
    assert_eq!(link(dir.join("virtfn1")), "../0000:01:10.2");
    assert_eq!(link(dir.join("driver")), "../../../../bus/pci/drivers/igb");
    assert_eq!(
        link(dir.join("iommu_group")),
        "../../../../kernel/iommu_groups/3"
    );
    let vf = sysfs.device_dir(addr("0000:01:10.2"));
    assert_eq!(link(vf.join("physfn")), "../0000:01:00.0");
    assert_eq!(link(vf.join("driver")), "../../../../bus/pci/drivers/igbvf");
    assert!(
        sysfs
            .iommu_group(addr("0000:01:10.2"))
            .unwrap()
            .is_some_and(|g| g != 3)
    );
    assert_eq!(sysfs.netdevs(addr("0000:01:10.2")).unwrap().len(), 1);
}
