#![allow(clippy::unwrap_used, clippy::expect_used)]
//! gRPC health and readiness follow the registrations (issue #17): the
//! forwarder starts on a fake sysfs tree beside a fake NSM manager and a
//! fake kubelet, all on sockets in a temp dir.

mod support;

use std::path::Path;
use std::time::Duration;

use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData};
use opentelemetry_sdk::metrics::{InMemoryMetricExporter, PeriodicReader, SdkMeterProvider};
use sriov_deviceplugin::fake::FakeKubelet;
use sriov_forwarder::{Forwarder, Running};
use sriov_nsm::fake::FakeNsmgr;
use sriov_pci_fake::{FakeSysfs, fixtures};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

const RESOURCE: &str = "worker.domain/10G";
/// Only turns a hang into a failure; measures nothing.
const PATIENCE: Duration = Duration::from_secs(30);

const CONFIG: &str = support::ONE_PF;

fn env(root: &Path) -> sriov_config::EnvConfig {
    std::fs::write(root.join("sriov.yaml"), CONFIG).unwrap();
    support::env(root, "forwarder-health", "sriov.yaml", &[])
}

/// The service the readiness probe asks for.
const NETWORK_SERVICE: &str =
    <sriov_api::nsm::networkservice::network_service_server::NetworkServiceServer<
        sriov_chain::server::NetworkServiceServer,
    > as tonic::server::NamedService>::NAME;

/// What gRPC health says for NetworkService.
async fn health(root: &Path) -> ServingStatus {
    health_of(root, NETWORK_SERVICE).await
}

/// What gRPC health says for `service` ("": the whole server, which the
/// liveness probe asks for).
async fn health_of(root: &Path, service: &str) -> ServingStatus {
    let channel = sriov_deviceplugin::connect_unix(&root.join("listen.on.sock"))
        .await
        .unwrap();
    let status = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: service.to_string(),
        })
        .await
        .unwrap()
        .into_inner()
        .status;
    ServingStatus::try_from(status).unwrap()
}

async fn health_becomes(root: &Path, want: ServingStatus) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let now = health(root).await;
        if now == want {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "gRPC health stayed {now:?}, not {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The sum of `metric`'s points with these attributes (among others).
fn metric(
    provider: &SdkMeterProvider,
    exporter: &InMemoryMetricExporter,
    metric: &str,
    attrs: &[(&str, &str)],
) -> u64 {
    exporter.reset();
    provider.force_flush().unwrap();
    let mut total = 0;
    for rm in exporter.get_finished_metrics().unwrap() {
        for sm in rm.scope_metrics() {
            for m in sm.metrics().filter(|m| m.name() == metric) {
                let points: Vec<(Vec<opentelemetry::KeyValue>, u64)> = match m.data() {
                    AggregatedMetrics::U64(MetricData::Sum(s)) => s
                        .data_points()
                        .map(|p| (p.attributes().cloned().collect(), p.value()))
                        .collect(),
                    AggregatedMetrics::U64(MetricData::Gauge(g)) => g
                        .data_points()
                        .map(|p| (p.attributes().cloned().collect(), p.value()))
                        .collect(),
                    _ => Vec::new(),
                };
                for (a, v) in points {
                    let has = |(k, want): &(&str, &str)| {
                        a.iter()
                            .any(|kv| kv.key.as_str() == *k && kv.value.to_string() == *want)
                    };
                    if attrs.iter().all(has) {
                        total += v;
                    }
                }
            }
        }
    }
    total
}

async fn readiness_becomes(running: &Running, ready: bool) -> String {
    let mut rx = running.readiness();
    tokio::time::timeout(PATIENCE, rx.wait_for(|r| r.is_ready() == ready))
        .await
        .unwrap_or_else(|_| panic!("readiness never became {ready}"))
        .unwrap()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_is_serving_only_while_the_nse_and_every_plugin_are_registered() {
    let exporter = InMemoryMetricExporter::default();
    let provider = SdkMeterProvider::builder()
        .with_reader(PeriodicReader::builder(exporter.clone()).build())
        .build();
    opentelemetry::global::set_meter_provider(provider.clone());
    let m = |name: &str, attrs: &[(&str, &str)]| metric(&provider, &exporter, name, attrs);

    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    let fake = fixtures::x710_2port(FakeSysfs::builder()).build().unwrap();
    let mut nsmgr = FakeNsmgr::start(root.join("nsm.sock")).await.unwrap();
    let running = Forwarder::builder(env(root))
        .sysfs(fake.sysfs())
        .start()
        .await
        .unwrap();

    // No kubelet yet: the NSE registers, the resource cannot.
    let mut rx = running.readiness();
    let waiting = tokio::time::timeout(
        PATIENCE,
        rx.wait_for(|r| r.missing.iter().all(|m| m.contains("kubelet"))),
    )
    .await
    .expect("the NSE registered")
    .unwrap()
    .clone();
    assert_eq!(
        waiting.to_string(),
        format!("not ready: kubelet has not registered {RESOURCE}")
    );
    assert_eq!(health(root).await, ServingStatus::NotServing);
    // Alive all the same: liveness must not restart a forwarder waiting for kubelet.
    assert_eq!(health_of(root, "").await, ServingStatus::Serving);

    let kubelet =
        FakeKubelet::start(&root.join("device-plugins"), &root.join("pod-resources")).unwrap();
    health_becomes(root, ServingStatus::Serving).await;
    assert_eq!(readiness_becomes(&running, true).await, "ready");
    assert_eq!(m("sriov.registry.registrations", &[("result", "ok")]), 1);
    assert!(
        m("sriov.reconcile.runs", &[]) >= 1,
        "the start-up roll-back runs"
    );
    let total = [("resource", RESOURCE), ("state", "total")];
    assert_eq!(m("sriov.pool.vfs", &total), 4);
    let registered = [("resource", RESOURCE), ("result", "ok")];
    assert_eq!(m("sriov.kubelet.registrations", &registered), 1);

    // Kubelet goes down: its socket vanishes.
    kubelet.stop_registration().await;
    health_becomes(root, ServingStatus::NotServing).await;
    let why = readiness_becomes(&running, false).await;
    assert!(why.contains(RESOURCE), "{why}");
    assert_eq!(health_of(root, "").await, ServingStatus::Serving);

    // And comes back.
    kubelet.start_registration().unwrap();
    health_becomes(root, ServingStatus::Serving).await;

    // The registry goes away, then comes back (empty, as after a restart).
    nsmgr.stop().await;
    health_becomes(root, ServingStatus::NotServing).await;
    let why = readiness_becomes(&running, false).await;
    assert!(why.contains("NSE"), "{why}");
    assert!(m("sriov.registry.registrations", &[("result", "error")]) >= 1);
    nsmgr.clear_registry();
    nsmgr.restart().await.unwrap();
    health_becomes(root, ServingStatus::Serving).await;
    assert!(m("sriov.registry.registrations", &[("result", "ok")]) >= 2);

    let state = running.debug_state();
    assert_eq!(state["readiness"], "ready");
    let pfs = state["pool"][RESOURCE]["pfs"].as_array().unwrap();
    assert_eq!(pfs[0]["pf"], "0000:3b:00.0");
    assert_eq!(pfs[0]["vfs"].as_array().unwrap().len(), 4);
    assert_eq!(pfs[0]["vfs"][0]["driver"], "iavf");
    assert_eq!(state["connections"], serde_json::json!([]));

    running.shutdown().await;
}
