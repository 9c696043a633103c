//! The plugin's lifecycle end to end, against a fake kubelet over real
//! unix sockets: each test drives one path through the states
//! (Binding, Registering, WaitingForKubelet, Serving, Stopping).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use sriov_api::kubelet::deviceplugin::v1beta1 as dp;
use sriov_deviceplugin::RegistrationMode;

/// The plugin answers on its socket.
async fn answers(h: &Harness) {
    let mut client = plugin_client(&h.socket()).await;
    client
        .get_device_plugin_options(dp::Empty {})
        .await
        .unwrap();
}

#[tokio::test]
async fn start_ends_registered_and_stays_so() {
    let root = tempfile::tempdir().unwrap();
    let cfg = config(root.path(), RegistrationMode::Kubelet);
    let kubelet = start_kubelet(&cfg.device_plugin_dir);
    let h = start_plugin(root, cfg, MemBackend::new(two_vfs()));
    registered(&h, &kubelet, 1).await;
    answers(&h).await;

    // Serving is at rest: past the longest retry delay, nothing is
    // registered again.
    tokio::time::sleep(h.cfg.retry_max * 2).await;
    assert_eq!(kubelet.registrations().len(), 1);
    assert_eq!(*h.registrations.borrow(), 1);
    h.stop().await;
}

/// Readiness follows kubelet: registered, not once kubelet's socket is
/// gone, registered again when kubelet is back.
#[tokio::test]
async fn registered_turns_false_while_kubelet_is_down_and_true_when_it_is_back() {
    let root = tempfile::tempdir().unwrap();
    let cfg = config(root.path(), RegistrationMode::Kubelet);
    let kubelet = start_kubelet(&cfg.device_plugin_dir);
    let h = start_plugin(root, cfg, MemBackend::new(two_vfs()));
    let mut ready = h.registered.clone();
    let within = Duration::from_secs(20);
    tokio::time::timeout(within, ready.wait_for(|r| *r))
        .await
        .unwrap()
        .unwrap();

    kubelet.stop_registration().await;
    tokio::time::timeout(within, ready.wait_for(|r| !*r))
        .await
        .expect("not registered once kubelet.sock is gone")
        .unwrap();

    kubelet.start_registration().unwrap();
    tokio::time::timeout(within, ready.wait_for(|r| *r))
        .await
        .expect("registered again when kubelet is back")
        .unwrap();
    registered(&h, &kubelet, 2).await;
    h.stop().await;
    assert!(!*ready.borrow());
}

#[tokio::test]
async fn kubelet_restart_ends_registered_again_on_a_new_socket() {
    let root = tempfile::tempdir().unwrap();
    let cfg = config(root.path(), RegistrationMode::Kubelet);
    let kubelet = start_kubelet(&cfg.device_plugin_dir);
    let h = start_plugin(root, cfg, MemBackend::new(two_vfs()));
    registered(&h, &kubelet, 1).await;

    kubelet.restart().unwrap();
    registered(&h, &kubelet, 2).await;
    answers(&h).await;
    h.stop().await;
}

/// Kubelet restarts while our `Register` is in flight, and the old kubelet
/// never answers it: the call is abandoned for one to the new kubelet,
/// on a new socket, without waiting for `call_timeout`.
#[tokio::test]
async fn kubelet_restart_during_registration_registers_with_the_new_kubelet() {
    let root = tempfile::tempdir().unwrap();
    let mut cfg = config(root.path(), RegistrationMode::Kubelet);
    // Far longer than the test's patience: the call must be abandoned.
    cfg.call_timeout = Duration::from_secs(3600);
    // Dropped, not stopped, at the end: stopping would delete the new
    // kubelet's socket, which has the same path.
    let old = start_kubelet(&cfg.device_plugin_dir);
    old.hang_registrations(true);
    let h = start_plugin(root, cfg, MemBackend::new(two_vfs()));
    eventually("a Register call held by the old kubelet", || {
        old.register_calls() > 0
    })
    .await;

    // What kubelet does when it starts: every plugin socket in the
    // directory is deleted, and a new kubelet.sock appears.
    std::fs::remove_file(h.socket()).unwrap();
    let new = start_kubelet(&h.dp_dir());
    registered(&h, &new, 1).await;
    assert!(old.registrations().is_empty());
    answers(&h).await;
    h.stop().await;
}

#[tokio::test]
async fn stop_while_waiting_for_kubelet_removes_the_socket() {
    let root = tempfile::tempdir().unwrap();
    let mut cfg = config(root.path(), RegistrationMode::Kubelet);
    // After the first failed Register, the next is an hour away: only
    // stopping ends the wait.
    cfg.retry_initial = Duration::from_secs(3600);
    cfg.retry_max = Duration::from_secs(3600);
    let h = start_plugin(root, cfg, MemBackend::new(two_vfs()));
    let sock = h.socket();
    eventually("plugin socket", || sock.exists()).await;
    // No kubelet.sock: the Register fails at once.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(*h.registrations.borrow(), 0);

    let _root = tokio::time::timeout(Duration::from_secs(20), h.stop())
        .await
        .expect("plugin stopped while waiting for kubelet");
    assert!(!sock.exists(), "{} left behind", sock.display());
}

#[tokio::test]
async fn stop_while_serving_ends_streams_and_removes_the_socket() {
    let root = tempfile::tempdir().unwrap();
    let cfg = config(root.path(), RegistrationMode::Kubelet);
    let kubelet = start_kubelet(&cfg.device_plugin_dir);
    let h = start_plugin(root, cfg, MemBackend::new(two_vfs()));
    registered(&h, &kubelet, 1).await;
    let sock = h.socket();
    let mut client = plugin_client(&sock).await;
    let mut stream = client
        .list_and_watch(dp::Empty {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stream.message().await.unwrap().unwrap().devices.len(), 2);

    let _root = tokio::time::timeout(Duration::from_secs(20), h.stop())
        .await
        .expect("plugin stopped while serving");
    assert!(!sock.exists(), "{} left behind", sock.display());
    // The stream ends, cleanly or not, instead of hanging.
    let end = tokio::time::timeout(Duration::from_secs(20), stream.message())
        .await
        .expect("ListAndWatch ended");
    assert!(!matches!(end, Ok(Some(_))), "{end:?}");
}
