//! The seam between the gRPC server and whatever owns the devices.

use sriov_api::kubelet::deviceplugin::v1beta1::ContainerAllocateResponse;
use tokio::sync::watch;

/// One device as kubelet should see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    /// Kubelet's device ID: unique within the resource, at most
    /// [`MAX_DEVICE_ID_LEN`] characters (longer ones are not advertised).
    pub id: String,
    /// Whether kubelet may hand the device to a pod.
    pub healthy: bool,
    /// NUMA node the device is attached to; `None` when sysfs says -1.
    pub numa_node: Option<i64>,
    /// Devices sharing a group (for VFs: their PF's PCI address) are preferred
    /// together by `GetPreferredAllocation`; `None` puts the device in no group.
    pub group: Option<String>,
}

/// Longest device ID advertised. Device IDs end up in places with the DNS
/// label limit of 63 characters (annotations, CDI names, env var values
/// parsed by tools), so longer IDs are dropped with a warning rather than
/// advertised and broken later.
pub const MAX_DEVICE_ID_LEN: usize = 63;

/// Why a backend refused an allocation. Each maps to one gRPC status code.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum AllocateError {
    /// The ID is not a device of this resource (gRPC `NOT_FOUND`).
    #[error("device {id} is not a device of this resource")]
    UnknownDevice {
        /// The ID kubelet asked for.
        id: String,
    },
    /// The device exists but cannot be handed out now: already allocated,
    /// unhealthy, or the pool has nothing left (gRPC `RESOURCE_EXHAUSTED`).
    #[error("device {id} is unavailable: {reason}")]
    Unavailable {
        /// The ID kubelet asked for.
        id: String,
        /// Why, for kubelet's event log.
        reason: String,
    },
    /// The backend failed for a reason of its own (gRPC `INTERNAL`).
    #[error("allocating {id} failed: {message}")]
    Internal {
        /// The ID being allocated when it failed.
        id: String,
        /// What went wrong.
        message: String,
    },
}

/// What a device plugin advertises and hands out for one resource.
///
/// The gRPC server is generic over this trait; the VF pool implements it.
/// Implementations are shared between tasks (`Arc`), so methods take `&self`
/// and do their own locking. `allocate`, `allocated` and `release` may block
/// briefly (e.g. to persist state): the server calls them off the async
/// runtime's worker threads.
pub trait Backend: Send + Sync + 'static {
    /// The devices of this resource, kept current.
    ///
    /// `ListAndWatch` sends the receiver's value when kubelet connects and
    /// again whenever it changes (count or health), so the sender should
    /// only publish real changes. The list includes allocated devices:
    /// kubelet does its own accounting of which are in use.
    fn devices(&self) -> watch::Receiver<Vec<Device>>;

    /// Allocates devices for the containers of one pod. `containers[i]` are
    /// the IDs kubelet chose for container `i`; the result must have exactly
    /// one response per container, in order (envs such as
    /// `NSM_SRIOV_TOKENS_<name>=<ids>`, device specs, mounts, CDI devices).
    ///
    /// Either every container's devices are allocated or none are: on error
    /// nothing may stay marked allocated.
    fn allocate(
        &self,
        containers: &[Vec<String>],
    ) -> Result<Vec<ContainerAllocateResponse>, AllocateError>;

    /// IDs this backend currently counts as allocated. The pod-resources
    /// watcher compares them with what pods hold.
    fn allocated(&self) -> Vec<String>;

    /// Marks devices free again: no pod has held them for two consecutive
    /// pod-resources polls. Unknown or already free IDs are ignored.
    fn release(&self, ids: &[String]);
}
