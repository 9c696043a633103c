#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Spans and metrics recorded the way library crates record them reach an
//! OTLP collector and the Prometheus text. One test per process: it
//! installs the global providers.

use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use sriov_telemetry::collector::FakeCollector;
use sriov_telemetry::logging::{self, LogConfig};
use sriov_telemetry::{METER_NAME, Telemetry, TelemetryConfig};
use tracing_opentelemetry::OpenTelemetrySpanExt;

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_ID: &str = "00f067aa0ba902b7";
const WAIT: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_span_with_a_w3c_parent_and_a_counter_reach_the_collector_and_prometheus() {
    let collector = FakeCollector::start().await.unwrap();
    let telemetry = Telemetry::init(TelemetryConfig {
        service_name: "sriov-test".into(),
        otlp_endpoint: Some(collector.endpoint()),
        metrics_interval: Duration::from_millis(200),
    })
    .unwrap();
    assert_eq!(
        telemetry.otlp_endpoint(),
        Some(format!("http://{}", collector.endpoint()).as_str())
    );
    logging::init(LogConfig {
        level: "warn".into(),
        traces: telemetry.tracer_provider(),
        ..LogConfig::default()
    })
    .unwrap();

    // The manager's context, as a server would extract it from metadata.
    let headers = std::collections::HashMap::from([(
        "traceparent".to_string(),
        format!("00-{TRACE_ID}-{PARENT_ID}-01"),
    )]);
    let parent = TraceContextPropagator::new().extract(&headers);
    {
        // Below the log level: exported all the same.
        let request = tracing::info_span!("nsm.Request", connection.id = "conn-1");
        request.set_parent(parent).unwrap();
        let _r = request.enter();
        let element = tracing::info_span!("chain.connect");
        let _e = element.enter();
    }
    let counter = opentelemetry::global::meter(METER_NAME)
        .u64_counter("sriov.test.requests")
        .build();
    counter.add(2, &[KeyValue::new("result", "ok")]);
    counter.add(1, &[KeyValue::new("result", "ok")]);

    telemetry.record_build_info("sriov-test", "1.2.3");

    let text = telemetry.prometheus_text();
    assert!(
        text.lines().any(|l| l.starts_with("sriov_build_info{")
            && l.contains("version=\"1.2.3\"")
            && l.ends_with(" 1")),
        "{text}"
    );
    let line = text
        .lines()
        .find(|l| l.starts_with("sriov_test_requests_total{"))
        .unwrap_or_else(|| panic!("no counter in:\n{text}"));
    assert!(line.contains("result=\"ok\""), "{line}");
    assert!(line.ends_with(" 3"), "{line}");

    let spans = collector
        .wait_for_trace(TRACE_ID, "chain.connect", WAIT)
        .await;
    let request = spans.iter().find(|s| s.name == "nsm.Request").unwrap();
    let element = spans.iter().find(|s| s.name == "chain.connect").unwrap();
    assert_eq!(request.parent_span_id, PARENT_ID);
    assert_eq!(element.parent_span_id, request.span_id);
    assert_eq!(
        request.attributes.get("connection.id").map(String::as_str),
        Some("conn-1")
    );
    assert_eq!(request.service_name.as_deref(), Some("sriov-test"));

    let metric = collector
        .wait_for_metric("sriov.test.requests", WAIT)
        .await
        .expect("the counter was pushed");
    assert_eq!(metric.service_name.as_deref(), Some("sriov-test"));
    let point = &metric.points[0];
    assert_eq!(point.value, 3.0);
    assert_eq!(
        point.attributes.get("result").map(String::as_str),
        Some("ok")
    );

    tokio::task::spawn_blocking(move || telemetry.shutdown())
        .await
        .unwrap()
        .unwrap();
}
