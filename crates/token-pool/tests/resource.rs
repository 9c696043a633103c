#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The pool as kubelet's device-plugin backend.

use std::sync::Arc;

use sriov_deviceplugin::{AllocateError, Backend};
use sriov_pci_fake::{FakeSysfs, fixtures};
use sriov_token_pool::{FileStore, PfEntry, Pool, PoolResource, system_clock};

const A: &str = "worker.domain/10G";

fn pool() -> (Arc<Pool>, tempfile::TempDir, FakeSysfs) {
    let fake = fixtures::x710_2port(FakeSysfs::builder()).build().unwrap();
    let sysfs = fake.sysfs();
    let entries = ["0000:3b:00.0", "0000:3b:00.1"]
        .iter()
        .map(|a| PfEntry {
            pf: sysfs.physical_function(a.parse().unwrap()).unwrap(),
            names: vec![A.into()],
            vf_kernel_driver: "iavf".into(),
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let (pool, _) = Pool::open(
        entries,
        FileStore::in_dir(dir.path()).unwrap(),
        &sysfs,
        system_clock(),
    )
    .unwrap();
    (Arc::new(pool), dir, fake)
}

#[test]
fn allocate_puts_each_containers_tokens_in_its_env() {
    let (pool, _d, _f) = pool();
    let r = PoolResource::new(pool.clone(), A).unwrap();
    let ids: Vec<String> = r.devices().borrow().iter().map(|d| d.id.clone()).collect();
    assert_eq!(ids.len(), 8);
    let resp = r
        .allocate(&[vec![ids[0].clone(), ids[1].clone()], vec![ids[5].clone()]])
        .unwrap();
    assert_eq!(resp.len(), 2);
    assert_eq!(
        resp[0]
            .envs
            .get("NSM_SRIOV_TOKENS_worker.domain/10G")
            .unwrap(),
        &format!("{},{}", ids[0], ids[1])
    );
    assert_eq!(
        resp[1]
            .envs
            .get("NSM_SRIOV_TOKENS_worker.domain/10G")
            .unwrap(),
        &ids[5]
    );
    let mut held = r.allocated();
    held.sort();
    let mut want = vec![ids[0].clone(), ids[1].clone(), ids[5].clone()];
    want.sort();
    assert_eq!(held, want);
}

#[test]
fn unknown_ids_are_refused_and_exhaustion_is_unavailable() {
    let (pool, _d, _f) = pool();
    let r = PoolResource::new(pool.clone(), A).unwrap();
    assert!(matches!(
        r.allocate(&[vec!["sriov-x".into()]]),
        Err(AllocateError::UnknownDevice { .. })
    ));
    assert!(PoolResource::new(pool.clone(), "other/name").is_none());
}

#[test]
fn list_and_watch_sees_changes_from_the_pool() {
    let (pool, _d, _f) = pool();
    let r = PoolResource::new(pool.clone(), A).unwrap();
    let mut rx = r.devices();
    rx.mark_unchanged();
    let ids: Vec<String> = rx.borrow().iter().map(|d| d.id.clone()).collect();
    r.allocate(std::slice::from_ref(&ids)).unwrap();
    // Allocating every token changes nothing kubelet sees (all stay healthy)...
    assert!(!rx.has_changed().unwrap());
    r.release(&ids);
    assert!(r.allocated().is_empty());
}
