//! A fake kubelet (registration and pod-resources servers on real unix
//! sockets in a temp dir), an in-memory backend, and client helpers.
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

use sriov_api::kubelet::deviceplugin::v1beta1 as dp;
use sriov_api::kubelet::deviceplugin::v1beta1::device_plugin_client::DevicePluginClient;
use sriov_api::kubelet::podresources::v1 as pr;
use sriov_api::tonic::transport::{Channel, Server};
use sriov_api::tonic::{self, Request, Response, Status};
use sriov_deviceplugin::{
    AllocateError, Backend, ContainerAllocateResponse, Device, DevicePlugin, PluginConfig,
    RegistrationMode, connect_unix,
};
use tokio::net::UnixListener;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::UnixListenerStream;

pub const RESOURCE: &str = "example.com/sriov_a";

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

/// Kubelet's `Registration` service: records requests, and refuses the
/// first `refuse` of them.
#[derive(Clone, Default)]
pub struct Registrar {
    pub requests: Arc<Mutex<Vec<dp::RegisterRequest>>>,
    pub refuse: Arc<Mutex<usize>>,
    /// Never answer: a wedged kubelet.
    pub hang: Arc<std::sync::atomic::AtomicBool>,
    /// Calls seen, answered or not.
    pub calls: Arc<std::sync::atomic::AtomicUsize>,
}

#[tonic::async_trait]
impl dp::registration_server::Registration for Registrar {
    async fn register(
        &self,
        req: Request<dp::RegisterRequest>,
    ) -> Result<Response<dp::Empty>, Status> {
        use std::sync::atomic::Ordering;
        self.calls.fetch_add(1, Ordering::SeqCst);
        if self.hang.load(Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        {
            let mut refuse = self.refuse.lock().unwrap();
            if *refuse > 0 {
                *refuse -= 1;
                return Err(Status::unavailable("kubelet is not ready"));
            }
        }
        self.requests.lock().unwrap().push(req.into_inner());
        Ok(Response::new(dp::Empty {}))
    }
}

/// A gRPC server on a unix socket, stopped (and its socket removed) on drop
/// or `stop`.
pub struct UnixServer {
    pub path: PathBuf,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl UnixServer {
    pub async fn stop(mut self) {
        self.shutdown().await;
    }

    async fn shutdown(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

impl Drop for UnixServer {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

pub fn serve_unix(path: &Path, router: tonic::transport::server::Router) -> UnixServer {
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path).unwrap();
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        router
            .serve_with_incoming_shutdown(UnixListenerStream::new(listener), async {
                let _ = rx.await;
            })
            .await
            .unwrap();
    });
    UnixServer {
        path: path.to_owned(),
        stop: Some(tx),
        task: Some(task),
    }
}

/// Starts kubelet's registration server on `<dir>/kubelet.sock`.
pub fn start_kubelet(dir: &Path, registrar: &Registrar) -> UnixServer {
    let router = Server::builder().add_service(dp::registration_server::RegistrationServer::new(
        registrar.clone(),
    ));
    serve_unix(&dir.join("kubelet.sock"), router)
}

/// Kubelet's pod-resources server answering from a shared pod list.
#[derive(Clone, Default)]
pub struct PodLister {
    pub pods: Arc<Mutex<Vec<pr::PodResources>>>,
}

impl PodLister {
    pub fn set(&self, pods: &[(&str, &[&str])]) {
        *self.pods.lock().unwrap() = pods
            .iter()
            .map(|(name, ids)| pr::PodResources {
                name: name.to_string(),
                namespace: "default".into(),
                containers: vec![pr::ContainerResources {
                    name: "c".into(),
                    devices: vec![pr::ContainerDevices {
                        resource_name: RESOURCE.into(),
                        device_ids: ids.iter().map(|s| s.to_string()).collect(),
                        topology: None,
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            })
            .collect();
    }
}

#[tonic::async_trait]
impl pr::pod_resources_lister_server::PodResourcesLister for PodLister {
    async fn list(
        &self,
        _req: Request<pr::ListPodResourcesRequest>,
    ) -> Result<Response<pr::ListPodResourcesResponse>, Status> {
        Ok(Response::new(pr::ListPodResourcesResponse {
            pod_resources: self.pods.lock().unwrap().clone(),
        }))
    }

    async fn get_allocatable_resources(
        &self,
        _req: Request<pr::AllocatableResourcesRequest>,
    ) -> Result<Response<pr::AllocatableResourcesResponse>, Status> {
        Ok(Response::new(pr::AllocatableResourcesResponse::default()))
    }

    async fn get(
        &self,
        req: Request<pr::GetPodResourcesRequest>,
    ) -> Result<Response<pr::GetPodResourcesResponse>, Status> {
        let r = req.into_inner();
        let pods = self.pods.lock().unwrap();
        match pods
            .iter()
            .find(|p| p.name == r.pod_name && p.namespace == r.pod_namespace)
        {
            Some(p) => Ok(Response::new(pr::GetPodResourcesResponse {
                pod_resources: Some(p.clone()),
            })),
            None => Err(Status::not_found(format!("pod {} not found", r.pod_name))),
        }
    }
}

pub fn start_pod_resources(path: &Path, lister: &PodLister) -> UnixServer {
    let router = Server::builder().add_service(
        pr::pod_resources_lister_server::PodResourcesListerServer::new(lister.clone()),
    );
    serve_unix(path, router)
}

// ------------------------------------------------------------------ plugin

/// A temp kubelet root with `device-plugins/` (and, if asked,
/// `plugins_registry/`), and a running plugin.
pub struct Harness {
    pub root: tempfile::TempDir,
    pub cfg: PluginConfig,
    pub registrations: watch::Receiver<u64>,
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
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(plugin.run(async {
        let _ = rx.await;
    }));
    Harness {
        root,
        cfg,
        registrations,
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
