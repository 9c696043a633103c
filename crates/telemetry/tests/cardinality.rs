#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Each instrument keeps the series its limit allows and folds the rest
//! into the SDK's overflow series: the per-PF instruments many, the others
//! few. One test per process: it installs the global providers.

use opentelemetry::KeyValue;
use sriov_telemetry::{
    CARDINALITY_LIMIT, METER_NAME, PER_PF_CARDINALITY_LIMIT, PER_PF_INSTRUMENTS, Telemetry,
    TelemetryConfig,
};

/// Prometheus sample lines of `metric` (its `_total` for a counter).
fn samples<'a>(text: &'a str, metric: &str) -> Vec<&'a str> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.strip_prefix(metric)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with("_total{"))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_pf_instruments_keep_more_series_than_the_others() {
    let telemetry = Telemetry::init(TelemetryConfig {
        service_name: "sriov-test".into(),
        ..TelemetryConfig::default()
    })
    .unwrap();
    let meter = opentelemetry::global::meter(METER_NAME);
    let wide = meter.u64_counter(PER_PF_INSTRUMENTS[0]).build();
    let narrow = meter.u64_counter("sriov.test.narrow").build();
    for i in 0..PER_PF_CARDINALITY_LIMIT + 100 {
        let pf = [KeyValue::new(
            "pf",
            format!("0000:{:02x}:{:02x}.0", i / 256, i % 256),
        )];
        wide.add(1, &pf);
        narrow.add(1, &[KeyValue::new("result", format!("r{i}"))]);
    }
    let text = telemetry.prometheus_text();
    let metric = |name: &str| name.replace('.', "_");
    let (wide_lines, narrow_lines) = (
        samples(&text, &metric(PER_PF_INSTRUMENTS[0])),
        samples(&text, &metric("sriov.test.narrow")),
    );
    // The limit's series, then one overflow series for the rest.
    assert_eq!(
        wide_lines.len(),
        PER_PF_CARDINALITY_LIMIT + 1,
        "{wide_lines:?}"
    );
    assert_eq!(
        narrow_lines.len(),
        CARDINALITY_LIMIT + 1,
        "{narrow_lines:?}"
    );
    for lines in [&wide_lines, &narrow_lines] {
        let overflow: Vec<_> = lines
            .iter()
            .filter(|l| l.contains("otel_metric_overflow=\"true\""))
            .collect();
        assert_eq!(overflow.len(), 1, "{lines:?}");
    }
    const { assert!(CARDINALITY_LIMIT < PER_PF_CARDINALITY_LIMIT) };
    tokio::task::spawn_blocking(move || telemetry.shutdown())
        .await
        .unwrap()
        .unwrap();
}
