#![allow(clippy::unwrap_used, clippy::expect_used)]
//! VF count changes and driver binding against the fake kernel.

use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use sriov_pci::{AttrWriter, PciAddress, PciError, Sysfs};
use sriov_pci_fake::{FakeSysfs, fixtures, testdata_sysfs};

fn addr(s: &str) -> PciAddress {
    s.parse().unwrap()
}

fn igb() -> FakeSysfs {
    fixtures::igb_82576(FakeSysfs::builder()).build().unwrap()
}

fn written(fake: &FakeSysfs) -> Vec<(String, String)> {
    fake.kernel()
        .writes()
        .into_iter()
        .map(|w| {
            let name = w.path.file_name().unwrap().to_string_lossy().into_owned();
            (name, w.value)
        })
        .collect()
}

#[test]
fn set_num_vfs_creates_vfs_bound_to_their_driver() {
    let fake = igb();
    let sysfs = fake.sysfs();
    let pf = addr("0000:01:00.0");
    let vfs = sysfs.set_num_vfs(pf, 7).unwrap();
    assert_eq!(vfs.len(), 7);
    assert_eq!(vfs[6].address, addr("0000:01:11.4"));
    assert_eq!(sysfs.num_vfs(pf).unwrap(), 7);
    for vf in &vfs {
        assert_eq!(sysfs.driver(vf.address).unwrap().as_deref(), Some("igbvf"));
        assert_eq!(sysfs.physfn(vf.address).unwrap(), Some(pf));
    }
}

#[test]
fn changing_a_nonzero_vf_count_goes_through_zero() {
    let fake = igb();
    let sysfs = fake.sysfs();
    let pf = addr("0000:01:00.0");
    sysfs.set_num_vfs(pf, 2).unwrap();
    sysfs.set_num_vfs(pf, 5).unwrap();
    assert_eq!(
        written(&fake),
        [
            ("sriov_numvfs".to_string(), "2".to_string()),
            ("sriov_numvfs".to_string(), "0".to_string()),
            ("sriov_numvfs".to_string(), "5".to_string())
        ]
    );
    assert_eq!(sysfs.vfs(pf).unwrap().len(), 5);
}

#[test]
fn the_fake_kernel_refuses_what_the_kernel_refuses() {
    let fake = igb();
    let sysfs = fake.sysfs();
    let pf = addr("0000:01:00.0");
    sysfs.set_num_vfs(pf, 2).unwrap();
    let numvfs = sysfs.device_dir(pf).join("sriov_numvfs");
    let k = fake.kernel();
    let code = |r: io::Result<()>| r.unwrap_err().raw_os_error().unwrap();
    assert_eq!(
        code(k.write(&numvfs, "3")),
        16,
        "EBUSY between non-zero counts"
    );
    assert_eq!(
        code(k.write(&numvfs, "8")),
        34,
        "ERANGE above sriov_totalvfs"
    );
    assert_eq!(code(k.write(&numvfs, "two")), 22, "EINVAL for garbage");
    let bind = sysfs.drivers_dir().join("igb/bind");
    assert_eq!(
        code(k.write(&bind, "0000:01:10.0")),
        19,
        "ENODEV: igb does not claim a VF"
    );
    let bind = sysfs.drivers_dir().join("igbvf/bind");
    assert_eq!(
        code(k.write(&bind, "0000:01:10.0")),
        16,
        "EBUSY: already bound"
    );
}

#[test]
fn a_pf_without_driver_cannot_enable_vfs() {
    let fake = igb();
    let sysfs = fake.sysfs();
    let pf = addr("0000:01:00.0");
    sysfs.unbind(pf).unwrap();
    let err = sysfs.set_num_vfs(pf, 1).unwrap_err();
    match &err {
        PciError::Write {
            path,
            value,
            cause: source,
        } => {
            assert!(path.ends_with("0000:01:00.0/sriov_numvfs"));
            assert_eq!(value, "1");
            assert_eq!(source.raw_os_error(), Some(2));
        }
        other => panic!("unexpected {other}"),
    }
}

#[test]
fn too_many_vfs_fails_before_writing_anything() {
    let fake = igb();
    let err = fake
        .sysfs()
        .set_num_vfs(addr("0000:01:00.0"), 8)
        .unwrap_err();
    assert!(
        matches!(
            err,
            PciError::TooManyVfs {
                requested: 8,
                total: 7,
                ..
            }
        ),
        "{err}"
    );
    assert!(fake.kernel().writes().is_empty());
}

