#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Live reconfiguration: the forwarder on a fake sysfs tree beside a fake
//! kubelet and a fake NSM manager follows its config file (inotify on its
//! directory, and `Running::reload`) and sysfs (`Running::rescan`):
//! resources registered and unregistered, device lists streamed again,
//! held tokens kept and never advertised twice, an invalid config refused.

mod support;

use std::path::Path;
use std::time::Duration;

use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData};
use opentelemetry_sdk::metrics::{InMemoryMetricExporter, PeriodicReader, SdkMeterProvider};
use sriov_api::kubelet::deviceplugin::v1beta1 as dp;
use sriov_deviceplugin::fake::FakeKubelet;
use sriov_forwarder::{Forwarder, Running};
use sriov_nsm::fake::FakeNsmgr;
use sriov_pci_fake::{FakeSysfs, fixtures};
use tonic::Streaming;

const TEN_G: &str = "worker.domain/10G";
const FAST: &str = "worker.domain/fast";
/// Only turns a hang into a failure; measures nothing.
const PATIENCE: Duration = Duration::from_secs(30);

fn pf(address: &str, capability: &str) -> String {
    format!(
        "  {address}:\n    pfKernelDriver: i40e\n    vfKernelDriver: iavf\n    \
         capabilities: [{capability}]\n    serviceDomains: [worker.domain]\n"
    )
}

fn config(pfs: &[(&str, &str)]) -> String {
    let mut text = "physicalFunctions:\n".to_string();
    for (address, capability) in pfs {
        text.push_str(&pf(address, capability));
    }
    text
}

/// Writes `text` as editors and ConfigMaps do: a new file renamed over it.
fn write_config(root: &Path, text: &str) {
    let dir = root.join("config");
    let tmp = dir.join(".sriov.yaml.tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, dir.join("sriov.yaml")).unwrap();
}

/// Writes `text` as kubelet updates a ConfigMap volume: a new timestamped
/// directory, and the `..data` symlink renamed to point at it; the file
/// itself is a symlink through `..data` that never changes.
fn swap_configmap(root: &Path, version: u32, text: &str) {
    let dir = root.join("config");
    let data = format!("..2026_12_07_{version:02}");
    std::fs::create_dir_all(dir.join(&data)).unwrap();
    std::fs::write(dir.join(&data).join("sriov.yaml"), text).unwrap();
    std::os::unix::fs::symlink(&data, dir.join("..data_tmp")).unwrap();
    std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
    if !dir.join("sriov.yaml").exists() {
        std::os::unix::fs::symlink("..data/sriov.yaml", dir.join("sriov.yaml")).unwrap();
    }
}

fn env(root: &Path) -> sriov_config::EnvConfig {
    support::env(
        root,
        "forwarder-reload",
        "config/sriov.yaml",
        &[("NSM_RESOURCE_POLL_TIMEOUT", "100ms")],
    )
}

struct Node {
    dir: tempfile::TempDir,
    fake: FakeSysfs,
    kubelet: FakeKubelet,
    _nsmgr: FakeNsmgr,
    running: Running,
}

impl Node {
    async fn start(text: &str) -> Self {
        Self::start_with(|root| write_config(root, text)).await
    }

    /// Starts once `write` has put the config in place.
    async fn start_with(write: impl FnOnce(&Path)) -> Self {
        meter();
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("config")).unwrap();
        write(root);
        let fake = fixtures::x710_2port(FakeSysfs::builder()).build().unwrap();
        let nsmgr = FakeNsmgr::start(root.join("nsm.sock")).await.unwrap();
        let kubelet =
            FakeKubelet::start(&root.join("device-plugins"), &root.join("pod-resources")).unwrap();
        let running = Forwarder::builder(env(root))
            .sysfs(fake.sysfs())
            .start()
            .await
            .unwrap();
        tokio::time::timeout(PATIENCE, running.ready())
            .await
            .expect("ready");
        Self {
            dir,
            fake,
            kubelet,
            _nsmgr: nsmgr,
            running,
        }
    }

    fn root(&self) -> &Path {
        self.dir.path()
    }

    async fn watch(&self, resource: &str) -> Streaming<dp::ListAndWatchResponse> {
        let mut client = self.kubelet.plugin(resource).await.unwrap();
        client
            .list_and_watch(dp::Empty {})
            .await
            .unwrap()
            .into_inner()
    }

    async fn allocate(&self, resource: &str, ids: &[String]) -> Result<(), tonic::Status> {
        let mut client = self.kubelet.plugin(resource).await.unwrap();
        client
            .allocate(dp::AllocateRequest {
                container_requests: vec![dp::ContainerAllocateRequest {
                    devices_ids: ids.to_vec(),
                }],
            })
            .await
            .map(|_| ())
    }

    fn socket_of(&self, resource: &str) -> std::path::PathBuf {
        self.root()
            .join("device-plugins")
            .join(sriov_deviceplugin::socket_name_for(resource))
    }
}

