//! The pod-resources watcher against a fake kubelet pod-resources server.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use sriov_deviceplugin::{Backend, PodResourcesClient, PodResourcesWatcher};

/// A fake kubelet whose pod-resources socket is `<dir>/kubelet.sock`.
fn start_pod_resources(dir: &tempfile::TempDir) -> FakeKubelet {
    FakeKubelet::start(&dir.path().join("device-plugins"), dir.path()).unwrap()
}

fn ids(ids: &[&str]) -> Vec<String> {
    ids.iter().map(|s| s.to_string()).collect()
}

#[tokio::test]
async fn devices_no_pod_holds_are_released_after_two_polls() {
    let dir = tempfile::tempdir().unwrap();
    let kubelet = start_pod_resources(&dir);
    let sock = kubelet.pod_resources_socket();

    let backend = MemBackend::new(vec![vf("a", "pf", 0), vf("b", "pf", 0), vf("c", "pf", 0)]);
    backend
        .allocate(&[vec!["a".into()], vec!["b".into()]])
        .unwrap();
    kubelet.set_pod("pod-1", RESOURCE, &ids(&["a"]));
    kubelet.set_pod("pod-2", RESOURCE, &ids(&["b"]));

    let mut watcher = PodResourcesWatcher::new(&sock, Duration::from_secs(3600))
        .watch(RESOURCE, backend.clone() as Arc<dyn Backend>);
    assert!(watcher.poll_once().await.unwrap().is_empty());

    // pod-2 ends: the first poll only suspects b, the second releases it.
    kubelet.remove_pod("pod-2");
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
    let backend = MemBackend::new(vec![vf("a", "pf", 0)]);
    backend.allocate(&[vec!["a".into()]]).unwrap();
    let kubelet = start_pod_resources(&dir);
    let sock = kubelet.pod_resources_socket();
    let mut watcher = PodResourcesWatcher::new(&sock, Duration::from_secs(3600))
        .watch(RESOURCE, backend.clone() as Arc<dyn Backend>);
    assert!(watcher.poll_once().await.unwrap().is_empty());

    kubelet.stop_pod_resources().await;
    assert!(watcher.poll_once().await.is_err());
    kubelet.start_pod_resources().unwrap();
    // The failed poll broke the chain: one more unheld poll is not enough.
    assert!(watcher.poll_once().await.unwrap().is_empty());
    assert_eq!(backend.allocated(), vec!["a"]);
    assert_eq!(watcher.poll_once().await.unwrap()[RESOURCE], vec!["a"]);
}

#[tokio::test]
async fn get_reports_one_pods_devices_and_nothing_for_a_gone_pod() {
    let dir = tempfile::tempdir().unwrap();
    let kubelet = start_pod_resources(&dir);
    kubelet.set_pod("pod-1", RESOURCE, &ids(&["a", "b"]));
    let sock = kubelet.pod_resources_socket();
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
