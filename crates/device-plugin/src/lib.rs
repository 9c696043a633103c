//! Kubelet device plugin server and pod-resources client.
//!
//! A node advertises its VFs to Kubernetes through device plugins: one gRPC
//! server per extended resource (`<domain>/<name>`), which kubelet calls to
//! list the devices (`ListAndWatch`), to choose among them
//! (`GetPreferredAllocation`) and to hand them to a container (`Allocate`).
//! This crate is that server, generic over a small [`Backend`] trait that
//! owns the devices (the VF pool implements it), plus the pod-resources
//! client that tells which allocated devices no pod holds any more.
//!
//! # Lifecycle of a [`DevicePlugin`]
//!
//! 1. **Mode.** As sriov-network-device-plugin decides it: if kubelet's
//!    plugin-watcher dir (`/var/lib/kubelet/plugins_registry`) exists, the
//!    socket goes there and also serves `pluginregistration.Registration`
//!    (`GetInfo`, `NotifyRegistrationStatus`); kubelet finds it by itself.
//!    Otherwise the socket goes in the device-plugin dir
//!    (`/var/lib/kubelet/device-plugins`) and the plugin calls `Register`
//!    on `kubelet.sock` there: version `v1beta1`, endpoint = the socket's
//!    file name, the resource name, and options advertising
//!    `GetPreferredAllocation` when a policy is set. [`RegistrationMode`] can force either.
//! 2. **Listen, register.** A stale socket is removed and a new one bound.
//!    Every accepted connection is relayed through `sriov-authority`, which
//!    replaces an unparsable `:authority` (kubelet before 1.26 sent the
//!    socket path, which `h2` rejects) with `localhost`, so old and new
//!    kubelets work.
//! 3. **Watch.** The socket's directory is watched with inotify. Kubelet
//!    restarting deletes our socket and recreates `kubelet.sock`: the
//!    plugin listens again and re-registers, abandoning any `Register`
//!    call the old kubelet had not answered. Anyone deleting or replacing
//!    our socket has the same effect. Kubelet absent, refusing, or slow
//!    means a retry with exponential backoff; the plugin never gives up
//!    until told to stop.
//! 4. **Serve.** `ListAndWatch` sends the whole device list at once and on
//!    every change the backend publishes (count, health), with NUMA
//!    topology; IDs longer than 63 characters are not advertised. A
//!    cancelled stream stops its task. `Allocate` refuses unknown IDs
//!    (`NOT_FOUND`), taken ones (`RESOURCE_EXHAUSTED`) and malformed
//!    requests (`INVALID_ARGUMENT`), with one response per container.
//!    `GetPreferredAllocation` (advertised only when
//!    [`PluginConfig::allocation_policy`] is set, by default
//!    [`AllocationPolicy::Packed`]) chooses as the policy says: packed onto
//!    one PF, spread across PFs, or on one NUMA node; always with kubelet's
//!    `must_include` and exactly `allocation_size` available IDs.
//! 5. **Stop.** When the shutdown future resolves, streams end and the
//!    socket is removed.
//!
//! [`PodResourcesWatcher`] polls kubelet's pod-resources `List` and calls
//! [`Backend::release`] for allocated IDs that no pod held in two
//! consecutive polls.
//!
//! # Example
//!
//! ```no_run
//! use std::sync::Arc;
//! use sriov_deviceplugin::{
//!     AllocateError, Backend, ContainerAllocateResponse, Device, DevicePlugin, PluginConfig,
//! };
//! use tokio::sync::watch;
//!
//! struct OneVf(watch::Sender<Vec<Device>>);
//!
//! impl Backend for OneVf {
//!     fn devices(&self) -> watch::Receiver<Vec<Device>> {
//!         self.0.subscribe()
//!     }
//!     fn allocate(
//!         &self,
//!         containers: &[Vec<String>],
//!     ) -> Result<Vec<ContainerAllocateResponse>, AllocateError> {
//!         Ok(containers
//!             .iter()
//!             .map(|ids| ContainerAllocateResponse {
//!                 envs: [("NSM_SRIOV_TOKENS_a".to_string(), ids.join(","))].into(),
//!                 ..Default::default()
//!             })
//!             .collect())
//!     }
//!     fn allocated(&self) -> Vec<String> {
//!         Vec::new()
//!     }
//!     fn release(&self, _ids: &[String]) {}
//! }
//!
//! # async fn demo() {
//! let vf = Device { id: "0000:3b:02.1".into(), healthy: true, numa_node: Some(0), group: None };
//! let backend = Arc::new(OneVf(watch::channel(vec![vf]).0));
//! let plugin = DevicePlugin::new(PluginConfig::new("example.com/sriov"), backend);
//! plugin.run(async { tokio::signal::ctrl_c().await.ok(); }).await;
//! # }
//! ```

// This crate reads client, kubelet or file input: a panic here is a denial
// of service of a node agent, so the panicking shortcuts are refused.
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

mod backend;
mod error;
#[cfg(feature = "fake")]
pub mod fake;
pub mod metrics;
mod plugin;
mod podresources;
mod preferred;
mod service;
pub mod watch;

pub use backend::{AllocateError, Backend, Device, MAX_DEVICE_ID_LEN};
pub use error::Error;
pub use plugin::{DevicePlugin, PluginConfig, RegistrationMode, connect_unix, socket_name_for};
pub use podresources::{HeldDevices, PodResourcesClient, PodResourcesWatcher, ReleaseTracker};
pub use preferred::AllocationPolicy;
pub use sriov_api::kubelet::deviceplugin::v1beta1::{
    CdiDevice, ContainerAllocateResponse, DeviceSpec, Mount,
};
