//! What a running device plugin records (issue #17), read back through the
//! OpenTelemetry SDK's in-memory exporter: registrations, Allocate
//! results, devices by health and health flips. One test binary of its own,
//! since the meter provider is process-wide.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData};
use opentelemetry_sdk::metrics::{InMemoryMetricExporter, PeriodicReader, SdkMeterProvider};
use sriov_api::kubelet::deviceplugin::v1beta1 as dp;
use sriov_deviceplugin::RegistrationMode;
use sriov_deviceplugin::metrics::{
    DP_ALLOCATIONS, DP_HEALTH_CHANGES, DP_POOL_DEVICES, KUBELET_REGISTRATIONS,
};

struct Meter {
    provider: SdkMeterProvider,
    exporter: InMemoryMetricExporter,
}

impl Meter {
    fn install() -> Self {
        let exporter = InMemoryMetricExporter::default();
        let provider = SdkMeterProvider::builder()
            .with_reader(PeriodicReader::builder(exporter.clone()).build())
            .build();
        opentelemetry::global::set_meter_provider(provider.clone());
        Self { provider, exporter }
    }

    /// The value of `metric` at the point with exactly these attributes.
    fn value(&self, metric: &str, attrs: &[(&str, &str)]) -> u64 {
        self.exporter.reset();
        self.provider.force_flush().unwrap();
        let mut want: Vec<(String, String)> = attrs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        want.sort();
        let mut total = 0;
        for rm in self.exporter.get_finished_metrics().unwrap() {
            for sm in rm.scope_metrics() {
                for m in sm.metrics().filter(|m| m.name() == metric) {
                    let points: Vec<(Vec<(String, String)>, u64)> = match m.data() {
                        AggregatedMetrics::U64(MetricData::Sum(s)) => s
                            .data_points()
                            .map(|p| (attrs_of(p.attributes()), p.value()))
                            .collect(),
                        AggregatedMetrics::U64(MetricData::Gauge(g)) => g
                            .data_points()
                            .map(|p| (attrs_of(p.attributes()), p.value()))
                            .collect(),
                        other => panic!("{metric}: unexpected {other:?}"),
                    };
                    total += points
                        .into_iter()
                        .filter(|(a, _)| *a == want)
                        .map(|(_, v)| v)
                        .sum::<u64>();
                }
            }
        }
        total
    }

    async fn becomes(&self, metric: &str, attrs: &[(&str, &str)], want: u64) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let now = self.value(metric, attrs);
            if now == want {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{metric} {attrs:?} stayed {now}, not {want}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

fn attrs_of<'a>(a: impl Iterator<Item = &'a opentelemetry::KeyValue>) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = a
        .map(|kv| (kv.key.to_string(), kv.value.to_string()))
        .collect();
    v.sort();
    v
}

#[tokio::test]
async fn a_running_plugin_records_registrations_allocations_and_device_health() {
    let meter = Meter::install();
    let root = tempfile::tempdir().unwrap();
    let cfg = config(root.path(), RegistrationMode::Kubelet);
    let kubelet = start_kubelet(&cfg.device_plugin_dir);
    kubelet.refuse_next(1);
    let backend = MemBackend::new(two_vfs());
    let h = start_plugin(root, cfg, backend.clone());
    registered(&h, &kubelet, 1).await;

    let r = |result| [("resource", RESOURCE), ("result", result)];
    assert_eq!(meter.value(KUBELET_REGISTRATIONS, &r("ok")), 1);
    assert_eq!(meter.value(KUBELET_REGISTRATIONS, &r("UNAVAILABLE")), 1);
    let healthy = [("resource", RESOURCE), ("health", "healthy")];
    let unhealthy = [("resource", RESOURCE), ("health", "unhealthy")];
    assert_eq!(meter.value(DP_POOL_DEVICES, &healthy), 2);
    assert_eq!(meter.value(DP_POOL_DEVICES, &unhealthy), 0);

    let first = two_vfs()[0].id.clone();
    let mut client = plugin_client(&h.socket()).await;
    let allocate = |ids: Vec<String>| dp::AllocateRequest {
        container_requests: vec![dp::ContainerAllocateRequest { devices_ids: ids }],
    };
    client
        .allocate(allocate(vec![first.clone()]))
        .await
        .unwrap();
    let refused = client.allocate(allocate(vec!["nope".into()])).await;
    assert!(refused.is_err());
    assert_eq!(meter.value(DP_ALLOCATIONS, &r("ok")), 1);
    let code = sriov_deviceplugin::metrics::code_name(refused.unwrap_err().code());
    assert_eq!(meter.value(DP_ALLOCATIONS, &r(code)), 1);

    // One device turns unhealthy: one flip, and the gauge follows.
    backend.devices.send_modify(|d| d[0].healthy = false);
    meter.becomes(DP_HEALTH_CHANGES, &unhealthy, 1).await;
    assert_eq!(meter.value(DP_POOL_DEVICES, &unhealthy), 1);
    assert_eq!(meter.value(DP_POOL_DEVICES, &healthy), 1);
    assert_eq!(meter.value(DP_HEALTH_CHANGES, &healthy), 0);

    // A stopped plugin's devices are no longer reported.
    h.stop().await;
    assert_eq!(meter.value(DP_POOL_DEVICES, &healthy), 0);
}