#[test]
fn asking_for_the_current_count_writes_nothing() {
    let fake = FakeSysfs::copy_of(testdata_sysfs().join("x710-2port")).unwrap();
    let vfs = fake.sysfs().set_num_vfs(addr("3b:00.0"), 4).unwrap();
    assert_eq!(vfs.len(), 4);
    assert!(fake.kernel().writes().is_empty());
}

#[test]
fn zero_vfs_removes_every_vf_and_its_entries() {
    let fake = FakeSysfs::copy_of(testdata_sysfs().join("x710-2port")).unwrap();
    let sysfs = fake.sysfs();
    let pf = addr("3b:00.0");
    let before = sysfs.vfs(pf).unwrap();
    sysfs.set_num_vfs(pf, 0).unwrap();
    assert!(sysfs.vfs(pf).unwrap().is_empty());
    for vf in before {
        assert!(!sysfs.exists(vf.address));
        assert!(
            !sysfs
                .drivers_dir()
                .join("iavf")
                .join(vf.address.to_string())
                .exists()
        );
    }
}

#[test]
fn bind_to_vfio_pci_then_restore_the_original_driver() {
    let fake = FakeSysfs::copy_of(testdata_sysfs().join("x710-2port")).unwrap();
    let sysfs = fake.sysfs();
    let vf = addr("3b:02.1");
    assert_eq!(sysfs.netdevs(vf).unwrap().len(), 1);
    let previous = sysfs.bind(vf, "vfio-pci").unwrap();
    assert_eq!(previous.as_deref(), Some("iavf"));
    assert_eq!(sysfs.driver(vf).unwrap().as_deref(), Some("vfio-pci"));
    assert!(
        sysfs.netdevs(vf).unwrap().is_empty(),
        "vfio-pci has no netdev"
    );
    let names: Vec<String> = written(&fake).into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["unbind", "driver_override", "drivers_probe"]);

    sysfs.restore_driver(vf, previous.as_deref()).unwrap();
    assert_eq!(sysfs.driver(vf).unwrap().as_deref(), Some("iavf"));
    assert_eq!(sysfs.netdevs(vf).unwrap().len(), 1);
    let over = std::fs::read_to_string(sysfs.device_dir(vf).join("driver_override")).unwrap();
    assert_eq!(over.trim(), "(null)");
}

#[test]
fn binding_to_the_current_driver_writes_nothing() {
    let fake = FakeSysfs::copy_of(testdata_sysfs().join("x710-2port")).unwrap();
    let prev = fake.sysfs().bind(addr("3b:02.0"), "iavf").unwrap();
    assert_eq!(prev.as_deref(), Some("iavf"));
    assert!(fake.kernel().writes().is_empty());
}

#[test]
fn binding_to_a_driver_that_is_not_loaded_names_it() {
    let fake = FakeSysfs::copy_of(testdata_sysfs().join("x710-2port")).unwrap();
    let err = fake.sysfs().bind(addr("3b:02.0"), "igb_uio").unwrap_err();
    assert!(matches!(err, PciError::NoDriver { .. }));
    assert!(err.to_string().contains("bus/pci/drivers/igb_uio"), "{err}");
    assert!(fake.kernel().writes().is_empty());
    let err = fake.sysfs().bind(addr("3b:02.0"), "../iavf").unwrap_err();
    assert!(matches!(err, PciError::InvalidDriverName(_)));
}

#[test]
fn unbinding_an_unbound_device_is_a_no_op_and_restore_to_none_unbinds() {
    let fake = FakeSysfs::copy_of(testdata_sysfs().join("node")).unwrap();
    let sysfs = fake.sysfs();
    assert_eq!(sysfs.unbind(addr("00:14.3")).unwrap(), None);
    sysfs.restore_driver(addr("00:1f.6"), None).unwrap();
    assert_eq!(sysfs.driver(addr("00:1f.6")).unwrap(), None);
}

/// A kernel that accepts every write and never acts on it.
#[derive(Debug)]
struct DeafKernel;

impl AttrWriter for DeafKernel {
    fn write(&self, _: &Path, _: &str) -> io::Result<()> {
        Ok(())
    }
}

