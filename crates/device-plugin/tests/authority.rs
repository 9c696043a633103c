//! Both `:authority` forms kubelets send reach the handlers: `localhost`
//! (kubelet ≥ 1.26, and tonic's own client) and the socket path (older
//! kubelets, grpc-go dialling a bare path).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;

use common::*;
use sriov_api::kubelet::deviceplugin::v1beta1 as dp;
use sriov_api::prost::Message;
use sriov_authority::testing::{self, Answer};
use sriov_deviceplugin::RegistrationMode;

async fn raw_call(socket: &Path, authority: &str, path: &str, msg: &[u8]) -> Answer {
    testing::raw_call(socket, authority, path, msg)
        .await
        .unwrap()
}

async fn options_via(authority_of: impl Fn(&Path) -> String) {
    let root = tempfile::tempdir().unwrap();
    let cfg = config(root.path(), RegistrationMode::Kubelet);
    let kubelet = start_kubelet(&cfg.device_plugin_dir);
    let h = start_plugin(root, cfg, MemBackend::new(vec![vf("a", "pf", 0)]));
    eventually("registration", || !kubelet.registrations().is_empty()).await;

    let sock = h.socket();
    let a = raw_call(
        &sock,
        &authority_of(&sock),
        "/v1beta1.DevicePlugin/GetDevicePluginOptions",
        &dp::Empty {}.encode_to_vec(),
    )
    .await;
    assert_eq!(a.reset, None, "stream was reset");
    assert_eq!(a.header(":status"), Some(&b"200"[..]));
    assert_eq!(a.header("grpc-status"), Some(&b"0"[..]));
    let opts = dp::DevicePluginOptions::decode(a.message().unwrap()).unwrap();
    assert!(opts.get_preferred_allocation_available);
    h.stop().await;
}

#[tokio::test]
async fn localhost_authority_is_served() {
    options_via(|_| "localhost".to_string()).await;
}

#[tokio::test]
async fn socket_path_authority_from_old_kubelets_is_served() {
    options_via(|sock| sock.to_string_lossy().into_owned()).await;
}

/// The control: a plain tonic server (our fake kubelet's, no relay) resets
/// a stream whose `:authority` is a socket path. This is the failure the
/// relay exists for; if h2 ever accepts such requests, this test says so.
#[tokio::test]
async fn without_the_relay_h2_resets_a_socket_path_authority() {
    let dir = tempfile::tempdir().unwrap();
    let kubelet = start_kubelet(&dir.path().join("device-plugins"));
    let sock = kubelet.registration_socket();
    let req = dp::RegisterRequest {
        version: "v1beta1".into(),
        ..Default::default()
    };
    let a = raw_call(
        &sock,
        &sock.to_string_lossy(),
        "/v1beta1.Registration/Register",
        &req.encode_to_vec(),
    )
    .await;
    assert_eq!(a.reset, Some(1), "expected RST_STREAM(PROTOCOL_ERROR)");
    assert!(kubelet.registrations().is_empty());

    let ok = raw_call(
        &sock,
        "localhost",
        "/v1beta1.Registration/Register",
        &req.encode_to_vec(),
    )
    .await;
    assert_eq!(ok.header("grpc-status"), Some(&b"0"[..]));
    assert_eq!(kubelet.registrations().len(), 1);
}
