#![allow(clippy::unwrap_used, clippy::expect_used)]
//! W3C trace context across a real tonic call: the server layer joins the
//! caller's trace, the client side sends ours. One test per process: it
//! installs the global providers.

use std::time::Duration;

use sriov_telemetry::collector::FakeCollector;
use sriov_telemetry::grpc::{InjectTraceContext, SERVER_SPAN, ServerTraceLayer, inject_context};
use sriov_telemetry::logging::{self, LogConfig};
use sriov_telemetry::{Telemetry, TelemetryConfig};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;
use tracing::Instrument;

const TRACE_ID: &str = "0af7651916cd43dd8448eb211c80319c";
const CALLER_SPAN: &str = "b7ad6b7169203331";
const WAIT: Duration = Duration::from_secs(20);

async fn health_server() -> String {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let (_reporter, service) = tonic_health::server::health_reporter();
    tokio::spawn(
        tonic::transport::Server::builder()
            .layer(ServerTraceLayer)
            .add_service(service)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    format!("http://{addr}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_layer_joins_the_callers_trace_and_clients_send_ours() {
    let collector = FakeCollector::start().await.unwrap();
    let telemetry = Telemetry::init(TelemetryConfig {
        service_name: "sriov-grpc-test".into(),
        otlp_endpoint: Some(collector.endpoint()),
        ..TelemetryConfig::default()
    })
    .unwrap();
    logging::init(LogConfig {
        level: "info".into(),
        traces: telemetry.tracer_provider(),
        ..LogConfig::default()
    })
    .unwrap();
    let url = health_server().await;
    let channel = tonic::transport::Endpoint::from_shared(url)
        .unwrap()
        .connect()
        .await
        .unwrap();

    // A caller (the NSM manager) that sends its own traceparent.
    let mut request = tonic::Request::new(HealthCheckRequest::default());
    request.metadata_mut().insert(
        "traceparent",
        format!("00-{TRACE_ID}-{CALLER_SPAN}-01").parse().unwrap(),
    );
    HealthClient::new(channel.clone())
        .check(request)
        .await
        .unwrap();

    // Our side as a caller: the current span's context goes out.
    let ours = tracing::info_span!("nsm.Request");
    let our_span = async {
        let mut metadata = tonic::metadata::MetadataMap::new();
        inject_context(&mut metadata);
        let traceparent = metadata.get("traceparent").unwrap().to_str().unwrap();
        let parts: Vec<&str> = traceparent.split('-').collect();
        assert_eq!(
            (parts.len(), parts[0], parts[3]),
            (4, "00", "01"),
            "{traceparent}"
        );
        HealthClient::with_interceptor(channel.clone(), InjectTraceContext)
            .check(HealthCheckRequest::default())
            .await
            .unwrap();
        (parts[1].to_string(), parts[2].to_string())
    }
    .instrument(ours)
    .await;
    let (our_trace, our_span_id) = our_span;

    // Outside any span, nothing is sent.
    let mut metadata = tonic::metadata::MetadataMap::new();
    inject_context(&mut metadata);
    assert!(metadata.get("traceparent").is_none());

    tokio::task::spawn_blocking(move || telemetry.shutdown())
        .await
        .unwrap()
        .unwrap();

    let theirs = collector.wait_for_trace(TRACE_ID, SERVER_SPAN, WAIT).await;
    let server = theirs.iter().find(|s| s.name == SERVER_SPAN).unwrap();
    assert_eq!(server.parent_span_id, CALLER_SPAN);
    assert_eq!(
        server.attributes.get("rpc.method").map(String::as_str),
        Some("/grpc.health.v1.Health/Check")
    );
    let ours = collector
        .wait_for_trace(&our_trace, SERVER_SPAN, WAIT)
        .await;
    let server = ours.iter().find(|s| s.name == SERVER_SPAN).unwrap();
    assert_eq!(server.parent_span_id, our_span_id);
    let caller = ours.iter().find(|s| s.name == "nsm.Request").unwrap();
    assert_eq!(caller.span_id, our_span_id);
}
