//! Hot reload through the binary: config rewrites, ConfigMap-style symlink swaps and SIGHUP,
//! seen by a fake kubelet (registrations, ListAndWatch) and in the CDI specs on disk.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::Signal;
use sriov_api::kubelet::deviceplugin::v1beta1 as dp;
use sriov_api::kubelet::deviceplugin::v1beta1::device_plugin_client::DevicePluginClient;
use sriov_api::tonic;
use sriov_deviceplugin::connect_unix;
use sriov_deviceplugin::fake::FakeKubelet;
use sriov_pci_fake::{FakeSysfs, fixtures};

const BIN: &str = env!("CARGO_BIN_EXE_sriov-device-plugin");

/// Every x710 VF (8, four per PF) and the ConnectX-5's two functions.
const ALL: &str = r#"{"resourceList":[
    {"resourceName":"x710","selectors":{"vendors":["8086"],"drivers":["iavf"]}},
    {"resourceName":"cx5","resourcePrefix":"nvidia.com","selectors":{"drivers":["mlx5_core"]}}
]}"#;

/// x710 narrowed to port 0, cx5 gone, port 1's VFs in a new pool.
const SPLIT: &str = r#"{"resourceList":[
    {"resourceName":"x710","selectors":{"pfNames":["ens785f0"]}},
    {"resourceName":"x710b","selectors":{"pfNames":["ens785f1"]}}
]}"#;

const PORT0: [&str; 4] = [
    "0000:3b:02.0",
    "0000:3b:02.1",
    "0000:3b:02.2",
    "0000:3b:02.3",
];
const PORT1: [&str; 4] = [
    "0000:3b:0a.0",
    "0000:3b:0a.1",
    "0000:3b:0a.2",
    "0000:3b:0a.3",
];

struct Node {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    fake: FakeSysfs,
    config: PathBuf,
}

impl Node {
    /// The config at `etc/config.json`, a plain file.
    fn new(config: &str) -> Self {
        let node = Self::bare();
        std::fs::create_dir_all(node.config.parent().unwrap()).unwrap();
        std::fs::write(&node.config, config).unwrap();
        node
    }

    fn bare() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_path_buf();
        let fake = fixtures::node().build().unwrap();
        std::fs::create_dir_all(root.join("device-plugins")).unwrap();
        std::fs::create_dir_all(root.join("dev")).unwrap();
        std::fs::write(
            root.join("route"),
            "Iface\tDestination\tGateway\tFlags\tRefCnt\tUse\tMetric\tMask\n",
        )
        .unwrap();
        Self {
            config: root.join("etc/config.json"),
            _tmp: tmp,
            root,
            fake,
        }
    }

    /// As kubelet lays out a ConfigMap volume: `config.json -> ..data/config.json`,
    /// `..data -> ..v1`.
    fn configmap(config: &str) -> Self {
        let node = Self::bare();
        let etc = node.root.join("etc");
        std::fs::create_dir_all(etc.join("..v1")).unwrap();
        std::fs::write(etc.join("..v1/config.json"), config).unwrap();
        std::os::unix::fs::symlink("..v1", etc.join("..data")).unwrap();
        std::os::unix::fs::symlink("..data/config.json", &node.config).unwrap();
        node
    }

    /// Kubelet's atomic update of a ConfigMap volume: a new timestamped dir, a temp symlink
    /// renamed over `..data`, the old dir removed.
    fn swap_configmap(&self, version: u32, config: &str) {
        let etc = self.root.join("etc");
        let dir = format!("..v{version}");
        std::fs::create_dir(etc.join(&dir)).unwrap();
        std::fs::write(etc.join(&dir).join("config.json"), config).unwrap();
        std::os::unix::fs::symlink(&dir, etc.join("..data_tmp")).unwrap();
        let old = std::fs::read_link(etc.join("..data")).unwrap();
        std::fs::rename(etc.join("..data_tmp"), etc.join("..data")).unwrap();
        std::fs::remove_dir_all(etc.join(old)).unwrap();
    }

    /// Rewrites the config in place, as an editor or `kubectl cp` would.
    fn rewrite(&self, config: &str) {
        std::fs::write(&self.config, config).unwrap();
    }

    fn spawn(&self, extra: &[&str], rust_log: &str) -> Plugin {
        let p = |rel: &str| self.root.join(rel).display().to_string();
        let mut child = Command::new(BIN)
            .arg(format!("--config-file={}", self.config.display()))
            .arg(format!("--sysfs-root={}", self.fake.root().display()))
            .arg(format!("--proc-net-route={}", p("route")))
            .arg(format!("--dev-dir={}", p("dev")))
            .arg(format!("--device-plugin-dir={}", p("device-plugins")))
            .arg(format!("--plugins-registry-dir={}", p("plugins_registry")))
            .arg(format!(
                "--pod-resources-socket={}",
                p("pod-resources.sock")
            ))
            .arg(format!("--devinfo-dir={}", p("devinfo")))
            .arg(format!("--cdi-dir={}", p("cdi")))
            .arg("--link-health=none")
            .arg("--log-format=json")
            .args(extra)
            .env("RUST_LOG", rust_log)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let mut stderr = child.stderr.take().unwrap();
        let sink = log.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stderr.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Plugin { child, log }
    }

    fn socket(&self, resource: &str) -> PathBuf {
        self.root
            .join("device-plugins")
            .join(format!("{}.sock", resource.replace('/', "_")))
    }

    /// A fake kubelet whose pod-resources socket is not the one the plugin polls: with no
    /// pods reported there, the plugin would release what the tests allocate.
    fn kubelet(&self) -> FakeKubelet {
        FakeKubelet::start(
            &self.root.join("device-plugins"),
            &self.root.join("kubelet-pod-resources"),
        )
        .unwrap()
    }

    fn cdi_spec(&self, resource: &str) -> PathBuf {
        let (prefix, name) = resource.split_once('/').unwrap();
        self.root
            .join("cdi")
            .join(format!("sriov-dp-{prefix}-net-pci-{name}.json"))
    }
}

