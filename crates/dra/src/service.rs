//! The kubelet side of DRA mode: two unix sockets.
//!
//! - `<registry dir>/<driver>-reg.sock` serves `pluginregistration.Registration`:
//!   kubelet's plugin watcher finds it, asks `GetInfo` and
//!   learns type `DRAPlugin`, our driver name, the DRA socket and the
//!   services we serve (`v1.DRAPlugin`, `v1beta1.DRAPlugin`); its verdict
//!   arrives through `NotifyRegistrationStatus` and is kept in
//!   [`Serving::registration`].
//! - `<plugin dir>/dra.sock` serves `DRAPlugin` in v1 (kubelet 1.34+) and
//!   v1beta1 (1.32, 1.33), and `v1alpha1.DRAResourceHealth` (KEP-4680).
//!
//! Both go through `sriov-authority`, so every kubelet's `:authority` is
//! accepted. Each claim of a batch is answered on its own: one claim's
//! failure is that claim's `error`, never the whole call's, so kubelet
//! retries only what failed.

use std::collections::{BTreeSet, HashSet};
use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;

use futures::future::join_all;
use sriov_api::kubelet::dra::{health_v1alpha1 as health, v1, v1beta1};
use sriov_api::kubelet::pluginregistration as reg;
use tokio::net::UnixListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_stream::Stream;
use tonic::transport::Server;
use tonic::{Request, Response, Status};

use crate::devices::Inventory;
use crate::prepare::PreparedDevice;

/// A claim as kubelet names it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ClaimRef {
    /// The claim's namespace.
    pub namespace: String,
    /// The claim's `metadata.uid`.
    pub uid: String,
    /// The claim's name.
    pub name: String,
}

/// What prepares and unprepares claims: the binary composes the API
/// server's claim reader with the [`Preparer`](crate::prepare::Preparer).
/// An `Err` is the claim's `error` in the answer.
pub trait ClaimDriver: Send + Sync + 'static {
    /// Prepares one claim for this node, idempotently.
    fn prepare(
        &self,
        claim: ClaimRef,
    ) -> impl Future<Output = Result<Vec<PreparedDevice>, String>> + Send;
    /// Undoes [`prepare`](Self::prepare); a claim never prepared is fine.
    fn unprepare(&self, claim: ClaimRef) -> impl Future<Output = Result<(), String>> + Send;
}

/// Errors of starting the sockets.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// A socket could not be made.
    #[error("cannot listen on {path}: {cause}")]
    Listen {
        /// The socket path.
        path: PathBuf,
        /// Why.
        cause: io::Error,
    },
}

/// Where the sockets go and what they say.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    /// The driver name (`PluginInfo.name`).
    pub driver: String,
    /// The pool name our devices are published under (the node name).
    pub pool: String,
    /// Directory of `dra.sock` (created if missing).
    pub plugin_dir: PathBuf,
    /// Kubelet's plugin-watcher directory.
    pub registry_dir: PathBuf,
}

impl ServiceConfig {
    /// `<plugin dir>/dra.sock`.
    pub fn dra_socket(&self) -> PathBuf {
        self.plugin_dir.join("dra.sock")
    }

    /// `<registry dir>/<driver>-reg.sock`, the name the Go helper uses.
    pub fn registration_socket(&self) -> PathBuf {
        self.registry_dir.join(format!("{}-reg.sock", self.driver))
    }
}

/// Kubelet's last registration verdict: `None` until it spoke.
pub type RegistrationState = Option<Result<(), String>>;

/// The two running servers.
#[derive(Debug)]
pub struct Serving {
    /// Kubelet's verdict on our registration.
    pub registration: watch::Receiver<RegistrationState>,
    tasks: Vec<JoinHandle<()>>,
    sockets: Vec<PathBuf>,
}

impl Serving {
    /// Waits until both servers stopped (after `stop` turned true), then
    /// removes the sockets so kubelet's watcher unregisters us.
    pub async fn finished(self) {
        for t in self.tasks {
            let _ = t.await;
        }
        for s in &self.sockets {
            let _ = std::fs::remove_file(s);
        }
    }
}

