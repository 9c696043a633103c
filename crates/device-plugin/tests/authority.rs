//! Both `:authority` forms kubelets send reach the handlers: `localhost`
//! (kubelet ≥ 1.26, and tonic's own client) and the socket path (older
//! kubelets, grpc-go dialling a bare path).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;

use common::*;
use sriov_api::kubelet::deviceplugin::v1beta1 as dp;
use sriov_api::prost::Message;
use sriov_deviceplugin::RegistrationMode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

fn frame(ty: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len();
    let mut v = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, ty, flags];
    v.extend_from_slice(&stream.to_be_bytes());
    v.extend_from_slice(payload);
    v
}

/// HPACK literal without indexing, new name, plain strings (all < 127 bytes).
fn literal(name: &str, value: &str, out: &mut Vec<u8>) {
    out.push(0);
    out.push(name.len() as u8);
    out.extend_from_slice(name.as_bytes());
    out.push(value.len() as u8);
    out.extend_from_slice(value.as_bytes());
}

struct Answer {
    headers: Vec<(Vec<u8>, Vec<u8>)>,
    body: Vec<u8>,
    reset: Option<u32>,
}

/// One unary gRPC call written frame by frame, with the `:authority` we
/// choose — something no Rust HTTP client will send for a path.
async fn raw_call(socket: &Path, authority: &str, path: &str, msg: &[u8]) -> Answer {
    let mut s = UnixStream::connect(socket).await.unwrap();
    let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    out.extend(frame(0x4, 0, 0, &[])); // SETTINGS
    let mut block = Vec::new();
    literal(":method", "POST", &mut block);
    literal(":scheme", "http", &mut block);
    literal(":path", path, &mut block);
    literal(":authority", authority, &mut block);
    literal("content-type", "application/grpc", &mut block);
    literal("te", "trailers", &mut block);
    out.extend(frame(0x1, 0x4, 1, &block)); // HEADERS, END_HEADERS
    let mut grpc = vec![0u8];
    grpc.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    grpc.extend_from_slice(msg);
    out.extend(frame(0x0, 0x1, 1, &grpc)); // DATA, END_STREAM
    s.write_all(&out).await.unwrap();

    let mut dec = loona_hpack::Decoder::new();
    let mut answer = Answer {
        headers: Vec::new(),
        body: Vec::new(),
        reset: None,
    };
    loop {
        let mut h = [0u8; 9];
        s.read_exact(&mut h).await.unwrap();
        let len = usize::from(h[0]) << 16 | usize::from(h[1]) << 8 | usize::from(h[2]);
        let mut payload = vec![0u8; len];
        s.read_exact(&mut payload).await.unwrap();
        let stream = u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7fff_ffff;
        match (h[3], stream) {
            (0x4, 0) if h[4] & 0x1 == 0 => s.write_all(&frame(0x4, 0x1, 0, &[])).await.unwrap(),
            (0x1, 1) => {
                answer.headers.extend(dec.decode(&payload).unwrap());
                if h[4] & 0x1 != 0 {
                    return answer;
                }
            }
            (0x0, 1) => {
                answer.body.extend_from_slice(&payload);
                if h[4] & 0x1 != 0 {
                    return answer;
                }
            }
            (0x3, 1) => {
                answer.reset = Some(u32::from_be_bytes(payload[..4].try_into().unwrap()));
                return answer;
            }
            _ => {}
        }
    }
}

fn header<'a>(a: &'a Answer, name: &str) -> Option<&'a [u8]> {
    a.headers
        .iter()
        .find(|(n, _)| n == name.as_bytes())
        .map(|(_, v)| v.as_slice())
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
    assert_eq!(header(&a, ":status"), Some(&b"200"[..]));
    assert_eq!(header(&a, "grpc-status"), Some(&b"0"[..]));
    assert!(a.body.len() >= 5);
    let opts = dp::DevicePluginOptions::decode(&a.body[5..]).unwrap();
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
    assert_eq!(header(&ok, "grpc-status"), Some(&b"0"[..]));
    assert_eq!(kubelet.registrations().len(), 1);
}