/// The next list the stream sends that satisfies `want`.
async fn list_where(
    stream: &mut Streaming<dp::ListAndWatchResponse>,
    want: impl Fn(&[dp::Device]) -> bool,
) -> Vec<dp::Device> {
    tokio::time::timeout(PATIENCE, async {
        loop {
            let list = stream
                .message()
                .await
                .unwrap()
                .expect("stream open")
                .devices;
            if want(&list) {
                return list;
            }
        }
    })
    .await
    .expect("the list kubelet waits for")
}

fn healthy(list: &[dp::Device]) -> Vec<String> {
    list.iter()
        .filter(|d| d.health == "Healthy")
        .map(|d| d.id.clone())
        .collect()
}

async fn gone(path: &Path) {
    tokio::time::timeout(PATIENCE, async {
        while path.exists() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{} stayed", path.display()));
}

/// One meter provider for every test of this file: the crate fetches its
/// instruments once per process.
fn meter() -> &'static (SdkMeterProvider, InMemoryMetricExporter) {
    static METER: std::sync::OnceLock<(SdkMeterProvider, InMemoryMetricExporter)> =
        std::sync::OnceLock::new();
    METER.get_or_init(|| {
        let exporter = InMemoryMetricExporter::default();
        let provider = SdkMeterProvider::builder()
            .with_reader(PeriodicReader::builder(exporter.clone()).build())
            .build();
        opentelemetry::global::set_meter_provider(provider.clone());
        (provider, exporter)
    })
}

/// `sriov.reloads` with this result, across this file's tests.
fn reloads(result: &str) -> u64 {
    let (provider, exporter) = meter();
    exporter.reset();
    provider.force_flush().unwrap();
    let mut total = 0;
    for rm in exporter.get_finished_metrics().unwrap() {
        for sm in rm.scope_metrics() {
            for m in sm.metrics().filter(|m| m.name() == "sriov.reloads") {
                if let AggregatedMetrics::U64(MetricData::Sum(s)) = m.data() {
                    total += s
                        .data_points()
                        .filter(|p| {
                            p.attributes().any(|kv| {
                                kv.key.as_str() == "result" && kv.value.to_string() == result
                            })
                        })
                        .map(|p| p.value())
                        .sum::<u64>();
                }
            }
        }
    }
    total
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resources_follow_the_config_file_and_held_tokens_are_never_advertised_twice() {
    let node = Node::start(&config(&[("0000:3b:00.0", "10G")])).await;
    let mut ten_g = node.watch(TEN_G).await;
    let first = list_where(&mut ten_g, |l| l.len() == 4).await;
    // A pod holds two of the four VFs.
    let held: Vec<String> = first[..2].iter().map(|d| d.id.clone()).collect();
    node.allocate(TEN_G, &held).await.unwrap();
    node.kubelet.set_pod("pod-1", TEN_G, &held);
    let ok_before = reloads("ok");

    // A resource added on PF0 and a PF added to 10G: the file is replaced,
    // the directory's inotify event reloads it.
    write_config(
        node.root(),
        &format!(
            "physicalFunctions:\n  0000:3b:00.0:\n    pfKernelDriver: i40e\n    \
             vfKernelDriver: iavf\n    capabilities: [10G, fast]\n    \
             serviceDomains: [worker.domain]\n{}",
            pf("0000:3b:00.1", "10G")
        ),
    );
    let registered = tokio::time::timeout(PATIENCE, node.kubelet.wait_registered(FAST))
        .await
        .expect("the new resource registers with kubelet");
    assert_eq!(registered.version, "v1beta1");
    let eight = list_where(&mut ten_g, |l| l.len() == 8).await;
    for id in &held {
        assert!(eight.iter().any(|d| &d.id == id), "pods keep their tokens");
    }
    // PF0's two VFs the pod holds are not offered to fast.
    let mut fast = node.watch(FAST).await;
    let fast_list = list_where(&mut fast, |l| l.len() == 4).await;
    assert_eq!(healthy(&fast_list).len(), 2, "{fast_list:?}");
    let all_fast: Vec<String> = fast_list.iter().map(|d| d.id.clone()).collect();
    let refused = node.allocate(FAST, &all_fast[..3]).await;
    assert!(
        refused.is_err(),
        "three of PF0's VFs for fast: only two are free"
    );

    // fast removed again: unregistered, its socket gone; readiness does not
    // wait for it.
    write_config(
        node.root(),
        &config(&[("0000:3b:00.0", "10G"), ("0000:3b:00.1", "10G")]),
    );
    gone(&node.socket_of(FAST)).await;
    tokio::time::timeout(PATIENCE, async {
        while let Ok(Some(m)) = fast.message().await {
            assert_eq!(m.devices.len(), 4, "never an emptied list before it goes");
        }
    })
    .await
    .expect("its ListAndWatch ends");
    tokio::time::timeout(PATIENCE, node.running.ready())
        .await
        .expect("still ready");
    assert!(node.socket_of(TEN_G).exists());

    // PF1 removed: 10G streams PF0's four again, the pod's two among them.
    let r = node.running.reload().await;
    assert!(r.unwrap().is_empty(), "an unchanged file changes nothing");
    write_config(node.root(), &config(&[("0000:3b:00.0", "10G")]));
    let four = list_where(&mut ten_g, |l| l.len() == 4).await;
    for id in &held {
        assert!(four.iter().any(|d| &d.id == id));
    }
    // Three file changes and one reload asked for.
    tokio::time::timeout(PATIENCE, async {
        while reloads("ok") < ok_before + 4 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("sriov.reloads{result=ok} counts them");
    node.running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_config_is_refused_naming_the_field_and_the_running_one_stays() {
    let node = Node::start(&config(&[("0000:3b:00.0", "10G")])).await;
    let mut ten_g = node.watch(TEN_G).await;
    list_where(&mut ten_g, |l| l.len() == 4).await;

    write_config(
        node.root(),
        "physicalFunctions:\n  0000:3b:00.0:\n    pfKernelDriver: i40e\n    \
         vfKernelDriver: iavf\n    capabilities: []\n    serviceDomains: [worker.domain]\n",
    );
    let invalid_before = reloads("invalid");
    let e = node.running.reload().await.expect_err("refused");
    assert!(reloads("invalid") > invalid_before, "counted");
    let mut said = e.to_string();
    let mut cause = std::error::Error::source(&e);
    while let Some(c) = cause {
        said.push_str(&format!(": {c}"));
        cause = c.source();
    }
    assert!(
        said.contains(
            "sriov.yaml:5: physicalFunctions.0000:3b:00.0.capabilities: must not be empty"
        ),
        "the same error check-config prints: {said}"
    );
    assert!(said.contains("the running one stays"), "{said}");
    // Still served, unchanged.
    assert!(node.socket_of(TEN_G).exists());
    let again = node.watch(TEN_G).await;
    let mut again = again;
    assert_eq!(list_where(&mut again, |_| true).await.len(), 4);

    // A valid one afterwards is taken.
    write_config(node.root(), &config(&[("0000:3b:00.1", "fast")]));
    tokio::time::timeout(PATIENCE, node.kubelet.wait_registered(FAST))
        .await
        .expect("fast registers");
    gone(&node.socket_of(TEN_G)).await;
    node.running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rescan_follows_numvfs_and_keeps_the_vfs_pods_hold() {
    let node = Node::start(&config(&[("0000:3b:00.0", "10G")])).await;
    let mut ten_g = node.watch(TEN_G).await;
    let four = list_where(&mut ten_g, |l| l.len() == 4).await;
    let pf = "0000:3b:00.0".parse().unwrap();

    // An operator raises sriov_numvfs: the kernel makes virtfn4 and 5.
    node.fake.sysfs().set_num_vfs(pf, 6).unwrap();
    let r = node.running.rescan().await.unwrap();
    assert_eq!(r.changed, [TEN_G]);
    let six = list_where(&mut ten_g, |l| l.len() == 6).await;
    assert_eq!(healthy(&six).len(), 6);
    for d in &four {
        assert!(six.iter().any(|s| s.id == d.id), "token IDs are kept");
    }

    // A pod holds one; numvfs lowered to 2: free tokens leave, the pod's stays.
    let held = vec![four[0].id.clone()];
    node.allocate(TEN_G, &held).await.unwrap();
    node.kubelet.set_pod("pod-1", TEN_G, &held);
    node.fake.sysfs().set_num_vfs(pf, 2).unwrap();
    node.running.rescan().await.unwrap();
    let two = list_where(&mut ten_g, |l| l.len() == 2).await;
    assert!(two.iter().any(|d| d.id == held[0]));
    node.running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configmap_update_is_seen_through_its_data_symlink() {
    let node =
        Node::start_with(|root| swap_configmap(root, 1, &config(&[("0000:3b:00.0", "10G")]))).await;
    let mut ten_g = node.watch(TEN_G).await;
    list_where(&mut ten_g, |l| l.len() == 4).await;

    swap_configmap(
        node.root(),
        2,
        &config(&[("0000:3b:00.0", "10G"), ("0000:3b:00.1", "10G")]),
    );
    list_where(&mut ten_g, |l| l.len() == 8).await;
    node.running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_resource_keeps_the_vfs_its_pod_holds_until_the_pod_goes() {
    let node = Node::start(
        "physicalFunctions:\n  0000:3b:00.0:\n    pfKernelDriver: i40e\n    \
         vfKernelDriver: iavf\n    capabilities: [10G, fast]\n    \
         serviceDomains: [worker.domain]\n",
    )
    .await;
    let mut fast = node.watch(FAST).await;
    let list = list_where(&mut fast, |l| l.len() == 4).await;
    let held: Vec<String> = list[..2].iter().map(|d| d.id.clone()).collect();
    node.allocate(FAST, &held).await.unwrap();
    node.kubelet.set_pod("pod-fast", FAST, &held);
    let mut ten_g = node.watch(TEN_G).await;
    let ten_g_ids: Vec<String> = list_where(&mut ten_g, |l| healthy(l).len() == 2)
        .await
        .iter()
        .map(|d| d.id.clone())
        .collect();

    // fast removed while its pod runs: 10G still gets only the two VFs
    // the pod does not hold (its list does not change).
    write_config(node.root(), &config(&[("0000:3b:00.0", "10G")]));
    gone(&node.socket_of(FAST)).await;
    let three = node.allocate(TEN_G, &ten_g_ids[..3]).await;
    assert!(three.is_err(), "only two VFs are free: {three:?}");

    // The pod goes: pod-resources shows it, its tokens are released and
    // 10G offers all four.
    node.kubelet.remove_pod("pod-fast");
    list_where(&mut ten_g, |l| healthy(l).len() == 4).await;
    node.running.shutdown().await;
}
