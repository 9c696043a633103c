//! Device health beyond links, on the fake sysfs tree: a VF whose driver is unbound, and VFs
//! removed by lowering `sriov_numvfs`, turn unhealthy in ListAndWatch's list and healthy
//! again when they come back. The fake tree emits no uevents, so the test plays the kernel's
//! part and sends each one through a channel, the same [`UeventSource`] the socket is.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::*;
use futures::channel::mpsc;
use sriov_deviceplugin::Backend;
use sriov_selector_pools::{PoolManager, follow_uevents};
use sriov_uevent::{Notice, Uevent};

fn uevent(action: &str, subsystem: &str, name: &str, driver: Option<&str>) -> Notice {
    let mut raw =
        format!("{action}@/devices/pci0000:3a/0000:3a:00.0/{name}\0SUBSYSTEM={subsystem}\0");
    if let Some(d) = driver {
        raw.push_str(&format!("DRIVER={d}\0"));
    }
    Notice::Event(Uevent::parse(raw.as_bytes()).unwrap())
}

/// `(id, healthy)` of every device kubelet is shown.
fn listed(m: &PoolManager) -> Vec<(String, bool)> {
    m.pools()[0]
        .devices()
        .borrow()
        .iter()
        .map(|d| (d.id.clone(), d.healthy))
        .collect()
}

fn why(m: &PoolManager, id: &str) -> Option<String> {
    m.pools()[0]
        .members()
        .into_iter()
        .find(|p| p.device.id() == id)
        .and_then(|p| p.unhealthy)
}

/// Feeds `notice` and lets the follower's refresh run; returns how many refreshes it caused.
async fn send(
    tx: &mpsc::UnboundedSender<Notice>,
    refreshes: &AtomicUsize,
    notice: Notice,
) -> usize {
    let before = refreshes.load(Ordering::SeqCst);
    tx.unbounded_send(notice).unwrap();
    // The follower runs on this thread: yielding lets it take the notice.
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    refreshes.load(Ordering::SeqCst) - before
}

#[tokio::test(flavor = "current_thread")]
async fn unbound_drivers_and_removed_vfs_are_unhealthy_until_they_return() {
    let lab = Lab::new();
    let m = Arc::new(lab.manager(
        r#"{"resourceList":[{"resourceName":"x","selectors":{"pfNames":["ens785f0"]}}]}"#,
    ));
    let sysfs = lab.fake.sysfs();
    let all_healthy: Vec<(String, bool)> = X710_PORT0_VFS
        .iter()
        .map(|id| (id.to_string(), true))
        .collect();
    assert_eq!(listed(&m), all_healthy);

    let (tx, rx) = mpsc::unbounded();
    let refreshes = Arc::new(AtomicUsize::new(0));
    let follower = {
        let (m, refreshes) = (m.clone(), refreshes.clone());
        tokio::spawn(follow_uevents(rx, move || {
            refreshes.fetch_add(1, Ordering::SeqCst);
            m.refresh().unwrap();
        }))
    };

    // The driver lets go of a VF: unhealthy, and said why.
    let vf = X710_PORT0_VFS[1];
    sysfs.unbind(addr(vf)).unwrap();
    assert_eq!(
        send(&tx, &refreshes, uevent("unbind", "pci", vf, Some("iavf"))).await,
        1
    );
    let mut want = all_healthy.clone();
    want[1].1 = false;
    assert_eq!(listed(&m), want);
    assert_eq!(
        why(&m, vf).as_deref(),
        Some("no driver is bound to it (was iavf)")
    );

    // Events that cannot matter cause no rescan.
    assert_eq!(
        send(&tx, &refreshes, uevent("add", "module", "iavf", None)).await,
        0
    );
    assert_eq!(
        send(&tx, &refreshes, uevent("change", "net", "ens785f0", None)).await,
        0
    );

    // Bound again: healthy again.
    sysfs.bind(addr(vf), "iavf").unwrap();
    assert_eq!(
        send(&tx, &refreshes, uevent("bind", "pci", vf, Some("iavf"))).await,
        1
    );
    assert_eq!(listed(&m), all_healthy);
    assert_eq!(why(&m, vf), None);

    // sriov_numvfs lowered to 2: the last two VFs are gone, still listed, unhealthy.
    let pf = addr("0000:3b:00.0");
    sysfs.set_num_vfs(pf, 2).unwrap();
    assert_eq!(
        send(
            &tx,
            &refreshes,
            uevent("remove", "pci", X710_PORT0_VFS[3], None)
        )
        .await,
        1
    );
    let mut want = all_healthy.clone();
    want[2].1 = false;
    want[3].1 = false;
    assert_eq!(listed(&m), want);
    assert_eq!(
        why(&m, X710_PORT0_VFS[3]).as_deref(),
        Some("the device is gone")
    );

    // Events lost: everything is re-read. Raised back to 4: all healthy.
    sysfs.set_num_vfs(pf, 4).unwrap();
    assert_eq!(send(&tx, &refreshes, Notice::Lost).await, 1);
    assert_eq!(listed(&m), all_healthy);

    drop(tx);
    follower.await.unwrap();
}

