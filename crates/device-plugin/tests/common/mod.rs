//! The crate's fake kubelet set up for a temp dir, an in-memory backend,
//! and client helpers.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    missing_docs,
    unreachable_pub
)]

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sriov_api::kubelet::deviceplugin::v1beta1::device_plugin_client::DevicePluginClient;
use sriov_api::tonic::transport::Channel;
pub use sriov_deviceplugin::fake::FakeKubelet;
use sriov_deviceplugin::{
    AllocateError, Backend, ContainerAllocateResponse, Device, DevicePlugin, PluginConfig,
    RegistrationMode, connect_unix,
};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

pub const RESOURCE: &str = "example.com/sriov_a";

/// Two VFs of one PF on NUMA node 0.
pub fn two_vfs() -> Vec<Device> {
    vec![
        vf("0000:3b:02.0", "0000:3b:00.0", 0),
        vf("0000:3b:02.1", "0000:3b:00.0", 0),
    ]
}

/// Waits until `kubelet` holds `n` registrations and the plugin counted `n`.
pub async fn registered(h: &Harness, kubelet: &FakeKubelet, n: usize) {
    eventually("registration", || kubelet.registrations().len() >= n).await;
    let mut rx = h.registrations.clone();
    tokio::time::timeout(Duration::from_secs(20), rx.wait_for(|c| *c >= n as u64))
        .await
        .expect("registration counted")
        .unwrap();
}

/// Waits for `cond` to hold; fails the test after a generous deadline (the
/// deadline only turns a hang into a failure, it measures nothing).
pub async fn eventually<F: FnMut() -> bool>(what: &str, mut cond: F) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

// ---------------------------------------------------------------- backend

pub fn vf(id: &str, pf: &str, numa: i64) -> Device {
    Device {
        id: id.into(),
        healthy: true,
        numa_node: Some(numa),
        group: Some(pf.into()),
    }
}

/// Devices in a watch channel, allocations in a set.
pub struct MemBackend {
    pub devices: watch::Sender<Vec<Device>>,
    pub allocated: Mutex<HashSet<String>>,
    pub released: Mutex<Vec<String>>,
}

impl MemBackend {
    pub fn new(devices: Vec<Device>) -> Arc<Self> {
        Arc::new(Self {
            devices: watch::channel(devices).0,
            allocated: Mutex::new(HashSet::new()),
            released: Mutex::new(Vec::new()),
        })
    }
}

impl Backend for MemBackend {
    fn devices(&self) -> watch::Receiver<Vec<Device>> {
        self.devices.subscribe()
    }

    fn allocate(
        &self,
        containers: &[Vec<String>],
    ) -> Result<Vec<ContainerAllocateResponse>, AllocateError> {
        let devices = self.devices.borrow().clone();
        let mut allocated = self.allocated.lock().unwrap();
        for id in containers.iter().flatten() {
            match devices.iter().find(|d| &d.id == id) {
                None => return Err(AllocateError::UnknownDevice { id: id.clone() }),
                Some(d) if !d.healthy => {
                    return Err(AllocateError::Unavailable {
                        id: id.clone(),
                        reason: "unhealthy".into(),
                    });
                }
                Some(_) if allocated.contains(id) => {
                    return Err(AllocateError::Unavailable {
                        id: id.clone(),
                        reason: "already allocated".into(),
                    });
                }
                Some(_) => {}
            }
        }
        allocated.extend(containers.iter().flatten().cloned());
        Ok(containers
            .iter()
            .map(|ids| ContainerAllocateResponse {
                envs: HashMap::from([("NSM_SRIOV_TOKENS_sriov_a".to_string(), ids.join(","))]),
                ..Default::default()
            })
            .collect())
    }

    fn allocated(&self) -> Vec<String> {
        let mut v: Vec<String> = self.allocated.lock().unwrap().iter().cloned().collect();
        v.sort();
        v
    }

    fn release(&self, ids: &[String]) {
        let mut allocated = self.allocated.lock().unwrap();
        for id in ids {
            allocated.remove(id);
        }
        self.released.lock().unwrap().extend(ids.iter().cloned());
    }
}

// ---------------------------------------------------------- fake kubelet

/// A fake kubelet serving `<dir>/kubelet.sock`, with its pod-resources
/// socket in a sibling `pod-resources/` that no plugin here dials.
pub fn start_kubelet(dir: &Path) -> FakeKubelet {
    FakeKubelet::start(dir, &dir.with_file_name("pod-resources")).unwrap()
}

// ------------------------------------------------------------------ plugin

/// A temp kubelet root with `device-plugins/` (and, if asked,
/// `plugins_registry/`), and a running plugin.
pub struct Harness {
    pub root: tempfile::TempDir,
    pub cfg: PluginConfig,
    pub registrations: watch::Receiver<u64>,
    pub registered: watch::Receiver<bool>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl Harness {
    pub fn dp_dir(&self) -> PathBuf {
        self.cfg.device_plugin_dir.clone()
    }

    pub fn socket(&self) -> PathBuf {
        let mode = self.cfg.resolved_mode();
        self.cfg.socket_path(mode)
    }

    /// Stops the plugin and hands back the temp root so callers can look
    /// at what was left in it.
    pub async fn stop(mut self) -> tempfile::TempDir {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            t.await.unwrap();
        }
        self.root
    }
}

pub fn config(root: &Path, mode: RegistrationMode) -> PluginConfig {
    let mut cfg = PluginConfig::new(RESOURCE);
    cfg.device_plugin_dir = root.join("device-plugins");
    cfg.plugins_registry_dir = root.join("plugins_registry");
    cfg.mode = mode;
    cfg.retry_initial = Duration::from_millis(20);
    cfg.retry_max = Duration::from_millis(200);
    cfg.call_timeout = Duration::from_secs(5);
    std::fs::create_dir_all(&cfg.device_plugin_dir).unwrap();
    cfg
}

pub fn start_plugin<B: Backend + ?Sized>(
    root: tempfile::TempDir,
    cfg: PluginConfig,
    backend: Arc<B>,
) -> Harness {
    let plugin = DevicePlugin::new(cfg.clone(), backend);
    let registrations = plugin.registrations();
    let registered = plugin.registered();
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(plugin.run(async {
        let _ = rx.await;
    }));
    Harness {
        root,
        cfg,
        registrations,
        registered,
        stop: Some(tx),
        task: Some(task),
    }
}

pub async fn plugin_client(path: &Path) -> DevicePluginClient<Channel> {
    DevicePluginClient::new(connect_unix(path).await.unwrap())
}

/// Records which names get created in a directory (inode numbers are
/// reused at once on tmpfs, so they can't tell a re-created socket).
pub struct DirEvents {
    ino: nix::sys::inotify::Inotify,
    seen: Mutex<Vec<std::ffi::OsString>>,
}

impl DirEvents {
    pub fn new(dir: &Path) -> Self {
        use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
        let ino = Inotify::init(InitFlags::IN_NONBLOCK).unwrap();
        ino.add_watch(dir, AddWatchFlags::IN_CREATE).unwrap();
        Self {
            ino,
            seen: Mutex::new(Vec::new()),
        }
    }

    pub fn saw_created(&self, name: &str) -> bool {
        if let Ok(evs) = self.ino.read_events() {
            self.seen
                .lock()
                .unwrap()
                .extend(evs.into_iter().filter_map(|e| e.name));
        }
        self.seen.lock().unwrap().iter().any(|n| n == name)
    }
}
