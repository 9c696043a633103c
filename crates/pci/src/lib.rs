//! PCI functions through sysfs: the layer every other crate of the
//! SR-IOV forwarder and device plugin stands on, and reusable by any Rust
//! NSM component that needs PCI facts.
//!
//! # Model
//!
//! A [`Sysfs`] is a view of the PCI bus rooted at two configurable
//! directories (`/sys/bus/pci/devices` and `/sys/bus/pci/drivers` by
//! default), so every function runs unchanged against a copy or a fake of
//! the tree. Reads go straight to the files; writes go through an
//! [`AttrWriter`] so the fake tree (crate `sriov-pci-fake`) can react to
//! them like the kernel does: create VFs for `sriov_numvfs`, move `driver`
//! links for `drivers_probe` and `unbind`, refuse bad values with the
//! kernel's errno.
//!
//! - Facts: [`Sysfs::device`] (ids, driver, NUMA node, IOMMU group,
//!   netdevs, SR-IOV capability, PF of a VF).
//! - SR-IOV: [`Sysfs::vfs`] (ordered by VF index as a number),
//!   [`Sysfs::physfn`], [`Sysfs::set_num_vfs`].
//! - Drivers: [`Sysfs::bind`], [`Sysfs::unbind`], [`Sysfs::restore_driver`].
//! - Discovery: [`Sysfs::discover_all`], [`Sysfs::discover_pfs`].
//!
//! Actions wait, with a bounded timeout, until the kernel shows the
//! result, and every error names the device and the path involved.
//!
//! # Example
//!
//! On a host the view is `Sysfs::default()`; here it is a fake tree from the
//! `sriov-pci-fake` crate (an Intel 82576 PF with no VFs enabled), whose
//! fake kernel reacts to the writes as Linux does.
//!
//! ```
//! use sriov_pci::{PciAddress, Sysfs};
//!
//! # let fake = sriov_pci_fake::fixtures::igb_82576(sriov_pci_fake::FakeSysfs::builder()).build()?;
//! # let sysfs: Sysfs = fake.sysfs();
//! // let sysfs = Sysfs::default(); // /sys/bus/pci/{devices,drivers}
//! let pf: PciAddress = "0000:01:00.0".parse()?;
//! if sysfs.num_vfs(pf)? == 0 {
//!     sysfs.set_num_vfs(pf, 2)?;
//! }
//! for vf in sysfs.vfs(pf)? {
//!     let previous = sysfs.bind(vf.address, "vfio-pci")?;
//!     println!("VF {} at {} was bound to {previous:?}", vf.index, vf.address);
//!     assert_eq!(previous.as_deref(), Some("igbvf"));
//!     sysfs.restore_driver(vf.address, previous.as_deref())?;
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Features
//!
//! - `failpoints` (off by default): crash points between the sysfs writes of
//!   [`Sysfs::bind`], `pci.bind.after-unbind` and `pci.bind.after-override`.
//!   A process whose `NSM_FAILPOINTS` names one (comma-separated; `name@N`
//!   for the N-th hit) kills itself there with SIGKILL, so a caller can test
//!   that its restart repairs a half-done bind. Without the feature the
//!   points compile to nothing.

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

mod address;
mod device;
mod discover;
mod driver;
mod error;
mod failpoint;
#[doc(hidden)]
pub mod fuzzing;
mod sriov;
mod sysfs;

pub use address::PciAddress;
pub use device::{NetDev, PciDevice, PciIds, SriovCapability, iommu_group_of};
pub use discover::{Inventory, KnownVf, PhysicalFunction, VirtualFunction, in_parallel};
pub use error::{AddressError, PciError};
pub use sriov::VirtFn;
pub use sysfs::{
    AttrWriter, DEFAULT_DEVICES_DIR, DEFAULT_DRIVERS_DIR, DEFAULT_TIMEOUT, KernelWriter, Sysfs,
};

/// The README's example, run as a doctest so it stays true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
