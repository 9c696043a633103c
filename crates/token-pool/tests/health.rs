#![allow(clippy::unwrap_used, clippy::expect_used)]
//! VF health in the token pool: what kubelet is shown per name, and which VF a Request gets.

use std::collections::BTreeMap;

use sriov_pci::PciAddress;
use sriov_pci_fake::{FakeSysfs, fixtures};
use sriov_token_pool::{DriverKind, FileStore, PfEntry, Pool, PoolError, system_clock};

const A: &str = "worker.domain/10G";
const B: &str = "worker.domain/fast";

fn vf(s: &str) -> PciAddress {
    s.parse().unwrap()
}

/// One X710 port (VFs 3b:02.0-3) serving `names`, and its state dir.
fn open(names: &[&str]) -> (Pool, FakeSysfs, tempfile::TempDir) {
    let fake = fixtures::x710_2port(FakeSysfs::builder()).build().unwrap();
    let state = tempfile::tempdir().unwrap();
    let sysfs = fake.sysfs();
    let entries = vec![PfEntry {
        pf: sysfs.physical_function(vf("0000:3b:00.0")).unwrap(),
        names: names.iter().map(|s| s.to_string()).collect(),
        vf_kernel_driver: "iavf".into(),
    }];
    let (pool, _) = Pool::open(
        entries,
        FileStore::in_dir(state.path()).unwrap(),
        &sysfs,
        system_clock(),
    )
    .unwrap();
    (pool, fake, state)
}

fn unhealthy(vfs: &[&str]) -> BTreeMap<PciAddress, String> {
    vfs.iter()
        .map(|v| (vf(v), "link down".to_string()))
        .collect()
}

/// `(healthy, unhealthy)` counts of `name`'s list.
fn counts(pool: &Pool, name: &str) -> (usize, usize) {
    let list = pool.devices(name).unwrap().borrow().clone();
    let healthy = list.iter().filter(|d| d.healthy).count();
    (healthy, list.len() - healthy)
}

fn healthy_of(pool: &Pool, name: &str, id: &str) -> bool {
    let list = pool.devices(name).unwrap().borrow().clone();
    list.iter().find(|d| d.id == id).unwrap().healthy
}

#[test]
fn a_name_advertises_as_many_healthy_free_tokens_as_healthy_free_vfs() {
    let (pool, _fake, _state) = open(&[A]);
    let tokens: Vec<String> = pool.tokens().unwrap().into_iter().map(|t| t.id).collect();
    assert_eq!(counts(&pool, A), (4, 0));

    // One VF broken: one token fewer to hand out.
    assert!(
        pool.set_unhealthy_vfs(unhealthy(&["0000:3b:02.0"]))
            .unwrap()
    );
    assert!(
        !pool
            .set_unhealthy_vfs(unhealthy(&["0000:3b:02.0"]))
            .unwrap(),
        "no change"
    );
    assert_eq!(counts(&pool, A), (3, 1));

    // A Request skips it.
    pool.allocate(A, &[tokens[0].clone()]).unwrap();
    let lease = pool
        .use_token(&tokens[0], DriverKind::Kernel, "c1", u64::MAX)
        .unwrap();
    assert_eq!(lease.vf, vf("0000:3b:02.1"));
    assert_eq!(counts(&pool, A), (3, 1));
    assert!(healthy_of(&pool, A, &tokens[0]));

    // The VF in use breaks: its token turns unhealthy; the free ones follow the two VFs left.
    pool.set_unhealthy_vfs(unhealthy(&["0000:3b:02.0", "0000:3b:02.1"]))
        .unwrap();
    assert!(!healthy_of(&pool, A, &tokens[0]));
    assert_eq!(counts(&pool, A), (2, 2));

    // A held token without a VF comes before free ones.
    pool.allocate(A, &[tokens[1].clone()]).unwrap();
    assert!(healthy_of(&pool, A, &tokens[1]));
    assert_eq!(counts(&pool, A), (2, 2));

    // The PF's link goes down: every VF is unhealthy, nothing is advertised, nothing handed out.
    pool.set_unhealthy_vfs(unhealthy(&[
        "0000:3b:02.0",
        "0000:3b:02.1",
        "0000:3b:02.2",
        "0000:3b:02.3",
    ]))
    .unwrap();
    assert_eq!(counts(&pool, A), (0, 4));
    let err = pool
        .use_token(&tokens[1], DriverKind::Kernel, "c2", u64::MAX)
        .unwrap_err();
    assert!(
        matches!(&err, PoolError::Exhausted { reason, .. } if reason.ends_with(", 4 unhealthy")),
        "{err}"
    );

    // Back up: everything as before the PF went down, the in-use token healthy again.
    pool.set_unhealthy_vfs(BTreeMap::new()).unwrap();
    assert_eq!(counts(&pool, A), (4, 0));
    assert!(pool.unhealthy_vfs().is_empty());
    let lease = pool
        .use_token(&tokens[1], DriverKind::Kernel, "c2", u64::MAX)
        .unwrap();
    assert_eq!(lease.vf, vf("0000:3b:02.0"));
}

#[test]
fn names_sharing_a_pf_share_its_healthy_vfs() {
    let (pool, _fake, _state) = open(&[A, B]);
    pool.set_unhealthy_vfs(unhealthy(&["0000:3b:02.2", "0000:3b:02.3"]))
        .unwrap();
    assert_eq!(counts(&pool, A), (2, 2));
    assert_eq!(counts(&pool, B), (2, 2));
    let a = pool
        .tokens()
        .unwrap()
        .into_iter()
        .find(|t| t.name == A)
        .unwrap()
        .id;
    pool.allocate(A, &[a]).unwrap();
    // One of the two healthy VFs is held for A's pod: one left for either name.
    assert_eq!(counts(&pool, A), (2, 2));
    assert_eq!(counts(&pool, B), (1, 3));
}
