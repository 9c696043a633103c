//! `Allocate` over the plugin's unix socket, 10 000 calls, one at a time:
//! prints p50 and p99 latency (target p99 under 1 ms). Each call crosses
//! the `:authority` relay, tonic, and a backend that answers at once, so
//! the figure is the plugin's own overhead.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use sriov_api::kubelet::deviceplugin::v1beta1 as dp;
use sriov_deviceplugin::{
    AllocateError, Backend, ContainerAllocateResponse, Device, DevicePlugin, PluginConfig,
    RegistrationMode, connect_unix,
};
use tokio::sync::watch;

const CALLS: usize = 10_000;
const WARMUP: usize = 500;
/// `cargo test --all-targets` also runs this binary, without `--bench`:
/// then a short smoke run checks it works without spending CI minutes.
const SMOKE_CALLS: usize = 200;

struct Instant0(watch::Sender<Vec<Device>>);

impl Backend for Instant0 {
    fn devices(&self) -> watch::Receiver<Vec<Device>> {
        self.0.subscribe()
    }
    fn allocate(
        &self,
        containers: &[Vec<String>],
    ) -> Result<Vec<ContainerAllocateResponse>, AllocateError> {
        Ok(containers
            .iter()
            .map(|ids| ContainerAllocateResponse {
                envs: [("NSM_SRIOV_TOKENS_bench".to_string(), ids.join(","))].into(),
                ..Default::default()
            })
            .collect())
    }
    fn allocated(&self) -> Vec<String> {
        Vec::new()
    }
    fn release(&self, _ids: &[String]) {}
}

fn calls_hint() -> usize {
    if std::env::args().any(|a| a == "--bench") {
        CALLS
    } else {
        SMOKE_CALLS
    }
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run());
}

async fn run() {
    let root = tempfile::tempdir().unwrap();
    let mut cfg = PluginConfig::new("bench.example.com/vf");
    cfg.device_plugin_dir = root.path().join("device-plugins");
    cfg.plugins_registry_dir = root.path().join("plugins_registry");
    cfg.mode = RegistrationMode::Kubelet;
    cfg.retry_max = Duration::from_secs(5);
    let sock = cfg.socket_path(RegistrationMode::Kubelet);
    let devices: Vec<Device> = (0..256)
        .map(|i| Device {
            id: format!("0000:3b:{:02x}.{}", 2 + i / 8, i % 8),
            healthy: true,
            numa_node: Some(0),
            group: Some("0000:3b:00.0".into()),
        })
        .collect();
    let ids: Vec<String> = devices.iter().map(|d| d.id.clone()).collect();
    let backend = Arc::new(Instant0(watch::channel(devices).0));
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    // No kubelet: registration keeps retrying in the background, as on a
    // node whose kubelet is down; serving does not depend on it.
    let plugin = tokio::spawn(DevicePlugin::new(cfg, backend).run(async {
        let _ = stop_rx.await;
    }));
    while !sock.exists() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut client =
        dp::device_plugin_client::DevicePluginClient::new(connect_unix(&sock).await.unwrap());
    let req = |i: usize| dp::AllocateRequest {
        container_requests: vec![dp::ContainerAllocateRequest {
            devices_ids: vec![ids[i % ids.len()].clone()],
        }],
    };
    for i in 0..WARMUP.min(calls_hint()) {
        client.allocate(req(i)).await.unwrap();
    }
    let calls = calls_hint();
    let mut lat = Vec::with_capacity(calls);
    let all = Instant::now();
    for i in 0..calls {
        let t = Instant::now();
        client.allocate(req(i)).await.unwrap();
        lat.push(t.elapsed());
    }
    let total = all.elapsed();
    lat.sort();
    let pct = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)];
    println!("allocate over unix socket: {calls} calls in {total:?}");
    println!(
        "allocate p50 {:?}  p99 {:?}  max {:?}  (target p99 < 1ms)",
        pct(0.50),
        pct(0.99),
        lat[lat.len() - 1]
    );
    let _ = stop_tx.send(());
    plugin.await.unwrap();
}
