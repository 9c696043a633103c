#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The first SVID through the (fake) Workload API, the timeout without one,
//! and the fake's SPIRE-like refusal of calls without the security header.

use std::time::Duration;

use sriov_identity::testing::FakeWorkloadApi;
use sriov_identity::testing::proto::X509svidRequest;
use sriov_identity::testing::proto::spiffe_workload_api_client::SpiffeWorkloadApiClient;
use sriov_identity::{Error, Identity};

const FORWARDER: &str = "spiffe://example.org/forwarder-sriov";

#[tokio::test]
async fn first_svid_arrives_through_the_fake_workload_api() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeWorkloadApi::start(dir.path().join("agent.sock"), FORWARDER).unwrap();
    let me = Identity::from_workload_api(&fake.endpoint(), Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(me.spiffe_id(), FORWARDER);
    assert_eq!(me.certificate_der().unwrap(), fake.current().leaf_der());
    let debug = format!("{me:?}");
    assert!(
        debug.contains(FORWARDER) && debug.contains("agent.sock"),
        "{debug}"
    );
}

#[test]
fn identity_is_shared_across_tasks() {
    fn shareable<T: Clone + Send + Sync + 'static>() {}
    shareable::<Identity>();
}

#[tokio::test]
async fn single_slash_endpoint_form_works() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("agent.sock");
    let _fake = FakeWorkloadApi::start(&socket, FORWARDER).unwrap();
    let me = Identity::from_workload_api(
        &format!("unix:{}", socket.display()),
        Duration::from_secs(30),
    )
    .await
    .unwrap();
    assert_eq!(me.spiffe_id(), FORWARDER);
}

#[tokio::test]
async fn timeout_without_server_names_the_socket() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("no-agent.sock");
    let endpoint = format!("unix://{}", socket.display());
    let err = Identity::from_workload_api(&endpoint, Duration::from_millis(300))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err:?}");
    let message = err.to_string();
    assert!(message.contains(&socket.display().to_string()), "{message}");
    assert!(message.contains("300ms"), "{message}");
}

#[tokio::test]
async fn malformed_endpoint_is_refused_at_once() {
    let err = Identity::from_workload_api("http://agent", Duration::from_secs(30))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::WorkloadApi { .. }), "{err:?}");
    assert!(err.to_string().contains("http://agent"), "{err}");
}

async fn raw_client(
    socket: std::path::PathBuf,
) -> SpiffeWorkloadApiClient<tonic::transport::Channel> {
    let channel = tonic::transport::Endpoint::try_from("http://[::]:50051")
        .unwrap()
        .connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
            let socket = socket.clone();
            async move {
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                    tokio::net::UnixStream::connect(socket).await?,
                ))
            }
        }))
        .await
        .unwrap();
    SpiffeWorkloadApiClient::new(channel)
}

#[tokio::test]
async fn fake_refuses_calls_without_the_security_header() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("agent.sock");
    let fake = FakeWorkloadApi::start(&socket, FORWARDER).unwrap();
    let mut client = raw_client(socket).await;

    let status = client.fetch_x509svid(X509svidRequest {}).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert_eq!(status.message(), sriov_identity::testing::MISSING_HEADER);

    let mut request = tonic::Request::new(X509svidRequest {});
    request
        .metadata_mut()
        .insert("workload.spiffe.io", "true".parse().unwrap());
    let mut stream = client.fetch_x509svid(request).await.unwrap().into_inner();
    let first = stream.message().await.unwrap().unwrap();
    assert_eq!(first.svids.len(), 1);
    assert_eq!(first.svids[0].spiffe_id, FORWARDER);
    assert_eq!(first.svids[0].bundle, fake.bundle_der());

    // A rotation is pushed on the open stream.
    let rotated = fake.rotate().unwrap();
    let second = stream.message().await.unwrap().unwrap();
    assert_eq!(second.svids[0].x509_svid, rotated.cert_chain_der.concat());
    assert_ne!(second.svids[0].x509_svid, first.svids[0].x509_svid);
}
