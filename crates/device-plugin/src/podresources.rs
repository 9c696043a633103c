//! Which devices pods still hold, from kubelet's pod-resources API, and
//! releasing the ones nobody holds.
//!
//! Kubelet never tells a device plugin that a pod ended. The pod-resources
//! `List` answers which device IDs each running pod's containers hold; IDs a
//! backend counts as allocated that no pod holds are released — but only
//! after two consecutive polls agree, because a pod being admitted has
//! been `Allocate`d before it shows up in `List`.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use sriov_api::kubelet::podresources::v1 as api;
use sriov_api::kubelet::podresources::v1::pod_resources_lister_client::PodResourcesListerClient;
use tonic::transport::Channel;
use tracing::{info, warn};

use crate::Error;
use crate::backend::Backend;
use crate::plugin::connect_unix;

/// Device IDs held by pods, by resource name.
pub type HeldDevices = HashMap<String, HashSet<String>>;

/// A client of kubelet's pod-resources socket.
pub struct PodResourcesClient {
    path: PathBuf,
    inner: PodResourcesListerClient<Channel>,
    call_timeout: Duration,
}

impl PodResourcesClient {
    /// Dials `<pod-resources dir>/kubelet.sock`.
    pub async fn connect(path: &Path) -> Result<Self, Error> {
        Ok(Self {
            path: path.to_owned(),
            inner: PodResourcesListerClient::new(connect_unix(path).await?)
                .max_decoding_message_size(sriov_api::POD_RESOURCES_MAX_MESSAGE_BYTES),
            call_timeout: Duration::from_secs(10),
        })
    }

    /// Every device held by any pod's container (`List`).
    pub async fn held_devices(&mut self) -> Result<HeldDevices, Error> {
        let resp = self
            .call(
                "List",
                self.inner.clone().list(api::ListPodResourcesRequest {}),
            )
            .await?;
        let mut held = HeldDevices::new();
        for pod in &resp.pod_resources {
            collect(pod, &mut held);
        }
        Ok(held)
    }

    /// The devices one pod holds (`Get`); NOT_FOUND from kubelet means the
    /// pod is gone and holds nothing.
    pub async fn pod_devices(&mut self, name: &str, namespace: &str) -> Result<HeldDevices, Error> {
        let req = api::GetPodResourcesRequest {
            pod_name: name.to_string(),
            pod_namespace: namespace.to_string(),
        };
        let mut held = HeldDevices::new();
        match self.call("Get", self.inner.clone().get(req)).await {
            Ok(resp) => {
                if let Some(pod) = &resp.pod_resources {
                    collect(pod, &mut held);
                }
                Ok(held)
            }
            Err(Error::PodResources { status, .. }) if status.code() == tonic::Code::NotFound => {
                Ok(held)
            }
            Err(e) => Err(e),
        }
    }

    async fn call<T>(
        &self,
        call: &'static str,
        fut: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    ) -> Result<T, Error> {
        match tokio::time::timeout(self.call_timeout, fut).await {
            Err(_) => Err(Error::Timeout {
                path: self.path.clone(),
                call,
            }),
            Ok(Err(status)) => Err(Error::PodResources {
                path: self.path.clone(),
                call,
                status,
            }),
            Ok(Ok(r)) => Ok(r.into_inner()),
        }
    }
}

fn collect(pod: &api::PodResources, held: &mut HeldDevices) {
    for c in &pod.containers {
        for d in &c.devices {
            held.entry(d.resource_name.clone())
                .or_default()
                .extend(d.device_ids.iter().cloned());
        }
    }
}

/// Decides which allocated IDs to release: those unheld in two consecutive
/// observations.
#[derive(Debug, Default)]
pub struct ReleaseTracker {
    suspects: HashMap<String, HashSet<String>>,
}

impl ReleaseTracker {
    /// Records one successful poll for `resource` and returns the IDs that
    /// were allocated but unheld in this poll and the previous one.
    pub fn observe(
        &mut self,
        resource: &str,
        allocated: &[String],
        held: Option<&HashSet<String>>,
    ) -> Vec<String> {
        let unheld: HashSet<String> = allocated
            .iter()
            .filter(|id| !held.is_some_and(|h| h.contains(*id)))
            .cloned()
            .collect();
        let previous = self
            .suspects
            .insert(resource.to_string(), unheld.clone())
            .unwrap_or_default();
        let mut release: Vec<String> = unheld.intersection(&previous).cloned().collect();
        release.sort();
        if let Some(s) = self.suspects.get_mut(resource) {
            for id in &release {
                s.remove(id);
            }
        }
        release
    }

