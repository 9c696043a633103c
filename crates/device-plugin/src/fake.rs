//! A stand-in for kubelet, for this crate's tests, other crates' end-to-end
//! tests, the demo and the VM test (feature `fake`): the `Registration`
//! server on `kubelet.sock` in a device-plugin dir, and the pod-resources
//! server on `kubelet.sock` in a pod-resources dir, both on real unix
//! sockets, plus a client for the plugins that registered.
//!
//! Either server can be stopped and started again, and the registration
//! server can be made to refuse or to never answer, so that tests can play
//! the kubelets plugins meet in the field: absent, not ready, wedged,
//! restarting.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sriov_api::kubelet::deviceplugin::v1beta1 as dp;
use sriov_api::kubelet::deviceplugin::v1beta1::device_plugin_client::DevicePluginClient;
use sriov_api::kubelet::podresources::v1 as pr;
use tokio::net::UnixListener;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::UnixListenerStream;
use tonic::transport::{Channel, Server};
use tonic::{Request, Response, Status};

use crate::{Error, connect_unix};

/// The namespace every fake pod lives in.
const NAMESPACE: &str = "default";

/// How long stopping a server waits for its connections to close before
/// cutting them: a wedged `Register` call never closes on its own.
const STOP_GRACE: Duration = Duration::from_secs(5);

#[derive(Default)]
struct RegistrarState {
    registered: watch::Sender<Vec<dp::RegisterRequest>>,
    /// Registrations still to be refused as "not ready".
    refuse: Mutex<usize>,
    hang: AtomicBool,
    calls: AtomicUsize,
}

#[derive(Clone, Default)]
struct Registrar(Arc<RegistrarState>);

#[tonic::async_trait]
impl dp::registration_server::Registration for Registrar {
    async fn register(
        &self,
        req: Request<dp::RegisterRequest>,
    ) -> Result<Response<dp::Empty>, Status> {
        self.0.calls.fetch_add(1, Ordering::SeqCst);
        if self.0.hang.load(Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        {
            let mut refuse = self.0.refuse.lock().map_err(|_| Status::internal("lock"))?;
            if *refuse > 0 {
                *refuse -= 1;
                return Err(Status::unavailable("kubelet is not ready"));
            }
        }
        let r = req.into_inner();
        if r.version != sriov_api::kubelet::deviceplugin::VERSION {
            return Err(Status::invalid_argument(format!(
                "unsupported version {}",
                r.version
            )));
        }
        self.0.registered.send_modify(|v| v.push(r));
        Ok(Response::new(dp::Empty {}))
    }
}

/// Resource name -> device IDs.
type Held = HashMap<String, Vec<String>>;

#[derive(Clone, Default)]
struct Lister {
    /// Pod name -> what it holds.
    pods: Arc<Mutex<HashMap<String, Held>>>,
}

fn pod_resources(name: &str, held: &Held) -> pr::PodResources {
    pr::PodResources {
        name: name.to_string(),
        namespace: NAMESPACE.into(),
        containers: vec![pr::ContainerResources {
            name: "c".into(),
            devices: held
                .iter()
                .map(|(r, ids)| pr::ContainerDevices {
                    resource_name: r.clone(),
                    device_ids: ids.clone(),
                    topology: None,
                })
                .collect(),
            ..Default::default()
        }],
        ..Default::default()
    }
}

#[tonic::async_trait]
impl pr::pod_resources_lister_server::PodResourcesLister for Lister {
    async fn list(
        &self,
        _req: Request<pr::ListPodResourcesRequest>,
    ) -> Result<Response<pr::ListPodResourcesResponse>, Status> {
        let pods = self.pods.lock().map_err(|_| Status::internal("lock"))?;
        let pod_resources = pods
            .iter()
            .map(|(name, held)| pod_resources(name, held))
            .collect();
        Ok(Response::new(pr::ListPodResourcesResponse {
            pod_resources,
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
        let pods = self.pods.lock().map_err(|_| Status::internal("lock"))?;
        match pods.get(&r.pod_name) {
            Some(held) if r.pod_namespace == NAMESPACE => {
                Ok(Response::new(pr::GetPodResourcesResponse {
                    pod_resources: Some(pod_resources(&r.pod_name, held)),
                }))
            }
            _ => Err(Status::not_found(format!("pod {} not found", r.pod_name))),
        }
    }
}

/// One running gRPC server.
struct Serving {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl Serving {
    fn signal(self) {
        let _ = self.stop.send(());
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        let mut task = self.task;
        if tokio::time::timeout(STOP_GRACE, &mut task).await.is_err() {
            task.abort();
            let _ = task.await;
        }
    }
}

/// A slot for a server that can be stopped and started again.
#[derive(Default)]
struct Slot(Mutex<Option<Serving>>);

impl Slot {
    // A test that panicked while holding the lock must not leave its
    // servers running for the rest of the process: poisoning is ignored.
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Serving>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn take(&self) -> Option<Serving> {
        self.lock().take()
    }

    /// Puts `serving` in, signalling whatever it replaces to stop.
    fn put(&self, serving: Serving) {
        let old = self.lock().replace(serving);
        if let Some(old) = old {
            old.signal();
        }
    }
}

/// A running fake kubelet; its servers stop when it is dropped.
pub struct FakeKubelet {
    device_plugin_dir: PathBuf,
    pod_resources_dir: PathBuf,
    registrar: Registrar,
    lister: Lister,
    registration: Slot,
    pods: Slot,
}

impl std::fmt::Debug for FakeKubelet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeKubelet")
            .field("device_plugin_dir", &self.device_plugin_dir)
            .field("pod_resources_dir", &self.pod_resources_dir)
            .finish()
    }
}

fn serve(path: &Path, router: tonic::transport::server::Router) -> Result<Serving, Error> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|source| Error::CreateDir {
            dir: dir.to_owned(),
            cause: source,
        })?;
    }
    // As kubelet does at start, whatever was left at the path is replaced.
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path).map_err(|source| Error::Listen {
        path: path.to_owned(),
        cause: source,
    })?;
    let (stop, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let _ = router
            .serve_with_incoming_shutdown(UnixListenerStream::new(listener), async {
                let _ = rx.await;
            })
            .await;
    });
    Ok(Serving { stop, task })
}