/// Starts both sockets; they serve until `stop` turns true.
pub fn serve<D: ClaimDriver>(
    cfg: &ServiceConfig,
    driver: Arc<D>,
    inventory: watch::Receiver<Arc<Inventory>>,
    stop: watch::Receiver<bool>,
) -> Result<Serving, ServiceError> {
    std::fs::create_dir_all(&cfg.plugin_dir).map_err(|cause| ServiceError::Listen {
        path: cfg.plugin_dir.clone(),
        cause,
    })?;
    let dra_path = cfg.dra_socket();
    let reg_path = cfg.registration_socket();
    let dra_listener = listen(&dra_path)?;
    let reg_listener = listen(&reg_path)?;
    let (status_tx, status_rx) = watch::channel(None);

    let plugin = Plugin {
        driver,
        inventory,
        pool: cfg.pool.clone(),
        stop: stop.clone(),
    };
    let dra_router = Server::builder()
        .max_concurrent_streams(sriov_api::MAX_CONCURRENT_STREAMS)
        .add_service(
            v1::dra_plugin_server::DraPluginServer::new(V1(plugin.clone()))
                .max_decoding_message_size(sriov_api::DEVICE_PLUGIN_MAX_MESSAGE_BYTES),
        )
        .add_service(
            v1beta1::dra_plugin_server::DraPluginServer::new(V1beta1(plugin.clone()))
                .max_decoding_message_size(sriov_api::DEVICE_PLUGIN_MAX_MESSAGE_BYTES),
        )
        .add_service(health::dra_resource_health_server::DraResourceHealthServer::new(plugin));
    let reg_router = Server::builder()
        .max_concurrent_streams(sriov_api::MAX_CONCURRENT_STREAMS)
        .add_service(reg::registration_server::RegistrationServer::new(
            Registration {
                driver: cfg.driver.clone(),
                endpoint: dra_path.clone(),
                status: status_tx,
            },
        ));

    let mut tasks = Vec::new();
    for (name, router, listener) in [
        ("dra", dra_router, dra_listener),
        ("registration", reg_router, reg_listener),
    ] {
        let mut relay_stop = stop.clone();
        let mut serve_stop = stop.clone();
        let incoming = sriov_authority::incoming(listener, async move {
            let _ = relay_stop.wait_for(|s| *s).await;
        });
        tasks.push(tokio::spawn(async move {
            if let Err(e) = router
                .serve_with_incoming_shutdown(incoming, async move {
                    let _ = serve_stop.wait_for(|s| *s).await;
                })
                .await
            {
                tracing::warn!(socket = name, error = %e, "gRPC server failed");
            }
        }));
    }
    tracing::info!(
        dra = %dra_path.display(),
        registration = %reg_path.display(),
        "DRA plugin listening"
    );
    Ok(Serving {
        registration: status_rx,
        tasks,
        sockets: vec![dra_path, reg_path],
    })
}

fn listen(path: &Path) -> Result<UnixListener, ServiceError> {
    let err = |cause| ServiceError::Listen {
        path: path.to_owned(),
        cause,
    };
    // A socket left by an earlier run (or a crash) blocks bind.
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(err(e)),
    }
    let listener = UnixListener::bind(path).map_err(err)?;
    // Only kubelet (root) may prepare devices or read their health.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(err)?;
    Ok(listener)
}

struct Registration {
    driver: String,
    endpoint: PathBuf,
    status: watch::Sender<RegistrationState>,
}

#[tonic::async_trait]
impl reg::registration_server::Registration for Registration {
    async fn get_info(
        &self,
        _req: Request<reg::InfoRequest>,
    ) -> Result<Response<reg::PluginInfo>, Status> {
        Ok(Response::new(reg::PluginInfo {
            r#type: reg::DRA_PLUGIN_TYPE.to_string(),
            name: self.driver.clone(),
            endpoint: self.endpoint.to_string_lossy().into_owned(),
            // Kubelet 1.34+ picks v1; 1.32/1.33 know only v1beta1.
            supported_versions: vec![v1::SERVICE.to_string(), v1beta1::SERVICE.to_string()],
        }))
    }