    /// Forgets every suspect: a failed poll breaks the "consecutive" chain.
    pub fn reset(&mut self) {
        self.suspects.clear();
    }
}

/// Polls pod resources and releases devices no pod holds, for any number
/// of resources.
pub struct PodResourcesWatcher {
    socket: PathBuf,
    interval: Duration,
    resources: Vec<(String, Arc<dyn Backend>)>,
    tracker: ReleaseTracker,
    client: Option<PodResourcesClient>,
}

impl PodResourcesWatcher {
    /// Polls `socket` (kubelet's pod-resources `kubelet.sock`) every
    /// `interval` (`NSM_RESOURCE_POLL_TIMEOUT` in the forwarder).
    pub fn new(socket: impl Into<PathBuf>, interval: Duration) -> Self {
        Self {
            socket: socket.into(),
            interval,
            resources: Vec::new(),
            tracker: ReleaseTracker::default(),
            client: None,
        }
    }

    /// Also reconciles `resource`'s allocations in `backend`.
    pub fn watch(mut self, resource: impl Into<String>, backend: Arc<dyn Backend>) -> Self {
        self.resources.push((resource.into(), backend));
        self
    }

    /// One poll: asks kubelet, releases what two polls in a row found
    /// unheld, and returns the IDs released per resource.
    pub async fn poll_once(&mut self) -> Result<HashMap<String, Vec<String>>, Error> {
        let client = match &mut self.client {
            Some(c) => c,
            None => self
                .client
                .insert(PodResourcesClient::connect(&self.socket).await?),
        };
        let held = match client.held_devices().await {
            Ok(h) => h,
            Err(e) => {
                self.client = None;
                self.tracker.reset();
                return Err(e);
            }
        };
        let mut released = HashMap::new();
        for (resource, backend) in &self.resources {
            let b = Arc::clone(backend);
            let allocated = tokio::task::spawn_blocking(move || b.allocated())
                .await
                .unwrap_or_default();
            let ids = self
                .tracker
                .observe(resource, &allocated, held.get(resource));
            if !ids.is_empty() {
                // Device ids may be capabilities (the forwarder's tokens):
                // only their count at INFO.
                info!(
                    resource,
                    count = ids.len(),
                    "no pod holds these devices any more; releasing"
                );
                tracing::trace!(resource, ?ids, "released device ids");
                let b = Arc::clone(backend);
                let to_release = ids.clone();
                let _ = tokio::task::spawn_blocking(move || b.release(&to_release)).await;
                released.insert(resource.clone(), ids);
            }
        }
        Ok(released)
    }

    /// Polls until `shutdown` resolves. Poll failures are logged and reset
    /// the two-poll rule; polling continues.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut tick = tokio::time::interval(self.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = &mut shutdown => return,
                _ = tick.tick() => {
                    if let Err(e) = self.poll_once().await {
                        warn!(error = %e, "pod-resources poll failed");
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn releases_only_after_two_consecutive_unheld_polls() {
        let mut t = ReleaseTracker::default();
        let held: HashSet<String> = ["a".to_string()].into();
        assert!(t.observe("r", &ids(&["a", "b"]), Some(&held)).is_empty());
        assert_eq!(t.observe("r", &ids(&["a", "b"]), Some(&held)), ids(&["b"]));
    }

    #[test]
    fn a_device_held_again_in_between_is_not_released() {
        let mut t = ReleaseTracker::default();
        let none = HashSet::new();
        let b_held: HashSet<String> = ["b".to_string()].into();
        assert!(t.observe("r", &ids(&["b"]), Some(&none)).is_empty());
        assert!(t.observe("r", &ids(&["b"]), Some(&b_held)).is_empty());
        assert!(t.observe("r", &ids(&["b"]), Some(&none)).is_empty());
        assert_eq!(t.observe("r", &ids(&["b"]), None), ids(&["b"]));
    }

    #[test]
    fn a_failed_poll_restarts_the_count() {
        let mut t = ReleaseTracker::default();
        assert!(t.observe("r", &ids(&["b"]), None).is_empty());
        t.reset();
        assert!(t.observe("r", &ids(&["b"]), None).is_empty());
        assert_eq!(t.observe("r", &ids(&["b"]), None), ids(&["b"]));
    }

    #[test]
    fn resources_are_tracked_separately() {
        let mut t = ReleaseTracker::default();
        assert!(t.observe("r1", &ids(&["x"]), None).is_empty());
        assert!(t.observe("r2", &ids(&["x"]), None).is_empty());
        assert_eq!(t.observe("r1", &ids(&["x"]), None), ids(&["x"]));
    }
}
