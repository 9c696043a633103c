//! Issue #17 for the standalone plugin's pools: link health flips counted,
//! readiness from the plugins' registrations, the `/debug/state` view. One
//! test binary of its own, since the meter provider is process-wide.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData};
use opentelemetry_sdk::metrics::{InMemoryMetricExporter, PeriodicReader, SdkMeterProvider};
use sriov_deviceplugin::Backend;
use sriov_selector_pools::metrics::LINK_HEALTH_CHANGES;
use sriov_selector_pools::{LinkTable, PluginStatus, follow_readiness};
use tokio::sync::watch;

/// `sriov.link.health.changes` for resource `intel.com/x` and `health`.
fn changes(provider: &SdkMeterProvider, exporter: &InMemoryMetricExporter, health: &str) -> u64 {
    changes_for(provider, exporter, health, None)
}

/// The same, only for `cause` when given.
fn changes_for(
    provider: &SdkMeterProvider,
    exporter: &InMemoryMetricExporter,
    health: &str,
    cause: Option<&str>,
) -> u64 {
    exporter.reset();
    provider.force_flush().unwrap();
    let mut total = 0;
    for rm in exporter.get_finished_metrics().unwrap() {
        for sm in rm.scope_metrics() {
            for m in sm.metrics().filter(|m| m.name() == LINK_HEALTH_CHANGES) {
                let AggregatedMetrics::U64(MetricData::Sum(s)) = m.data() else {
                    panic!("{LINK_HEALTH_CHANGES} is not a u64 counter");
                };
                for p in s.data_points() {
                    let has = |k: &str, v: &str| {
                        p.attributes()
                            .any(|kv| kv.key.as_str() == k && kv.value.to_string() == v)
                    };
                    if has("resource", "intel.com/x")
                        && has("health", health)
                        && cause.is_none_or(|c| has("cause", c))
                    {
                        total += p.value();
                    }
                }
            }
        }
    }
    total
}

#[test]
fn link_flips_are_counted_per_device_and_the_state_shows_why() {
    let exporter = InMemoryMetricExporter::default();
    let provider = SdkMeterProvider::builder()
        .with_reader(PeriodicReader::builder(exporter.clone()).build())
        .build();
    opentelemetry::global::set_meter_provider(provider.clone());

    let lab = Lab::new();
    let links = Arc::new(LinkTable::new());
    links.replace_all([
        ("ens785f0".to_string(), true),
        ("ens785f1".to_string(), true),
    ]);
    let m = lab.manager_with(
        r#"{"resourceList":[{"resourceName":"x","selectors":{"drivers":["iavf"]}}]}"#,
        false,
        links.clone(),
    );
    assert_eq!(changes(&provider, &exporter, "unhealthy"), 0);

    links.set("ens785f1", false);
    assert!(m.refresh().unwrap());
    assert_eq!(
        changes(&provider, &exporter, "unhealthy"),
        X710_PORT1_VFS.len() as u64
    );
    let state = m.debug_state();
    let devices = state["intel.com/x"]["devices"].as_array().unwrap();
    let down: Vec<&str> = devices
        .iter()
        .filter(|d| d["healthy"] == false)
        .map(|d| d["id"].as_str().unwrap())
        .collect();
    assert_eq!(down, X710_PORT1_VFS.to_vec());
    assert!(
        devices
            .iter()
            .all(|d| d["healthy"] == true || d["unhealthy"] == "link ens785f1 is down")
    );

    // A rescan with nothing changed flips nothing.
    m.refresh().unwrap();
    assert_eq!(
        changes(&provider, &exporter, "unhealthy"),
        X710_PORT1_VFS.len() as u64
    );
    let port1 = X710_PORT1_VFS.len() as u64;
    assert_eq!(
        changes_for(&provider, &exporter, "unhealthy", Some("link_down")),
        port1
    );
    links.set("ens785f1", true);
    assert!(m.refresh().unwrap());
    assert_eq!(changes(&provider, &exporter, "healthy"), port1);
    assert_eq!(
        changes_for(&provider, &exporter, "healthy", Some("link_down")),
        port1,
        "a flip back to healthy names what was wrong"
    );

    // A driver unbound and a VF gone are counted under their own causes.
    let sysfs = lab.fake.sysfs();
    sysfs.unbind(addr(X710_PORT0_VFS[0])).unwrap();
    assert!(m.refresh().unwrap());
    assert_eq!(
        changes_for(&provider, &exporter, "unhealthy", Some("driver_unbound")),
        1
    );
    // Lowering sriov_numvfs re-creates the VFs left, on their driver again.
    sysfs.set_num_vfs(addr("0000:3b:00.0"), 3).unwrap();
    assert!(m.refresh().unwrap());
    assert_eq!(
        changes_for(&provider, &exporter, "healthy", Some("driver_unbound")),
        1
    );
    assert_eq!(
        changes_for(&provider, &exporter, "unhealthy", Some("device_gone")),
        1
    );
    sysfs.set_num_vfs(addr("0000:3b:00.0"), 4).unwrap();
    assert!(m.refresh().unwrap());
    assert_eq!(
        changes_for(&provider, &exporter, "healthy", Some("device_gone")),
        1
    );

    let pool = &m.pools()[0];
    let id = X710_PORT0_VFS[0].to_string();
    pool.allocate(&[vec![id.clone()]]).unwrap();
    assert_eq!(
        m.debug_state()["intel.com/x"]["allocated"],
        serde_json::json!([id])
    );
}

fn device(id: &str) -> sriov_deviceplugin::Device {
    sriov_deviceplugin::Device {
        id: id.into(),
        healthy: true,
        numa_node: None,
        group: None,
    }
}

#[tokio::test]
async fn ready_once_every_pool_with_devices_is_registered() {
    let (registered_a, a) = watch::channel(false);
    let (_devices_a, devs_a) = watch::channel(vec![device("0000:3b:02.0")]);
    // A pool with no devices is not offered to kubelet: not waited for.
    let (_registered_b, b) = watch::channel(false);
    let (devices_b, devs_b) = watch::channel(Vec::new());
    let mut ready = follow_readiness(vec![
        PluginStatus {
            resource: "intel.com/a".into(),
            registered: a,
            devices: devs_a,
        },
        PluginStatus {
            resource: "intel.com/b".into(),
            registered: b,
            devices: devs_b,
        },
    ]);
    assert_eq!(
        ready.borrow().to_string(),
        "not ready: kubelet has not registered intel.com/a"
    );
    let within = Duration::from_secs(20);
    registered_a.send_replace(true);
    tokio::time::timeout(within, ready.wait_for(|r| r.is_ready()))
        .await
        .unwrap()
        .unwrap();

    // Devices appear in b: it must register too.
    devices_b.send_replace(vec![device("0000:3b:0a.0")]);
    let r = tokio::time::timeout(within, ready.wait_for(|r| !r.is_ready()))
        .await
        .unwrap()
        .unwrap()
        .to_string();
    assert_eq!(r, "not ready: kubelet has not registered intel.com/b");

    // Kubelet loses a.
    registered_a.send_replace(false);
    let r = tokio::time::timeout(within, ready.wait_for(|r| r.missing.len() == 2))
        .await
        .unwrap()
        .unwrap()
        .to_string();
    assert!(
        r.contains("intel.com/a") && r.contains("intel.com/b"),
        "{r}"
    );
}
