//! The gRPC handlers kubelet calls: `DevicePlugin` on every plugin socket,
//! and `pluginregistration.Registration` in plugin-watcher mode.

use std::collections::HashSet;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;

use sriov_api::kubelet::deviceplugin::v1beta1 as api;
use sriov_api::kubelet::deviceplugin::{HEALTHY, UNHEALTHY, VERSION};
use sriov_api::kubelet::pluginregistration as reg;
use tokio::sync::{mpsc, watch};
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use tracing::{debug, info, warn};

use crate::backend::{AllocateError, Backend, Device, MAX_DEVICE_ID_LEN};
use crate::preferred::{AllocationPolicy, preferred_allocation};

/// `DevicePlugin` for one resource, backed by `B`.
pub(crate) struct PluginService<B: Backend + ?Sized> {
    pub(crate) backend: Arc<B>,
    pub(crate) resource: String,
    /// `None`: `GetPreferredAllocation` is not advertised and gives no hint.
    pub(crate) policy: Option<AllocationPolicy>,
    /// Flips to true when this server instance is torn down, so
    /// long-lived `ListAndWatch` streams end with it.
    pub(crate) stop: watch::Receiver<bool>,
}

/// Kubelet's view of our devices: health strings, NUMA topology, and no
/// IDs it could not carry.
pub(crate) fn to_kubelet(resource: &str, devices: &[Device]) -> Vec<api::Device> {
    devices
        .iter()
        .filter(|d| {
            let ok = d.id.len() <= MAX_DEVICE_ID_LEN && !d.id.is_empty();
            if !ok {
                warn!(
                    resource,
                    id = %d.id,
                    "device ID is empty or longer than {MAX_DEVICE_ID_LEN} characters; not advertised"
                );
            }
            ok
        })
        .map(|d| api::Device {
            id: d.id.clone(),
            health: if d.healthy { HEALTHY } else { UNHEALTHY }.to_string(),
            topology: d.numa_node.filter(|n| *n >= 0).map(|n| api::TopologyInfo {
                nodes: vec![api::NumaNode { id: n }],
            }),
        })
        .collect()
}

/// What kubelet sees of a device list, as 64 bits: kept between wake-ups instead of the list
/// itself (0.8 MB with 4096 devices) to tell an unchanged list. SipHash over every field
/// kubelet reads; two lists sharing a print would need a 2^-64 chance, and the device IDs are
/// ours, not a client's.
fn fingerprint(list: &[api::Device]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    list.len().hash(&mut h);
    for d in list {
        d.id.hash(&mut h);
        d.health.hash(&mut h);
        match &d.topology {
            None => 0u8.hash(&mut h),
            Some(t) => {
                1u8.hash(&mut h);
                t.nodes.len().hash(&mut h);
                t.nodes.iter().for_each(|n| n.id.hash(&mut h));
            }
        }
    }
    h.finish()
}

pub(crate) fn status_of(err: &AllocateError) -> Status {
    match err {
        AllocateError::UnknownDevice { .. } => Status::not_found(err.to_string()),
        AllocateError::Unavailable { .. } => Status::resource_exhausted(err.to_string()),
        AllocateError::Internal { .. } => Status::internal(err.to_string()),
    }
}

/// The options we advertise, both in `Register` and `GetDevicePluginOptions`:
/// `GetPreferredAllocation` only with a policy, as SRDP (which has none)
/// never advertises it.
pub(crate) fn options(policy: Option<AllocationPolicy>) -> api::DevicePluginOptions {
    api::DevicePluginOptions {
        pre_start_required: false,
        get_preferred_allocation_available: policy.is_some(),
    }
}

type ListStream = Pin<Box<dyn Stream<Item = Result<api::ListAndWatchResponse, Status>> + Send>>;

#[tonic::async_trait]
impl<B: Backend + ?Sized> api::device_plugin_server::DevicePlugin for PluginService<B> {
    async fn get_device_plugin_options(
        &self,
        _req: Request<api::Empty>,
    ) -> Result<Response<api::DevicePluginOptions>, Status> {
        Ok(Response::new(options(self.policy)))
    }

    type ListAndWatchStream = ListStream;

