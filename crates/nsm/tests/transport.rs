//! Dialing and listening on unix sockets in temp dirs, and the
//! `fake-nsmgr` binary.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::os::unix::fs::FileTypeExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{PATIENCE, registration};
use sriov_api::nsm::networkservice::NetworkServiceRequest;
use sriov_api::nsm::networkservice::network_service_client::NetworkServiceClient;
use sriov_chain::NextHop;
use sriov_nsm::{
    DEFAULT_DIAL_TIMEOUT, Error, GrpcNextHop, NsmUrl, RegistryClient, dial, listen_unix,
    listen_unix_for_group,
};
use tokio::time::timeout;
use tonic::Code;

#[tokio::test]
async fn dial_to_a_missing_socket_fails_unavailable_naming_the_url() {
    let dir = tempfile::tempdir().unwrap();
    let url = NsmUrl::Unix(dir.path().join("missing.sock"));
    let err = timeout(PATIENCE, dial(&url, DEFAULT_DIAL_TIMEOUT))
        .await
        .unwrap()
        .unwrap_err();
    assert!(
        matches!(&err, Error::Dial { url: u, .. } if *u == url.to_string()),
        "{err:?}"
    );
    assert_eq!(err.code(), Code::Unavailable);
    let status = tonic::Status::from(err);
    assert_eq!(status.code(), Code::Unavailable);
    assert!(status.message().contains("missing.sock"), "{status:?}");
}

#[tokio::test]
async fn calls_to_a_closed_tcp_port_are_unavailable() {
    // Port 1 on loopback: nothing listens there, the kernel refuses.
    let url = NsmUrl::parse("127.0.0.1:1").unwrap();
    let err = timeout(PATIENCE, dial(&url, DEFAULT_DIAL_TIMEOUT))
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    let registry = RegistryClient::new(url, DEFAULT_DIAL_TIMEOUT).unwrap();
    let err = registry.unregister(Default::default()).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert!(err.to_string().contains("tcp://127.0.0.1:1"), "{err}");
}

#[tokio::test]
async fn the_socket_is_root_only_unless_a_group_is_given() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nsm.sock");
    let url = NsmUrl::Unix(path.clone());
    let _root_only = listen_unix(&url).unwrap();
    let meta = std::fs::metadata(&path).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let gid = nix::unistd::getegid().as_raw();
    let _grouped = listen_unix_for_group(&url, Some(gid)).unwrap();
    let meta = std::fs::metadata(&path).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);
    assert_eq!(meta.gid(), gid);
}

#[tokio::test]
async fn listen_unix_creates_the_directory_and_replaces_a_stale_socket() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a/b/forwarder.sock");
    let url = NsmUrl::Unix(path.clone());
    // A socket left behind by a previous run that died.
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    assert!(std::fs::metadata(&path).unwrap().file_type().is_socket());

    let incoming = listen_unix(&url).unwrap();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(tonic_health_free_service())
            .serve_with_incoming(incoming),
    );
    // Something is now accepting on the path: a dial succeeds and a call
    // reaches the server.
    let channel = dial(&url, Duration::from_secs(1)).await.unwrap();
    let mut client = NetworkServiceClient::new(channel);
    let conn = client
        .request(NetworkServiceRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(conn.id, "served");
    server.abort();
}

/// The smallest NetworkService: answers every Request with id `served`.
fn tonic_health_free_service()
-> sriov_api::nsm::networkservice::network_service_server::NetworkServiceServer<Answer> {
    sriov_api::nsm::networkservice::network_service_server::NetworkServiceServer::new(Answer)
}

struct Answer;

#[tonic::async_trait]
impl sriov_api::nsm::networkservice::network_service_server::NetworkService for Answer {
    async fn request(
        &self,
        _: tonic::Request<NetworkServiceRequest>,
    ) -> Result<tonic::Response<sriov_api::nsm::connection::Connection>, tonic::Status> {
        Ok(tonic::Response::new(
            sriov_api::nsm::connection::Connection {
                id: "served".into(),
                ..Default::default()
            },
        ))
    }

    async fn close(
        &self,
        _: tonic::Request<sriov_api::nsm::connection::Connection>,
    ) -> Result<tonic::Response<()>, tonic::Status> {
        Ok(tonic::Response::new(()))
    }
}

#[tokio::test]
async fn listen_unix_leaves_a_regular_file_in_the_way_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("precious");
    std::fs::write(&path, "data").unwrap();
    let err = listen_unix(&NsmUrl::Unix(path.clone())).unwrap_err();
    assert!(
        matches!(&err, Error::RemoveStale { path: p, .. } if *p == path),
        "{err:?}"
    );
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "data");
}

#[tokio::test]
async fn listen_unix_refuses_a_tcp_url() {
    let url = NsmUrl::parse("tcp://127.0.0.1:5001").unwrap();
    let err = listen_unix(&url).unwrap_err();
    assert!(
        matches!(&err, Error::NotUnix { url } if url == "tcp://127.0.0.1:5001"),
        "{err:?}"
    );
    assert_eq!(err.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn fake_nsmgr_binary_prints_each_call_on_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("nsm.io.sock");
    let mut child = Command::new(env!("CARGO_BIN_EXE_fake-nsmgr"))
        .arg(format!("unix://{}", socket.display()))
        .args([
            "--src-ip",
            "172.16.1.2/31",
            "--dst-ip",
            "172.16.1.3/31",
            "--mtu",
            "1450",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    assert_eq!(first, format!("listening url=unix://{}", socket.display()));

    let registry = RegistryClient::new(NsmUrl::Unix(socket.clone()), Duration::from_secs(1))
        .unwrap()
        .with_fd_passing(false);
    let reg = registration(
        "fwd",
        NsmUrl::parse("unix:///run/fwd.sock").unwrap(),
        Duration::from_secs(60),
    );
    registry.register(reg.endpoint()).await.unwrap();

    // Reading blocks, so do it off the runtime.
    let (line, mut lines) = tokio::task::spawn_blocking(move || {
        let line = lines.next().unwrap().unwrap();
        (line, lines)
    })
    .await
    .unwrap();
    assert!(
        line.starts_with(
            "register name=fwd services=forwarder labels=forwarder:node=node1,forwarder:p2p=true url=unix:///run/fwd.sock expires_in="
        ),
        "{line}"
    );

    // The next hop answers with the context it was given on the command
    // line.
    let hop = GrpcNextHop::new(NsmUrl::Unix(socket.clone()), Duration::from_secs(1)).unwrap();
    let conn = hop
        .request(NetworkServiceRequest {
            connection: Some(sriov_api::nsm::connection::Connection {
                id: "c1".into(),
                network_service: "forwarder".into(),
                ..Default::default()
            }),
            mechanism_preferences: vec![],
        })
        .await
        .unwrap();
    let context = conn.context.unwrap();
    let ip = context.ip_context.unwrap();
    assert_eq!(ip.src_ip_addrs, ["172.16.1.2/31"]);
    assert_eq!(ip.dst_ip_addrs, ["172.16.1.3/31"]);
    assert_eq!(context.mtu, 1450);
    let line = tokio::task::spawn_blocking(move || lines.next().unwrap().unwrap())
        .await
        .unwrap();
    assert_eq!(
        line,
        "request id=c1 service=forwarder mechanism=none preferences=NOOP/LOCAL,NOOP/REMOTE path=[]@0"
    );

    nix_kill_term(child.id());
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    assert!(!socket.exists(), "socket left behind");
}

fn nix_kill_term(pid: u32) {
    let status = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}
