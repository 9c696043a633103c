//! The pod-resources watcher against a fake kubelet pod-resources server.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use sriov_deviceplugin::{Backend, PodResourcesClient, PodResourcesWatcher};

#[tokio::test]
async fn devices_no_pod_holds_are_released_after_two_polls() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("kubelet.sock");
    let lister = PodLister::default();
    let _server = start_pod_resources(&sock, &lister);

    let backend = MemBackend::new(vec![vf("a", "pf", 0), vf("b", "pf", 0), vf("c", "pf", 0)]);
    backend
        .allocate(&[vec!["a".into()], vec!["b".into()]])
        .unwrap();
    lister.set(&[("pod-1", &["a"]), ("pod-2", &["b"])]);

    let mut watcher = PodResourcesWatcher::new(&sock, Duration::from_secs(3600))
        .watch(RESOURCE, backend.clone() as Arc<dyn Backend>);
    assert!(watcher.poll_once().await.unwrap().is_empty());

    // pod-2 ends: the first poll only suspects b, the second releases it.
    lister.set(&[("pod-1", &["a"])]);
    assert!(watcher.poll_once().await.unwrap().is_empty());
    assert_eq!(backend.allocated(), vec!["a", "b"]);
    let released = watcher.poll_once().await.unwrap();
    assert_eq!(released[RESOURCE], vec!["b"]);
    assert_eq!(backend.allocated(), vec!["a"]);
    assert_eq!(*backend.released.lock().unwrap(), vec!["b"]);
}

#[tokio::test]
async fn kubelet_unreachable_releases_nothing_and_restarts_the_count() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("kubelet.sock");
    let backend = MemBackend::new(vec![vf("a", "pf", 0)]);
    backend.allocate(&[vec!["a".into()]]).unwrap();
    let lister = PodLister::default();
    let server = start_pod_resources(&sock, &lister);
    let mut watcher = PodResourcesWatcher::new(&sock, Duration::from_secs(3600))
        .watch(RESOURCE, backend.clone() as Arc<dyn Backend>);
    assert!(watcher.poll_once().await.unwrap().is_empty());

    server.stop().await;
    assert!(watcher.poll_once().await.is_err());
    let _server = start_pod_resources(&sock, &lister);
    // The failed poll broke the chain: one more unheld poll is not enough.
    assert!(watcher.poll_once().await.unwrap().is_empty());
    assert_eq!(backend.allocated(), vec!["a"]);
    assert_eq!(watcher.poll_once().await.unwrap()[RESOURCE], vec!["a"]);
}

#[tokio::test]
async fn get_reports_one_pods_devices_and_nothing_for_a_gone_pod() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("kubelet.sock");
    let lister = PodLister::default();
    lister.set(&[("pod-1", &["a", "b"])]);
    let _server = start_pod_resources(&sock, &lister);
    let mut client = PodResourcesClient::connect(&sock).await.unwrap();
    let held = client.pod_devices("pod-1", "default").await.unwrap();
    let mut ids: Vec<_> = held[RESOURCE].iter().cloned().collect();
    ids.sort();
    assert_eq!(ids, vec!["a", "b"]);
    assert!(
        client
            .pod_devices("gone", "default")
            .await
            .unwrap()
            .is_empty()
    );
    let all = client.held_devices().await.unwrap();
    assert_eq!(all[RESOURCE].len(), 2);
}