#[test]
fn a_driver_that_never_binds_times_out_saying_what_was_seen() {
    let fake = FakeSysfs::copy_of(testdata_sysfs().join("node")).unwrap();
    let sysfs = Sysfs::under_root(fake.root())
        .with_writer(Arc::new(DeafKernel))
        .with_timeout(Duration::from_millis(30));
    let err = sysfs.bind(addr("00:14.3"), "vfio-pci").unwrap_err();
    match &err {
        PciError::Timeout {
            address,
            expected,
            saw,
            ..
        } => {
            assert_eq!(*address, addr("00:14.3"));
            assert_eq!(expected, "driver vfio-pci");
            assert_eq!(saw, "no driver");
        }
        other => panic!("unexpected {other}"),
    }
    assert!(err.to_string().contains("0000:00:14.3/driver"), "{err}");
}

#[test]
fn every_shipped_fixture_supports_the_full_vf_lifecycle() {
    // Runs on every tree under testdata/sysfs, including ones captured from
    // a real kernel in the VM test, so the fake and reality stay in step.
    for entry in std::fs::read_dir(testdata_sysfs()).unwrap() {
        let dir = entry.unwrap().path();
        if !dir.join("fake-kernel.json").exists() {
            continue;
        }
        let fake = FakeSysfs::copy_of(&dir).unwrap();
        let sysfs = fake.sysfs();
        let inv = sysfs.discover_all().unwrap();
        assert!(!inv.physical_functions.is_empty(), "{}", dir.display());
        for pf in inv.physical_functions {
            let a = pf.device.address;
            let total = pf.total_vfs.min(8);
            let offset: u16 = std::fs::read_to_string(sysfs.device_dir(a).join("sriov_offset"))
                .unwrap()
                .trim()
                .parse()
                .unwrap();
            let stride: u16 = std::fs::read_to_string(sysfs.device_dir(a).join("sriov_stride"))
                .unwrap()
                .trim()
                .parse()
                .unwrap();
            let vfs = sysfs.set_num_vfs(a, total).unwrap();
            assert_eq!(vfs.len() as u32, total, "{}", dir.display());
            for vf in &vfs {
                let rid = a.routing_id() + offset + stride * vf.index as u16;
                assert_eq!(vf.address, a.with_routing_id(rid));
                assert_eq!(sysfs.vf_index(a, vf.address).unwrap(), Some(vf.index));
            }
            assert_eq!(
                sysfs.vf_index(a, a).unwrap(),
                None,
                "a PF is not its own VF"
            );
            let past = a.with_routing_id(a.routing_id() + offset + stride * total as u16);
            assert_eq!(sysfs.vf_index(a, past).unwrap(), None, "{past}: no such VF");
            let first = vfs[0].address;
            let prev = sysfs.bind(first, "vfio-pci").unwrap();
            sysfs.restore_driver(first, prev.as_deref()).unwrap();
            assert_eq!(sysfs.driver(first).unwrap(), prev);
            sysfs.set_num_vfs(a, 0).unwrap();
            assert!(sysfs.vfs(a).unwrap().is_empty());
        }
    }
}

#[test]
fn vfs_and_a_vf_index_are_found_without_the_offset_and_stride_too() {
    let fake = igb();
    let sysfs = fake.sysfs();
    let pf = sysfs.discover_all().unwrap().physical_functions[0]
        .device
        .address;
    let vfs = sysfs.set_num_vfs(pf, 4).unwrap();
    std::fs::remove_file(sysfs.device_dir(pf).join("sriov_stride")).unwrap();
    assert_eq!(sysfs.vfs(pf).unwrap(), vfs, "listed from the links instead");
    for vf in &vfs {
        assert_eq!(sysfs.vf_index(pf, vf.address).unwrap(), Some(vf.index));
    }
    assert_eq!(sysfs.vf_index(pf, pf).unwrap(), None);
}

#[test]
fn vfs_worked_out_from_the_stride_are_checked_against_the_links() {
    let fake = igb();
    let sysfs = fake.sysfs();
    let pf = addr("0000:01:00.0");
    let vfs = sysfs.set_num_vfs(pf, 7).unwrap();
    let before = sysfs.files_read();
    assert_eq!(sysfs.vfs(pf).unwrap(), vfs);
    assert!(
        sysfs.files_read() - before < 7,
        "fewer reads than one per VF: {}",
        sysfs.files_read() - before
    );
    // A stride the links do not bear out is not trusted.
    std::fs::write(sysfs.device_dir(pf).join("sriov_stride"), "1\n").unwrap();
    assert_eq!(sysfs.vfs(pf).unwrap(), vfs);
}
