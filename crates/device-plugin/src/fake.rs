//! A stand-in for kubelet, for end-to-end tests, the demo and the VM test
//! (feature `fake`): the `Registration` server on `kubelet.sock` in a
//! device-plugin dir, and the pod-resources server on `kubelet.sock` in a
//! pod-resources dir, both on real unix sockets, plus a client for the
//! plugins that registered.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use sriov_api::kubelet::deviceplugin::v1beta1 as dp;
use sriov_api::kubelet::deviceplugin::v1beta1::device_plugin_client::DevicePluginClient;
use sriov_api::kubelet::podresources::v1 as pr;
use tokio::net::UnixListener;
use tokio::sync::{oneshot, watch};
use tokio_stream::wrappers::UnixListenerStream;
use tonic::transport::{Channel, Server};
use tonic::{Request, Response, Status};

use crate::{Error, connect_unix};

#[derive(Clone, Default)]
struct Registrar {
    registered: Arc<watch::Sender<Vec<dp::RegisterRequest>>>,
}

#[tonic::async_trait]
impl dp::registration_server::Registration for Registrar {
    async fn register(
        &self,
        req: Request<dp::RegisterRequest>,
    ) -> Result<Response<dp::Empty>, Status> {
        let r = req.into_inner();
        if r.version != sriov_api::kubelet::deviceplugin::VERSION {
            return Err(Status::invalid_argument(format!(
                "unsupported version {}",
                r.version
            )));
        }
        self.registered.send_modify(|v| v.push(r));
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

#[tonic::async_trait]
impl pr::pod_resources_lister_server::PodResourcesLister for Lister {
    async fn list(
        &self,
        _req: Request<pr::ListPodResourcesRequest>,
    ) -> Result<Response<pr::ListPodResourcesResponse>, Status> {
        let pods = self.pods.lock().map_err(|_| Status::internal("lock"))?;
        let pod_resources = pods
            .iter()
            .map(|(name, res)| pr::PodResources {
                name: name.clone(),
                namespace: "default".into(),
                containers: vec![pr::ContainerResources {
                    name: "c".into(),
                    devices: res
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
            })
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
        _req: Request<pr::GetPodResourcesRequest>,
    ) -> Result<Response<pr::GetPodResourcesResponse>, Status> {
        Err(Status::unimplemented("the fake kubelet answers List only"))
    }
}

/// A running fake kubelet; its servers stop when it is dropped.
pub struct FakeKubelet {
    device_plugin_dir: PathBuf,
    registrar: Registrar,
    lister: Lister,
    /// Stops the registration server (kubelet.sock).
    registration: std::sync::Mutex<Option<oneshot::Sender<()>>>,
    stops: Vec<oneshot::Sender<()>>,
}

impl std::fmt::Debug for FakeKubelet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeKubelet")
            .field("device_plugin_dir", &self.device_plugin_dir)
            .finish()
    }
}

fn serve(
    path: &Path,
    router: tonic::transport::server::Router,
) -> Result<oneshot::Sender<()>, Error> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|source| Error::CreateDir {
            dir: dir.to_owned(),
            source,
        })?;
    }
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path).map_err(|source| Error::Listen {
        path: path.to_owned(),
        source,
    })?;
    let (tx, rx) = oneshot::channel::<()>();
    tokio::spawn(async move {
        let _ = router
            .serve_with_incoming_shutdown(UnixListenerStream::new(listener), async {
                let _ = rx.await;
            })
            .await;
    });
    Ok(tx)
}

impl FakeKubelet {
    /// Serves `<device_plugin_dir>/kubelet.sock` and `<pod_resources_dir>/kubelet.sock`.
    pub fn start(device_plugin_dir: &Path, pod_resources_dir: &Path) -> Result<Self, Error> {
        let registrar = Registrar::default();
        let lister = Lister::default();
        let reg = serve(
            &device_plugin_dir.join("kubelet.sock"),
            Server::builder().add_service(dp::registration_server::RegistrationServer::new(
                registrar.clone(),
            )),
        )?;
        let pods = serve(
            &pod_resources_dir.join("kubelet.sock"),
            Server::builder().add_service(
                pr::pod_resources_lister_server::PodResourcesListerServer::new(lister.clone()),
            ),
        )?;
        Ok(Self {
            device_plugin_dir: device_plugin_dir.to_owned(),
            registrar,
            lister,
            registration: std::sync::Mutex::new(Some(reg)),
            stops: vec![pods],
        })
    }

    /// Restarts as kubelet does: its registration server goes away, every
    /// socket in the device-plugin directory (the plugins' too) is removed,
    /// and a new `kubelet.sock` is served, so plugins must notice and
    /// register again.
    pub fn restart(&self) -> Result<(), Error> {
        if let Some(stop) = self.registration.lock().ok().and_then(|mut r| r.take()) {
            let _ = stop.send(());
        }
        if let Ok(entries) = std::fs::read_dir(&self.device_plugin_dir) {
            for e in entries.flatten() {
                if e.path().extension().is_some_and(|x| x == "sock") {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        let reg = serve(
            &self.device_plugin_dir.join("kubelet.sock"),
            Server::builder().add_service(dp::registration_server::RegistrationServer::new(
                self.registrar.clone(),
            )),
        )?;
        if let Ok(mut r) = self.registration.lock() {
            *r = Some(reg);
        }
        Ok(())
    }

    /// Registrations received so far.
    pub fn registrations(&self) -> Vec<dp::RegisterRequest> {
        self.registrar.registered.borrow().clone()
    }

    /// Waits until `resource` has registered, and returns its request.
    pub async fn wait_registered(&self, resource: &str) -> dp::RegisterRequest {
        let mut rx = self.registrar.registered.subscribe();
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
        if let Some(stop) = self.registration.lock().ok().and_then(|mut r| r.take()) {
            let _ = stop.send(());
        }
        for s in self.stops.drain(..) {
            let _ = s.send(());
        }
    }
}