struct Plugin {
    child: Child,
    log: Arc<Mutex<String>>,
}

impl Drop for Plugin {
    /// A failed test must not leave its plugin running.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Plugin {
    fn signal(&self, sig: Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.child.id() as i32), sig).unwrap();
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    fn terminate(&mut self) -> String {
        self.signal(Signal::SIGTERM);
        let status = self.child.wait().unwrap();
        assert!(status.success(), "{status:?}");
        // The reader thread ends with the pipe.
        std::thread::sleep(Duration::from_millis(50));
        self.log()
    }
}

async fn eventually<F: FnMut() -> bool>(what: &str, mut cond: F) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn registrations_of(kubelet: &FakeKubelet, resource: &str) -> usize {
    kubelet
        .registrations()
        .iter()
        .filter(|r| r.resource_name == resource)
        .count()
}

type Stream = tonic::Streaming<dp::ListAndWatchResponse>;

async fn list_and_watch(sock: &Path) -> Stream {
    DevicePluginClient::new(connect_unix(sock).await.unwrap())
        .list_and_watch(dp::Empty {})
        .await
        .unwrap()
        .into_inner()
}

fn ids(msg: &dp::ListAndWatchResponse) -> Vec<String> {
    msg.devices.iter().map(|d| d.id.clone()).collect()
}

/// Waits for a ListAndWatch message listing exactly `want`.
async fn lists(stream: &mut Stream, want: &[&str]) {
    let found = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let msg = stream.message().await.unwrap().expect("stream ended");
            if ids(&msg) == want {
                return;
            }
        }
    })
    .await;
    assert!(found.is_ok(), "ListAndWatch never listed {want:?}");
}

async fn allocate(sock: &Path, id: &str) {
    DevicePluginClient::new(connect_unix(sock).await.unwrap())
        .allocate(dp::AllocateRequest {
            container_requests: vec![dp::ContainerAllocateRequest {
                devices_ids: vec![id.into()],
            }],
        })
        .await
        .unwrap();
}