#[test]
fn a_device_taken_by_another_pool_or_left_out_is_not_kept_as_unhealthy() {
    let lab = Lab::new();
    let m = lab.manager(
        r#"{"resourceList":[
            {"resourceName":"kernel","selectors":{"pfNames":["ens785f0"],"drivers":["iavf"]}},
            {"resourceName":"dpdk","selectors":{"drivers":["vfio-pci"]}}
        ]}"#,
    );
    let vf = X710_PORT0_VFS[0];
    lab.fake.sysfs().bind(addr(vf), "vfio-pci").unwrap();
    m.refresh().unwrap();
    let ids = |i: usize| -> Vec<String> {
        m.pools()[i]
            .devices()
            .borrow()
            .iter()
            .map(|d| d.id.clone())
            .collect()
    };
    assert!(!ids(0).contains(&vf.to_string()), "left the first pool");
    assert_eq!(ids(1), vec![vf.to_string()]);
    assert!(m.pools()[1].devices().borrow()[0].healthy);
}

#[test]
fn a_vf_held_by_a_pod_that_vanishes_stays_listed_unhealthy() {
    let lab = Lab::new();
    let m = lab
        .manager(r#"{"resourceList":[{"resourceName":"x","selectors":{"pfNames":["ens785f0"]}}]}"#);
    let pool = m.pools()[0].clone();
    let vf = X710_PORT0_VFS[3].to_string();
    pool.allocate(&[vec![vf.clone()]]).unwrap();
    lab.fake
        .sysfs()
        .set_num_vfs(addr("0000:3b:00.0"), 3)
        .unwrap();
    m.refresh().unwrap();
    let listed = pool.devices().borrow().clone();
    let gone = listed.iter().find(|d| d.id == vf).unwrap();
    assert!(!gone.healthy);
    assert_eq!(pool.allocated(), vec![vf]);
}

#[test]
fn a_device_kept_as_unhealthy_is_left_out_of_the_cdi_spec() {
    let lab = Lab::new();
    let m = lab.manager_with(
        r#"{"resourceList":[{"resourceName":"x","selectors":{"pfNames":["ens785f0"]}}]}"#,
        true,
        Arc::new(sriov_selector_pools::NoLinkHealth),
    );
    let spec_path = lab.cdi_dir().join("sriov-dp-intel.com-net-pci-x.json");
    let names = || -> Vec<String> {
        let spec: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&spec_path).unwrap()).unwrap();
        spec["devices"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["name"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(names(), X710_PORT0_VFS.to_vec());
    lab.fake.sysfs().unbind(addr(X710_PORT0_VFS[0])).unwrap();
    m.refresh().unwrap();
    assert_eq!(listed(&m).len(), 4, "still listed, unhealthy");
    assert_eq!(names(), X710_PORT0_VFS[1..].to_vec());
    lab.fake
        .sysfs()
        .bind(addr(X710_PORT0_VFS[0]), "iavf")
        .unwrap();
    m.refresh().unwrap();
    assert_eq!(names(), X710_PORT0_VFS.to_vec());
}
