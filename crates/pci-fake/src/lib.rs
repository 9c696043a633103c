//! A fake sysfs PCI tree that behaves like the kernel, for tests and benchmarks.
//!
//! Trees have the kernel's real shape: device directories under
//! `devices/pci0000:00/...`, `bus/pci/devices/<BDF>` links to them,
//! `virtfnN -> ../<BDF>` and `physfn` links, `driver ->
//! ../../../../bus/pci/drivers/<name>`, `iommu_group ->
//! ../../../../kernel/iommu_groups/<N>`, and `net/<ifname>/` for bound
//! network drivers. A [`FakeKernel`] plugged into `sriov_pci::Sysfs` as its
//! attribute writer reacts to writes as the PCI core does (VF creation and
//! removal, driver matching and binding, the kernel's errno refusals), so
//! the logic above sysfs is tested, not just the file writes.
//!
//! - [`TreeBuilder`] builds trees; [`fixtures`] has named NIC-shaped ones
//!   and a generator of N PFs x M VFs.
//! - [`FakeSysfs::copy_of`] gives a private copy of a shipped fixture in
//!   `testdata/sysfs/`.
//! - [`FakeSysfs::switchdev`] puts a PF's e-switch in switchdev mode (uplink and
//!   representor netdevs under the PF's `net/`).
//! - [`capture()`] copies the relevant part of a real `/sys` into a fixture
//!   (the VM test does this on real igb VFs).
//!
//! ```
//! use sriov_pci_fake::{FakeSysfs, fixtures};
//!
//! let fake = fixtures::igb_82576(FakeSysfs::builder()).build().unwrap();
//! let sysfs = fake.sysfs();
//! let pf = "0000:01:00.0".parse().unwrap();
//! let vfs = sysfs.set_num_vfs(pf, 2).unwrap();
//! assert_eq!(vfs[1].address.to_string(), "0000:01:10.2");
//! assert_eq!(sysfs.driver(vfs[1].address).unwrap().as_deref(), Some("igbvf"));
//! ```

mod builder;
mod capture;
pub mod fixtures;
mod kernel;
mod layout;
mod meta;
mod switchdev;

pub use builder::{FakeSysfs, FunctionSpec, SriovSpec, TreeBuilder, copy_tree};
pub use capture::capture;
pub use kernel::{FakeKernel, RecordedWrite};
pub use meta::{DriverSpec, META_FILE, Meta};

/// The workspace's `testdata/sysfs` directory (where shipped fixtures live).
///
/// It exists only in a checkout of the nsm-sriov-rs workspace, not beside a
/// copy of this crate from a registry: other projects ship their own
/// fixtures (built with [`TreeBuilder::build_at`] or captured with
/// [`capture()`]) and open them with [`FakeSysfs::copy_of`].
pub fn testdata_sysfs() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/sysfs")
}

/// The README's example, run as a doctest so it stays true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