fn cdi_devices(path: &Path) -> Vec<String> {
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    v["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap().to_string())
        .collect()
}

fn cdi_files(node: &Node) -> BTreeSet<String> {
    std::fs::read_dir(node.root.join("cdi"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rewriting_the_config_adds_removes_and_changes_pools_under_a_running_kubelet() {
    let node = Node::new(ALL);
    let kubelet = node.kubelet();
    let mut plugin = node.spawn(&[], "warn");
    eventually("x710 and cx5 registered", || {
        registrations_of(&kubelet, "intel.com/x710") == 1
            && registrations_of(&kubelet, "nvidia.com/cx5") == 1
    })
    .await;
    let mut x710 = list_and_watch(&node.socket("intel.com/x710")).await;
    lists(&mut x710, &[&PORT0[..], &PORT1[..]].concat()).await;

    node.rewrite(SPLIT);
    // The same stream carries the narrowed pool: no new registration.
    lists(&mut x710, &PORT0).await;
    eventually("x710b registered", || {
        registrations_of(&kubelet, "intel.com/x710b") == 1
    })
    .await;
    let mut x710b = list_and_watch(&node.socket("intel.com/x710b")).await;
    lists(&mut x710b, &PORT1).await;
    eventually("cx5's socket removed", || {
        !node.socket("nvidia.com/cx5").exists()
    })
    .await;
    assert_eq!(registrations_of(&kubelet, "intel.com/x710"), 1);

    // Back again: cx5 registers anew, x710b's devices go back to x710 (first match wins).
    node.rewrite(ALL);
    lists(&mut x710, &[&PORT0[..], &PORT1[..]].concat()).await;
    eventually("cx5 registered again", || {
        registrations_of(&kubelet, "nvidia.com/cx5") == 2
    })
    .await;
    eventually("x710b's socket removed", || {
        !node.socket("intel.com/x710b").exists()
    })
    .await;
    let log = plugin.terminate();
    assert!(!log.contains("ERROR"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_a_pod_holds_is_never_advertised_by_a_second_pool_after_a_reload() {
    let node = Node::new(ALL);
    let kubelet = node.kubelet();
    let mut plugin = node.spawn(&[], "info");
    eventually("x710 registered", || {
        registrations_of(&kubelet, "intel.com/x710") == 1
    })
    .await;
    let mut x710 = list_and_watch(&node.socket("intel.com/x710")).await;
    lists(&mut x710, &[&PORT0[..], &PORT1[..]].concat()).await;
    allocate(&node.socket("intel.com/x710"), "0000:3b:0a.0").await;

    // x710 no longer takes port 1; x710b does, but not the VF x710 handed out.
    node.rewrite(SPLIT);
    lists(&mut x710, &PORT0).await;
    eventually("x710b registered", || {
        registrations_of(&kubelet, "intel.com/x710b") == 1
    })
    .await;
    let mut x710b = list_and_watch(&node.socket("intel.com/x710b")).await;
    lists(&mut x710b, &PORT1[1..]).await;

    // x710 removed: what its pod holds stays withheld.
    node.rewrite(
        r#"{"resourceList":[
            {"resourceName":"x710b","selectors":{"pfNames":["ens785f1"]}}
        ]}"#,
    );
    eventually("x710's socket removed", || {
        !node.socket("intel.com/x710").exists()
    })
    .await;
    // The pools are refreshed under a new config before it is reported applied.
    eventually("both reloads applied", || {
        plugin.log().matches("config reloaded").count() == 2
    })
    .await;
    let mut x710b = list_and_watch(&node.socket("intel.com/x710b")).await;
    lists(&mut x710b, &PORT1[1..]).await;
    // x710 back: it takes over what its pod holds, and lists it again.
    node.rewrite(ALL);
    eventually("x710 registered again", || {
        registrations_of(&kubelet, "intel.com/x710") == 2
    })
    .await;
    let mut x710 = list_and_watch(&node.socket("intel.com/x710")).await;
    lists(&mut x710, &[&PORT0[..], &PORT1[..]].concat()).await;
    plugin.terminate();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configmap_swaps_reload_and_an_invalid_config_keeps_the_running_one() {
    let node = Node::configmap(ALL);
    let kubelet = node.kubelet();
    let mut plugin = node.spawn(&[], "info");
    eventually("x710 registered", || {
        registrations_of(&kubelet, "intel.com/x710") == 1
    })
    .await;
    let mut x710 = list_and_watch(&node.socket("intel.com/x710")).await;
    lists(&mut x710, &[&PORT0[..], &PORT1[..]].concat()).await;

    node.swap_configmap(2, SPLIT);
    lists(&mut x710, &PORT0).await;
    eventually("x710b registered", || {
        registrations_of(&kubelet, "intel.com/x710b") == 1
    })
    .await;

    node.swap_configmap(
        3,
        r#"{"resourceList":[{"resourceName":"x710","selectors":{"pfNames":["ens785f0#3-1"]}}]}"#,
    );
    eventually("the refusal logged", || {
        plugin.log().contains("the running config stays")
    })
    .await;
    let log = plugin.log();
    assert!(
        log.contains("resourceList[0].selectors.pfNames[0]")
            && log.contains("ends before it starts"),
        "the same error as at start-up: {log}"
    );
    assert!(plugin.alive());
    assert!(node.socket("intel.com/x710").exists());
    assert!(node.socket("intel.com/x710b").exists());

    // Valid again: the next change is applied on top of the running config.
    node.swap_configmap(4, ALL);
    lists(&mut x710, &[&PORT0[..], &PORT1[..]].concat()).await;
    assert_eq!(registrations_of(&kubelet, "intel.com/x710"), 1);
    plugin.terminate();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_a_change_the_directory_watch_cannot_see_and_does_not_stop() {
    let node = Node::bare();
    // The config path is a symlink into another directory: edits there are invisible to the
    // watch on the config path's directory, SIGHUP is how they are taken.
    let elsewhere = node.root.join("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    std::fs::write(elsewhere.join("real.json"), ALL).unwrap();
    std::fs::create_dir_all(node.config.parent().unwrap()).unwrap();
    std::os::unix::fs::symlink(elsewhere.join("real.json"), &node.config).unwrap();
    let kubelet = node.kubelet();
    let mut plugin = node.spawn(&[], "info");
    eventually("x710 registered", || {
        registrations_of(&kubelet, "intel.com/x710") == 1
    })
    .await;
    let mut x710 = list_and_watch(&node.socket("intel.com/x710")).await;
    lists(&mut x710, &[&PORT0[..], &PORT1[..]].concat()).await;

    std::fs::write(elsewhere.join("real.json"), SPLIT).unwrap();
    plugin.signal(Signal::SIGHUP);
    lists(&mut x710, &PORT0).await;
    assert!(plugin.alive(), "SIGHUP reloads, it does not stop");
    let log = plugin.terminate();
    assert!(
        log.contains(r#""trigger":"SIGHUP""#) && log.contains("config reloaded"),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cdi_specs_hold_exactly_the_pools_devices_after_a_reload_and_a_restart() {
    let node = Node::new(ALL);
    let kubelet = node.kubelet();
    let mut plugin = node.spawn(&["--use-cdi"], "warn");
    eventually("x710 and cx5 registered", || {
        registrations_of(&kubelet, "intel.com/x710") == 1
            && registrations_of(&kubelet, "nvidia.com/cx5") == 1
    })
    .await;
    let x710_spec = node.cdi_spec("intel.com/x710");
    eventually("x710's spec", || x710_spec.exists()).await;
    assert_eq!(cdi_devices(&x710_spec).len(), 8);
    assert_eq!(cdi_devices(&node.cdi_spec("nvidia.com/cx5")).len(), 2);

    node.rewrite(SPLIT);
    let x710b_spec = node.cdi_spec("intel.com/x710b");
    eventually("x710b's spec", || x710b_spec.exists()).await;
    let served = BTreeSet::from([
        "sriov-dp-intel.com-net-pci-x710.json".to_string(),
        "sriov-dp-intel.com-net-pci-x710b.json".to_string(),
    ]);
    eventually("cx5's spec removed with its resource", || {
        cdi_files(&node) == served
    })
    .await;
    assert_eq!(cdi_devices(&x710_spec), PORT0);
    assert_eq!(cdi_devices(&x710b_spec), PORT1);
    plugin.terminate();

    // A restart after an unclean stop: stale specs (a removed resource's, a pool's with a
    // device it no longer has) are replaced by exactly the pools' devices.
    std::fs::write(node.cdi_spec("nvidia.com/cx5"), "{}").unwrap();
    std::fs::write(
        &x710_spec,
        r#"{"cdiVersion":"0.5.0","kind":"intel.com/net-pci","devices":[{"name":"0000:3b:0a.0","containerEdits":{"deviceNodes":[]}}]}"#,
    )
    .unwrap();
    let mut plugin = node.spawn(&["--use-cdi"], "warn");
    eventually("both pools' specs rewritten", || {
        x710b_spec.exists() && x710_spec.exists() && cdi_devices(&x710_spec) == PORT0
    })
    .await;
    assert_eq!(cdi_devices(&x710b_spec), PORT1);
    assert!(!node.cdi_spec("nvidia.com/cx5").exists());
    plugin.terminate();
}