    async fn notify_registration_status(
        &self,
        req: Request<reg::RegistrationStatus>,
    ) -> Result<Response<reg::RegistrationStatusResponse>, Status> {
        let s = req.into_inner();
        let verdict = if s.plugin_registered {
            tracing::info!("kubelet registered the DRA plugin");
            Ok(())
        } else {
            tracing::error!(error = s.error, "kubelet refused the DRA plugin");
            Err(s.error)
        };
        self.status.send_replace(Some(verdict));
        Ok(Response::new(reg::RegistrationStatusResponse {}))
    }
}

/// Shared by both API versions and the health stream.
struct Plugin<D> {
    driver: Arc<D>,
    inventory: watch::Receiver<Arc<Inventory>>,
    pool: String,
    stop: watch::Receiver<bool>,
}

impl<D> Clone for Plugin<D> {
    fn clone(&self) -> Self {
        Self {
            driver: self.driver.clone(),
            inventory: self.inventory.clone(),
            pool: self.pool.clone(),
            stop: self.stop.clone(),
        }
    }
}

/// Kubelet's claims, checked: a claim without uid, or named twice in one
/// batch, gets an error of its own and is not passed on.
fn checked(claims: Vec<ClaimRef>) -> Vec<(String, Result<ClaimRef, String>)> {
    let mut seen = HashSet::new();
    claims
        .into_iter()
        .enumerate()
        .map(|(i, c)| {
            if c.uid.is_empty() {
                return (
                    String::new(),
                    Err(format!("claims[{i}].uid: empty (a claim needs its uid)")),
                );
            }
            if c.namespace.is_empty() || c.name.is_empty() {
                return (
                    c.uid.clone(),
                    Err(format!(
                        "claims[{i}]: namespace and name are required (got {:?}/{:?})",
                        c.namespace, c.name
                    )),
                );
            }
            if !seen.insert(c.uid.clone()) {
                return (
                    c.uid.clone(),
                    Err(format!(
                        "claims[{i}].uid: {} is named twice in one call",
                        c.uid
                    )),
                );
            }
            (c.uid.clone(), Ok(c))
        })
        .collect()
}

impl<D: ClaimDriver> Plugin<D> {
    async fn prepare_all(
        &self,
        claims: Vec<ClaimRef>,
    ) -> Vec<(String, Result<Vec<PreparedDevice>, String>)> {
        join_all(checked(claims).into_iter().map(|(uid, c)| async move {
            match c {
                Ok(c) => {
                    let r = self.driver.prepare(c.clone()).await;
                    if let Err(e) = &r {
                        tracing::warn!(claim = %format!("{}/{}", c.namespace, c.name), uid = c.uid, error = %e, "prepare failed");
                    }
                    (uid, r)
                }
                Err(e) => (uid, Err(e)),
            }
        }))
        .await
    }

    async fn unprepare_all(&self, claims: Vec<ClaimRef>) -> Vec<(String, Result<(), String>)> {
        join_all(checked(claims).into_iter().map(|(uid, c)| async move {
            match c {
                Ok(c) => {
                    let r = self.driver.unprepare(c.clone()).await;
                    if let Err(e) = &r {
                        tracing::warn!(uid = c.uid, error = %e, "unprepare failed");
                    }
                    (uid, r)
                }
                Err(e) => (uid, Err(e)),
            }
        }))
        .await
    }
}

