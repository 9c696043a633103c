//! Every gRPC client reaches the forwarder's NSM socket, whatever
//! `:authority` its stack derives from a unix target (issue #15): served
//! the way the forwarder serves it (`listen_unix_for_group`, health beside
//! the NetworkService), called with raw HTTP/2 and with Python grpcio.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::Command;

use common::PATIENCE;
use sriov_api::nsm::connection::Connection;
use sriov_api::nsm::networkservice::NetworkServiceRequest;
use sriov_api::nsm::networkservice::network_service_server::{
    NetworkService, NetworkServiceServer,
};
use sriov_api::prost::Message;
use sriov_authority::testing::{Answer, raw_call};
use sriov_nsm::{NsmUrl, listen_unix_for_group};
use tokio::task::JoinHandle;
use tokio::time::timeout;
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse, health_check_response};

/// The service name the forwarder marks SERVING.
const NETWORK_SERVICE: &str = "networkservice.NetworkService";

struct Served;

#[tonic::async_trait]
impl NetworkService for Served {
    async fn request(
        &self,
        _: tonic::Request<NetworkServiceRequest>,
    ) -> Result<tonic::Response<Connection>, tonic::Status> {
        Ok(tonic::Response::new(Connection {
            id: "served".into(),
            ..Default::default()
        }))
    }

    async fn close(
        &self,
        _: tonic::Request<Connection>,
    ) -> Result<tonic::Response<()>, tonic::Status> {
        Ok(tonic::Response::new(()))
    }
}

/// Health and a NetworkService on a socket bound as the forwarder binds
/// `NSM_LISTEN_ON`.
async fn serve(sock: &Path) -> JoinHandle<Result<(), tonic::transport::Error>> {
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<NetworkServiceServer<Served>>().await;
    let incoming = listen_unix_for_group(&NsmUrl::Unix(sock.to_owned()), None).unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(health_service)
            .add_service(NetworkServiceServer::new(Served))
            .serve_with_incoming(incoming),
    )
}

/// What the stacks send for a unix target, `sock` being the socket path.
fn authorities(sock: &Path) -> Vec<(&'static str, String)> {
    let path = sock.to_str().unwrap();
    vec![
        // grpc-go, kubelet ≥ 1.26, tonic.
        ("grpc-go", "localhost".into()),
        // The C core (grpcio, C++): the target's path, percent-encoded.
        ("grpcio", path.replace('/', "%2F")),
        ("grpcio-fixed", "%2Ftmp%2Fx.sock".into()),
        // grpc-java over a netty DomainSocketAddress, older grpc-go and
        // kubelets: the bare path.
        ("java", path.into()),
        // A stack that passes the target through as given.
        ("unix-target", format!("unix:{path}")),
        ("unix-url", format!("unix://{path}")),
    ]
}

async fn check(sock: &Path, authority: &str, service: &str) -> Answer {
    let req = HealthCheckRequest {
        service: service.into(),
    };
    timeout(
        PATIENCE,
        raw_call(
            sock,
            authority,
            "/grpc.health.v1.Health/Check",
            &req.encode_to_vec(),
        ),
    )
    .await
    .unwrap()
    .unwrap()
}

#[tokio::test]
async fn every_stacks_authority_reaches_health_and_the_network_service() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("forwarder.sock");
    let server = serve(&sock).await;
    for (stack, authority) in authorities(&sock) {
        for service in ["", NETWORK_SERVICE] {
            let a = check(&sock, &authority, service).await;
            assert_eq!(a.reset, None, "{stack} ({authority}): stream reset");
            assert_eq!(a.header("grpc-status"), Some(&b"0"[..]), "{stack}: {a:?}");
            let status = HealthCheckResponse::decode(a.message().unwrap())
                .unwrap()
                .status();
            assert_eq!(
                status,
                health_check_response::ServingStatus::Serving,
                "{stack} ({authority}) service {service:?}"
            );
        }
        let a = timeout(
            PATIENCE,
            raw_call(
                &sock,
                &authority,
                "/networkservice.NetworkService/Request",
                &NetworkServiceRequest::default().encode_to_vec(),
            ),
        )
        .await
        .unwrap()
        .unwrap();
        assert_eq!(a.header("grpc-status"), Some(&b"0"[..]), "{stack}: {a:?}");
        assert_eq!(
            Connection::decode(a.message().unwrap()).unwrap().id,
            "served"
        );
    }
    server.abort();
}

