#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The committed fixtures are exactly what their builders produce.

use std::collections::BTreeMap;
use std::path::Path;

use sriov_pci_fake::{fixtures, testdata_sysfs};

#[derive(Debug, PartialEq, Eq)]
enum Entry {
    Dir,
    File(Vec<u8>),
    Link(String),
}

fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, Entry>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let p = e.path();
        let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
        let ft = e.file_type().unwrap();
        if ft.is_symlink() {
            out.insert(
                rel,
                Entry::Link(
                    std::fs::read_link(&p)
                        .unwrap()
                        .to_string_lossy()
                        .into_owned(),
                ),
            );
        } else if ft.is_dir() {
            out.insert(rel, Entry::Dir);
            walk(root, &p, out);
        } else {
            out.insert(rel, Entry::File(std::fs::read(&p).unwrap()));
        }
    }
}

#[test]
fn shipped_fixtures_match_their_builders() {
    for name in fixtures::SHIPPED {
        let fresh = tempfile::tempdir().unwrap();
        fixtures::by_name(name)
            .unwrap()
            .build_at(fresh.path())
            .unwrap();
        let (mut want, mut have) = (BTreeMap::new(), BTreeMap::new());
        walk(fresh.path(), fresh.path(), &mut want);
        let shipped = testdata_sysfs().join(name);
        walk(&shipped, &shipped, &mut have);
        assert!(want.len() > 50, "{name}: suspiciously small tree");
        assert_eq!(
            want, have,
            "testdata/sysfs/{name} drifted: run `cargo run -p sriov-pci-fake --bin write-fixtures`"
        );
    }
}

#[test]
fn capture_of_a_tree_reproduces_what_the_pci_crate_reads() {
    let src = fixtures::x710_2port(sriov_pci_fake::TreeBuilder::new())
        .build()
        .unwrap();
    let dest = tempfile::tempdir().unwrap();
    let pf = "0000:3b:00.1".parse().unwrap();
    sriov_pci_fake::capture(src.root(), &[pf], &["vfio-pci"], dest.path()).unwrap();
    let copy = sriov_pci_fake::FakeSysfs::attach(dest.path()).unwrap();
    let a = src.sysfs().physical_function(pf).unwrap();
    let b = copy.sysfs().physical_function(pf).unwrap();
    assert_eq!(a, b);
    // The copy is a working fake: its kernel can rebind a captured VF.
    let vf = b.vfs[0].address;
    copy.sysfs().bind(vf, "vfio-pci").unwrap();
    copy.sysfs().restore_driver(vf, Some("iavf")).unwrap();
    assert_eq!(copy.sysfs().netdevs(vf).unwrap(), b.vfs[0].netdevs);
}