macro_rules! dra_version {
    ($wrapper:ident, $api:ident, $device:expr) => {
        struct $wrapper<D>(Plugin<D>);

        #[tonic::async_trait]
        impl<D: ClaimDriver> $api::dra_plugin_server::DraPlugin for $wrapper<D> {
            async fn node_prepare_resources(
                &self,
                req: Request<$api::NodePrepareResourcesRequest>,
            ) -> Result<Response<$api::NodePrepareResourcesResponse>, Status> {
                let claims = req.into_inner().claims.into_iter().map(|c| ClaimRef {
                    namespace: c.namespace,
                    uid: c.uid,
                    name: c.name,
                });
                let answers = self.0.prepare_all(claims.collect()).await;
                let claims = answers
                    .into_iter()
                    .map(|(uid, r)| {
                        let answer = match r {
                            Ok(devices) => $api::NodePrepareResourceResponse {
                                devices: devices.into_iter().map($device).collect(),
                                error: String::new(),
                            },
                            Err(error) => $api::NodePrepareResourceResponse {
                                devices: Vec::new(),
                                error,
                            },
                        };
                        (uid, answer)
                    })
                    .collect();
                Ok(Response::new($api::NodePrepareResourcesResponse { claims }))
            }

            async fn node_unprepare_resources(
                &self,
                req: Request<$api::NodeUnprepareResourcesRequest>,
            ) -> Result<Response<$api::NodeUnprepareResourcesResponse>, Status> {
                let claims = req.into_inner().claims.into_iter().map(|c| ClaimRef {
                    namespace: c.namespace,
                    uid: c.uid,
                    name: c.name,
                });
                let answers = self.0.unprepare_all(claims.collect()).await;
                let claims = answers
                    .into_iter()
                    .map(|(uid, r)| {
                        let error = r.err().unwrap_or_default();
                        (uid, $api::NodeUnprepareResourceResponse { error })
                    })
                    .collect();
                Ok(Response::new($api::NodeUnprepareResourcesResponse {
                    claims,
                }))
            }
        }
    };
}

dra_version!(V1, v1, |d: PreparedDevice| v1::Device {
    request_names: d.request_names,
    pool_name: d.pool_name,
    device_name: d.device_name,
    cdi_device_ids: d.cdi_device_ids,
    share_id: None,
});
dra_version!(V1beta1, v1beta1, |d: PreparedDevice| v1beta1::Device {
    request_names: d.request_names,
    pool_name: d.pool_name,
    device_name: d.device_name,
    cdi_device_ids: d.cdi_device_ids,
});

type HealthStream =
    Pin<Box<dyn Stream<Item = Result<health::NodeWatchResourcesResponse, Status>> + Send>>;

#[tonic::async_trait]
impl<D: ClaimDriver> health::dra_resource_health_server::DraResourceHealth for Plugin<D> {
    type NodeWatchResourcesStream = HealthStream;

    async fn node_watch_resources(
        &self,
        _req: Request<health::NodeWatchResourcesRequest>,
    ) -> Result<Response<Self::NodeWatchResourcesStream>, Status> {
        let mut inventory = self.inventory.clone();
        let mut stop = self.stop.clone();
        let pool = self.pool.clone();
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tokio::spawn(async move {
            let mut last: Arc<Inventory> = inventory.borrow_and_update().clone();
            let mut gone = BTreeSet::new();
            loop {
                let msg = crate::health::report(&last, &pool, &gone);
                if tx.send(Ok(msg)).await.is_err() {
                    return;
                }
                tokio::select! {
                    _ = stop.wait_for(|s| *s) => return,
                    _ = tx.closed() => return,
                    changed = inventory.changed() => {
                        if changed.is_err() {
                            return;
                        }
                        let now = inventory.borrow_and_update().clone();
                        gone = crate::health::departed(&last, &now);
                        last = now;
                    }
                    _ = tokio::time::sleep(crate::health::RESEND_EVERY) => gone.clear(),
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(uid: &str) -> ClaimRef {
        ClaimRef {
            namespace: "ns".into(),
            uid: uid.into(),
            name: format!("c-{uid}"),
        }
    }

    #[test]
    fn claims_without_uid_or_named_twice_are_answered_alone() {
        let mut nameless = claim("b");
        nameless.name.clear();
        let got = checked(vec![claim("a"), claim(""), claim("a"), nameless]);
        assert!(got[0].1.is_ok());
        assert_eq!(got[1].0, "");
        assert!(
            got[1]
                .1
                .as_ref()
                .unwrap_err()
                .contains("claims[1].uid: empty")
        );
        assert!(got[2].1.as_ref().unwrap_err().contains("named twice"));
        assert!(got[3].1.as_ref().unwrap_err().contains("claims[3]"));
    }
}
