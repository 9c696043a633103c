//! VFIO for SR-IOV VFs: which IOMMU group a device is in, the `/dev/vfio` nodes a container needs
//! for it, and giving a container's cgroup access to those nodes.
//!
//! # Model
//!
//! A VF bound to `vfio-pci` is used through two character devices: the container node
//! `/dev/vfio/vfio` and its group's node `/dev/vfio/<group>` (`/dev/vfio/noiommu-<group>` when VFIO
//! runs without an IOMMU, which it marks by naming the group `vfio-noiommu`). [`IommuGroup`] reads a
//! device's group from sysfs; [`VfioDir`] finds the nodes under a configurable root (`NSM_VFIO_PATH`,
//! default [`DEFAULT_VFIO_DIR`]) and reads their major:minor ([`DeviceNumber`]) through the
//! [`DeviceNodes`] seam.
//!
//! [`VfioDir::nodes_for`] gathers every node one VF needs ([`VfioNodes`]), the VFIO character
//! device `/dev/vfio/devices/vfioN` (iommufd; kernels from 6.2) included where the kernel made one,
//! each with its host path, its path in the container and its number: what a kubelet device
//! plugin returns as device specs.
//!
//! [`CgroupMode::detect`] tells v1, hybrid and v2 nodes apart. On cgroup v1, a container may open a device only if its devices cgroup allows it.
//! [`CgroupDevices`] writes `c MAJ:MIN rw` to `devices.allow` on the first grant (never `m`: the
//! node exists) and to `devices.deny` when the last grant of that (cgroup, device) pair is revoked,
//! only where it granted: a cgroup whose `devices.list` already allows the device is left alone.
//! (The Go forwarder writes its revocations to `devices.allow` too, so it never revokes anything.)
//! The cgroup directory comes from the client, so it is treated as hostile: it must be relative,
//! without `..` or NUL, of bounded length, walked without following symlinks, and name a
//! container's leaf cgroup directly below a pod cgroup, never `kubepods`, a QoS level, a pod or
//! the root (`NSM_CGROUP_PATH`, default [`DEFAULT_CGROUP_ROOT`]). On cgroup v2 there is no
//! `devices.allow`; every grant fails with [`Error::CgroupV2`], which names the alternative:
//! returning the nodes as device specs from the kubelet device plugin's Allocate, so the
//! container runtime puts them in the container's BPF device filter when it creates it.
//!
//! # Example
//!
//! ```
//! use sriov_vfio::{CgroupDevices, DeviceNumber, Error};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let tmp = tempfile::tempdir()?;
//! # let root = tmp.path();
//! # let ctr = root.join("kubepods/pod1/ctr");
//! # std::fs::create_dir_all(&ctr)?;
//! # std::fs::write(ctr.join("devices.allow"), "")?;
//! # std::fs::write(ctr.join("devices.deny"), "")?;
//! // In the forwarder: `VfioDir::new("/host/dev/vfio").devices_for(&group)?` gives these numbers.
//! let container = DeviceNumber::new(10, 196);
//! let group = DeviceNumber::new(243, 3);
//!
//! let cgroups = CgroupDevices::open(root)?;
//! let grant = cgroups.grant_all("kubepods/pod1/ctr", &[container, group])?;
//! assert_eq!(grant.rules().len(), 2);
//! assert_eq!(std::fs::read_to_string(ctr.join("devices.allow"))?, "c 243:3 rw");
//!
//! cgroups.revoke_grant(&grant)?;
//! assert_eq!(std::fs::read_to_string(ctr.join("devices.deny"))?, "c 10:196 rw");
//!
//! // A client cannot point us outside the cgroup root, nor at a whole pod.
//! assert!(matches!(
//!     cgroups.grant("../../../etc", container),
//!     Err(Error::CgroupDirRejected { .. })
//! ));
//! assert!(matches!(
//!     cgroups.grant("kubepods/pod1", container),
//!     Err(Error::CgroupDirRefused { .. })
//! ));
//! # Ok(())
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

mod cgroup;
mod device;
mod error;
mod group;
mod nodes;
mod vfio_dir;

pub use cgroup::{
    CgroupDevices, CgroupMode, CgroupVersion, DEFAULT_CGROUP_ROOT, FileRuleWriter, Grant,
    MAX_CGROUP_COMPONENT_LEN, MAX_CGROUP_DIR_LEN, MAX_GLOB_MATCHES, Revoked, RuleWriter,
    detect_version, validate_cgroup_dir,
};
pub use device::{DeviceNodes, DeviceNumber, StatDeviceNodes};
pub use error::{CgroupDirProblem, Error, Result};
pub use group::{IommuGroup, NOIOMMU_GROUP_NAME};
pub use nodes::{HOST_VFIO_DIR, VfioNode, VfioNodes, vfio_cdev_name};
pub use vfio_dir::{DEFAULT_VFIO_DIR, VfioDir};

/// The README's example, run as a doctest so it stays true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