    async fn list_and_watch(
        &self,
        _req: Request<api::Empty>,
    ) -> Result<Response<Self::ListAndWatchStream>, Status> {
        let mut devices = self.backend.devices();
        let mut stop = self.stop.clone();
        let resource = self.resource.clone();
        let (tx, rx) = mpsc::channel(1);
        info!(resource, "ListAndWatch started");
        tokio::spawn(async move {
            let mut last: Option<u64> = None;
            loop {
                let list = to_kubelet(&resource, &devices.borrow_and_update());
                // Kubelet re-evaluates every device on each message; a
                // wake-up that changed nothing kubelet sees is not sent.
                let print = fingerprint(&list);
                if last != Some(print) {
                    debug!(resource, count = list.len(), "sending device list");
                    let msg = api::ListAndWatchResponse { devices: list };
                    if tx.send(Ok(msg)).await.is_err() {
                        break;
                    }
                    last = Some(print);
                }
                tokio::select! {
                    changed = devices.changed() => if changed.is_err() { break },
                    // Kubelet hung up or cancelled: nobody reads the list any more.
                    () = tx.closed() => break,
                    () = crate::plugin::stopped(&mut stop) => break,
                }
            }
            info!(resource, "ListAndWatch ended");
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn get_preferred_allocation(
        &self,
        req: Request<api::PreferredAllocationRequest>,
    ) -> Result<Response<api::PreferredAllocationResponse>, Status> {
        let devices = self.backend.devices().borrow().clone();
        let mut container_responses = Vec::new();
        for c in req.into_inner().container_requests {
            let size = usize::try_from(c.allocation_size).map_err(|_| {
                Status::invalid_argument(format!(
                    "allocation_size {} is negative",
                    c.allocation_size
                ))
            })?;
            // Without a policy kubelet was told not to ask; one that asks
            // anyway gets SRDP's answer, no hint.
            let Some(policy) = self.policy else {
                container_responses.push(api::ContainerPreferredAllocationResponse::default());
                continue;
            };
            let ids = preferred_allocation(
                policy,
                &devices,
                &c.available_device_i_ds,
                &c.must_include_device_i_ds,
                size,
            );
            container_responses
                .push(api::ContainerPreferredAllocationResponse { device_i_ds: ids });
        }
        Ok(Response::new(api::PreferredAllocationResponse {
            container_responses,
        }))
    }

    async fn allocate(
        &self,
        req: Request<api::AllocateRequest>,
    ) -> Result<Response<api::AllocateResponse>, Status> {
        let containers: Vec<Vec<String>> = req
            .into_inner()
            .container_requests
            .into_iter()
            .map(|c| c.devices_ids)
            .collect();
        let mut seen = HashSet::new();
        for ids in &containers {
            if ids.is_empty() {
                return Err(Status::invalid_argument(
                    "a container request names no device",
                ));
            }
            for id in ids {
                if !seen.insert(id.as_str()) {
                    return Err(Status::invalid_argument(format!(
                        "device {id} is requested twice"
                    )));
                }
            }
        }
        let backend = Arc::clone(&self.backend);
        let n = containers.len();
        let result = tokio::task::spawn_blocking(move || backend.allocate(&containers))
            .await
            .map_err(|e| Status::internal(format!("allocate task failed: {e}")))?;
        let answer = match result {
            Ok(container_responses) if container_responses.len() == n => {
                Ok(Response::new(api::AllocateResponse {
                    container_responses,
                }))
            }
            Ok(r) => Err(Status::internal(format!(
                "backend returned {} responses for {n} containers",
                r.len()
            ))),
            Err(e) => {
                warn!(resource = self.resource, error = %e, "Allocate refused");
                Err(status_of(&e))
            }
        };
        let outcome = match &answer {
            Ok(_) => "ok",
            Err(s) => crate::metrics::code_name(s.code()),
        };
        crate::metrics::allocation(&self.resource, outcome);
        answer
    }

    async fn pre_start_container(
        &self,
        _req: Request<api::PreStartContainerRequest>,
    ) -> Result<Response<api::PreStartContainerResponse>, Status> {
        Ok(Response::new(api::PreStartContainerResponse {}))
    }
}

/// The plugin-watcher side of a plugin socket in `plugins_registry`.
pub(crate) struct WatcherRegistration {
    pub(crate) resource: String,
    /// Absolute path of the socket serving `DevicePlugin` (the same socket).
    pub(crate) endpoint: PathBuf,
    /// Kubelet's verdict goes to the lifecycle loop.
    pub(crate) status: mpsc::UnboundedSender<Result<(), String>>,
}

#[tonic::async_trait]
impl reg::registration_server::Registration for WatcherRegistration {
    async fn get_info(
        &self,
        _req: Request<reg::InfoRequest>,
    ) -> Result<Response<reg::PluginInfo>, Status> {
        Ok(Response::new(reg::PluginInfo {
            r#type: reg::DEVICE_PLUGIN_TYPE.to_string(),
            name: self.resource.clone(),
            endpoint: self.endpoint.to_string_lossy().into_owned(),
            // As SRDP answers (its resources/server.go): kubelet's plugin
            // watcher takes the highest version it knows from the list.
            supported_versions: vec!["v1alpha1".to_string(), VERSION.to_string()],
        }))
    }

    async fn notify_registration_status(
        &self,
        req: Request<reg::RegistrationStatus>,
    ) -> Result<Response<reg::RegistrationStatusResponse>, Status> {
        let s = req.into_inner();
        let verdict = if s.plugin_registered {
            Ok(())
        } else {
            Err(s.error)
        };
        // The loop may be shutting down; then the verdict no longer matters.
        let _ = self.status.send(verdict);
        Ok(Response::new(reg::RegistrationStatusResponse {}))
    }
}

#[cfg(test)]
mod fingerprint_tests {
    use super::*;

    fn device(id: &str, health: &str, numa: Option<i64>) -> api::Device {
        api::Device {
            id: id.into(),
            health: health.into(),
            topology: numa.map(|id| api::TopologyInfo {
                nodes: vec![api::NumaNode { id }],
            }),
        }
    }

    #[test]
    fn a_list_prints_the_same_until_something_kubelet_reads_changes() {
        let list = vec![device("a", HEALTHY, Some(0)), device("b", HEALTHY, None)];
        assert_eq!(fingerprint(&list), fingerprint(&list.clone()));
        let changes = [
            vec![device("a", UNHEALTHY, Some(0)), device("b", HEALTHY, None)],
            vec![device("a", HEALTHY, Some(1)), device("b", HEALTHY, None)],
            vec![device("a", HEALTHY, None), device("b", HEALTHY, None)],
            vec![device("a", HEALTHY, Some(0)), device("c", HEALTHY, None)],
            vec![device("a", HEALTHY, Some(0))],
            vec![device("b", HEALTHY, None), device("a", HEALTHY, Some(0))],
        ];
        for changed in changes {
            assert_ne!(fingerprint(&list), fingerprint(&changed), "{changed:?}");
        }
    }
}