/// The control: the same services on a plain tonic listener reset the
/// streams of the path forms, so the test above would fail without the
/// relay. If `h2` ever accepts them, this test says so.
#[tokio::test]
async fn without_the_relay_h2_resets_path_authorities() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("plain.sock");
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<NetworkServiceServer<Served>>().await;
    let listener = tokio::net::UnixListener::bind(&sock).unwrap();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(health_service)
            .serve_with_incoming(tokio_stream::wrappers::UnixListenerStream::new(listener)),
    );
    let mut refused = Vec::new();
    for (stack, authority) in authorities(&sock) {
        let a = check(&sock, &authority, "").await;
        if a.reset.is_some() {
            refused.push(stack);
        }
    }
    assert_eq!(
        refused,
        ["grpcio", "grpcio-fixed", "java", "unix-target", "unix-url"]
    );
    // grpcio's own client, with its default authority, fails the same way.
    if let Some(out) = grpcio(&sock, vec![String::new()]).await {
        assert!(!out.status.success(), "grpcio was served without the relay");
    }
    server.abort();
}

/// grpcio's own client, with its default authority and with each form set
/// through `grpc.default_authority`.
#[tokio::test]
async fn python_grpcio_health_check_is_served() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("forwarder.sock");
    let server = serve(&sock).await;
    let mut wanted = vec![String::new()];
    wanted.extend(authorities(&sock).into_iter().map(|(_, a)| a));
    let n = wanted.len();
    let Some(out) = grpcio(&sock, wanted).await else {
        return;
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "grpcio:\n{stdout}\n{stderr}");
    assert_eq!(
        stdout.lines().filter(|l| l.starts_with("SERVING")).count(),
        n,
        "{stdout}"
    );
    server.abort();
}

/// Runs [`GRPCIO_CHECK`] against `sock`; `None`, saying why, where python3
/// or grpcio is missing (`xtask/setup/python-grpc.sh` installs it).
async fn grpcio(sock: &Path, authorities: Vec<String>) -> Option<std::process::Output> {
    let probe = Command::new("python3").args(["-c", "import grpc"]).output();
    match probe {
        Ok(out) if out.status.success() => {}
        Ok(out) => {
            eprintln!(
                "SKIPPED: python3 has no grpcio ({}); xtask/setup/python-grpc.sh installs it",
                String::from_utf8_lossy(&out.stderr).trim()
            );
            return None;
        }
        Err(e) => {
            eprintln!("SKIPPED: python3 not runnable: {e}");
            return None;
        }
    }
    let sock = sock.to_str().unwrap().to_string();
    // grpcio blocks: off the runtime that serves it.
    let out = tokio::task::spawn_blocking(move || {
        Command::new("python3")
            .arg("-c")
            .arg(GRPCIO_CHECK)
            .arg(sock)
            .args(authorities)
            .output()
    });
    Some(timeout(PATIENCE, out).await.unwrap().unwrap().unwrap())
}

/// argv: the socket path, then authorities ("" = grpcio's default). Health
/// Check without generated code: the request is empty (service ""), and
/// `08 01` is `status: SERVING`.
const GRPCIO_CHECK: &str = r#"
import sys, grpc
sock = sys.argv[1]
for authority in sys.argv[2:]:
    options = [("grpc.default_authority", authority)] if authority else []
    with grpc.insecure_channel("unix:" + sock, options=options) as ch:
        check = ch.unary_unary("/grpc.health.v1.Health/Check")
        answer = check(b"", timeout=5)
        if answer != b"\x08\x01":
            print("FAIL authority=%r answer=%r" % (authority, answer))
            sys.exit(1)
        print("SERVING authority=%r" % authority)
"#;