impl FakeKubelet {
    /// Serves `<device_plugin_dir>/kubelet.sock` and `<pod_resources_dir>/kubelet.sock`.
    pub fn start(device_plugin_dir: &Path, pod_resources_dir: &Path) -> Result<Self, Error> {
        let kubelet = Self {
            device_plugin_dir: device_plugin_dir.to_owned(),
            pod_resources_dir: pod_resources_dir.to_owned(),
            registrar: Registrar::default(),
            lister: Lister::default(),
            registration: Slot::default(),
            pods: Slot::default(),
        };
        kubelet.start_registration()?;
        kubelet.start_pod_resources()?;
        Ok(kubelet)
    }

    /// The registration server's socket, `<device_plugin_dir>/kubelet.sock`.
    pub fn registration_socket(&self) -> PathBuf {
        self.device_plugin_dir.join("kubelet.sock")
    }

    /// The pod-resources server's socket, `<pod_resources_dir>/kubelet.sock`.
    pub fn pod_resources_socket(&self) -> PathBuf {
        self.pod_resources_dir.join("kubelet.sock")
    }

    /// Restarts as kubelet does: its registration server goes away, every
    /// socket in the device-plugin directory (the plugins' too) is removed,
    /// and a new `kubelet.sock` is served, so plugins must notice and
    /// register again.
    pub fn restart(&self) -> Result<(), Error> {
        if let Some(old) = self.registration.take() {
            old.signal();
        }
        if let Ok(entries) = std::fs::read_dir(&self.device_plugin_dir) {
            for e in entries.flatten() {
                if e.path().extension().is_some_and(|x| x == "sock") {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        self.start_registration()
    }

    /// Stops the registration server and removes its socket, leaving the
    /// plugins' sockets alone: a kubelet that is down, not restarting.
    pub async fn stop_registration(&self) {
        if let Some(s) = self.registration.take() {
            s.stop().await;
        }
        let _ = std::fs::remove_file(self.registration_socket());
    }

    /// Serves a new `kubelet.sock` in the device-plugin directory, replacing
    /// any running registration server. Registrations keep accumulating.
    pub fn start_registration(&self) -> Result<(), Error> {
        let serving = serve(
            &self.registration_socket(),
            Server::builder().add_service(dp::registration_server::RegistrationServer::new(
                self.registrar.clone(),
            )),
        )?;
        self.registration.put(serving);
        Ok(())
    }

    /// Stops the pod-resources server and removes its socket.
    pub async fn stop_pod_resources(&self) {
        if let Some(s) = self.pods.take() {
            s.stop().await;
        }
        let _ = std::fs::remove_file(self.pod_resources_socket());
    }

    /// Serves the pod-resources socket again, with the pods set so far.
    pub fn start_pod_resources(&self) -> Result<(), Error> {
        let serving = serve(
            &self.pod_resources_socket(),
            Server::builder().add_service(
                pr::pod_resources_lister_server::PodResourcesListerServer::new(self.lister.clone()),
            ),
        )?;
        self.pods.put(serving);
        Ok(())
    }

    /// Refuses the next `n` registrations as a kubelet that is not ready
    /// does (`UNAVAILABLE`), before looking at them.
    pub fn refuse_next(&self, n: usize) {
        if let Ok(mut r) = self.registrar.0.refuse.lock() {
            *r = n;
        }
    }

    /// How many of the refusals asked for are still to come.
    pub fn refusals_left(&self) -> usize {
        self.registrar.0.refuse.lock().map_or(0, |r| *r)
    }

    /// While on, `Register` calls are never answered, as by a wedged
    /// kubelet; calls taken in while on stay unanswered after it is off.
    pub fn hang_registrations(&self, hang: bool) {
        self.registrar.0.hang.store(hang, Ordering::SeqCst);
    }

    /// `Register` calls received, answered or not.
    pub fn register_calls(&self) -> usize {
        self.registrar.0.calls.load(Ordering::SeqCst)
    }

    /// Registrations accepted so far, across restarts.
    pub fn registrations(&self) -> Vec<dp::RegisterRequest> {
        self.registrar.0.registered.borrow().clone()
    }

    /// Waits until `resource` has registered, and returns its request.
    pub async fn wait_registered(&self, resource: &str) -> dp::RegisterRequest {
        let mut rx = self.registrar.0.registered.subscribe();
        loop {
            if let Some(r) = rx
                .borrow()
                .iter()
                .rev()
                .find(|r| r.resource_name == resource)
            {
                return r.clone();
            }
            if rx.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }

    /// A client of the plugin that registered `resource`.
    pub async fn plugin(&self, resource: &str) -> Result<DevicePluginClient<Channel>, Error> {
        let r = self.wait_registered(resource).await;
        let ch = connect_unix(&self.device_plugin_dir.join(&r.endpoint)).await?;
        Ok(DevicePluginClient::new(ch))
    }

    /// Sets what pod-resources reports: `pod` holds `ids` of `resource`.
    pub fn set_pod(&self, pod: &str, resource: &str, ids: &[String]) {
        if let Ok(mut p) = self.lister.pods.lock() {
            p.entry(pod.to_string())
                .or_default()
                .insert(resource.to_string(), ids.to_vec());
        }
    }

    /// Removes a pod from what pod-resources reports.
    pub fn remove_pod(&self, pod: &str) {
        if let Ok(mut p) = self.lister.pods.lock() {
            p.remove(pod);
        }
    }
}

impl Drop for FakeKubelet {
    fn drop(&mut self) {
        // Only signalled: dropping must not touch the sockets, which a
        // newer kubelet on the same paths may own by now.
        for slot in [&self.registration, &self.pods] {
            if let Some(s) = slot.take() {
                s.signal();
            }
        }
    }
}
