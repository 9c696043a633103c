#![allow(clippy::unwrap_used, clippy::expect_used)]
//! VF health through the whole forwarder, event-driven: started in a private network
//! namespace on a fake sysfs tree beside a fake kubelet and a fake NSM manager, its device
//! plugin's ListAndWatch shows every token Unhealthy while the PF's link (a veth named like the
//! fixture's PF netdev) has no carrier, and one token fewer while a VF's driver is unbound.
//! The fake tree emits no uevents; the kernel's own for a veth created in the namespace wakes
//! the forwarder instead. Prints SKIP where namespaces cannot be created.

mod support;

use std::path::Path;
use std::time::Duration;

use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData};
use opentelemetry_sdk::metrics::{InMemoryMetricExporter, PeriodicReader, SdkMeterProvider};
use sriov_api::kubelet::deviceplugin::v1beta1 as dp;
use sriov_deviceplugin::fake::FakeKubelet;
use sriov_forwarder::Forwarder;
use sriov_netlink::RtNetlink;
use sriov_netlink::rtnetlink::LinkUnspec;
use sriov_nsm::fake::FakeNsmgr;
use sriov_pci_fake::{FakeSysfs, fixtures};

const RESOURCE: &str = "worker.domain/10G";

fn env(root: &Path) -> sriov_config::EnvConfig {
    std::fs::write(root.join("sriov.yaml"), support::ONE_PF).unwrap();
    support::env(root, "forwarder-vf-health", "sriov.yaml", &[])
}

/// Waits for an update with `want` healthy tokens.
async fn healthy_becomes(stream: &mut tonic::Streaming<dp::ListAndWatchResponse>, want: usize) {
    tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let msg = stream.message().await.unwrap().unwrap();
            if msg.devices.iter().filter(|d| d.health == "Healthy").count() == want {
                return;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("never {want} healthy tokens"));
}

async fn set_up(nl: &RtNetlink, name: &str, up: bool) {
    let index = nl.link(&name.into()).await.unwrap().unwrap().index;
    let msg = if up {
        LinkUnspec::new_with_index(index).up().build()
    } else {
        LinkUnspec::new_with_index(index).down().build()
    };
    nl.handle().link().change(msg).execute().await.unwrap();
}

/// `sriov.link.health.changes` for the resource, `health` and `cause`.
fn changes(
    provider: &SdkMeterProvider,
    exporter: &InMemoryMetricExporter,
    health: &str,
    cause: &str,
) -> u64 {
    exporter.reset();
    provider.force_flush().unwrap();
    let mut total = 0;
    for rm in exporter.get_finished_metrics().unwrap() {
        for sm in rm.scope_metrics() {
            for m in sm
                .metrics()
                .filter(|m| m.name() == sriov_forwarder::metrics::LINK_HEALTH_CHANGES)
            {
                let AggregatedMetrics::U64(MetricData::Sum(s)) = m.data() else {
                    panic!("not a u64 counter");
                };
                for p in s.data_points() {
                    let has = |k: &str, v: &str| {
                        p.attributes()
                            .any(|kv| kv.key.as_str() == k && kv.value.to_string() == v)
                    };
                    if has("resource", RESOURCE) && has("health", health) && has("cause", cause) {
                        total += p.value();
                    }
                }
            }
        }
    }
    total
}

#[test]
fn pf_carrier_and_vf_driver_reach_list_and_watch() {
    let exporter = InMemoryMetricExporter::default();
    let provider = SdkMeterProvider::builder()
        .with_reader(PeriodicReader::builder(exporter.clone()).build())
        .build();
    opentelemetry::global::set_meter_provider(provider.clone());
    sriov_netlink::testing::in_private_netns(
        "pf_carrier_and_vf_driver_reach_list_and_watch",
        |nl| async move {
            let root = tempfile::tempdir().unwrap();
            let root = root.path();
            let fake = fixtures::x710_2port(FakeSysfs::builder()).build().unwrap();
            // The PF's netdev as the fixture names it; its peer decides the carrier.
            sriov_netlink::testing::add_veth(nl.handle(), "ens785f0", "peer0")
                .await
                .unwrap();
            set_up(&nl, "ens785f0", true).await;
            set_up(&nl, "peer0", true).await;
            let _nsmgr = FakeNsmgr::start(root.join("nsm.sock")).await.unwrap();
            let kubelet =
                FakeKubelet::start(&root.join("device-plugins"), &root.join("pod-resources"))
                    .unwrap();
            let running = Forwarder::builder(env(root))
                .sysfs(fake.sysfs())
                .start()
                .await
                .unwrap();
            let mut stream = kubelet
                .plugin(RESOURCE)
                .await
                .unwrap()
                .list_and_watch(dp::Empty {})
                .await
                .unwrap()
                .into_inner();
            healthy_becomes(&mut stream, 4).await;

            set_up(&nl, "peer0", false).await;
            healthy_becomes(&mut stream, 0).await;
            assert_eq!(changes(&provider, &exporter, "unhealthy", "link_down"), 4);
            set_up(&nl, "peer0", true).await;
            healthy_becomes(&mut stream, 4).await;
            assert_eq!(changes(&provider, &exporter, "healthy", "link_down"), 4);

            let sysfs = fake.sysfs();
            let vf = "0000:3b:02.1".parse().unwrap();
            sysfs.unbind(vf).unwrap();
            sriov_netlink::testing::add_veth(nl.handle(), "kick0", "kick1")
                .await
                .unwrap();
            healthy_becomes(&mut stream, 3).await;
            assert_eq!(
                changes(&provider, &exporter, "unhealthy", "driver_unbound"),
                1
            );
            sysfs.bind(vf, "iavf").unwrap();
            let kick = nl.link(&"kick0".into()).await.unwrap().unwrap();
            nl.handle().link().del(kick.index).execute().await.unwrap();
            healthy_becomes(&mut stream, 4).await;

            running.shutdown().await;
        },
    );
}
