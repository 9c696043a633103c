//! Crash points between the sysfs writes of a bind, for crash-testing the
//! recovery of a caller (feature `failpoints`, through `sriov-failpoint`).
//!
//! `Sysfs::bind` makes up to three writes: the old driver's `unbind`,
//! `driver_override`, `drivers_probe`. A process killed between two of them
//! leaves the device half-moved, which its restart has to put right:
//!
//! - `pci.bind.after-unbind`: unbound from the old driver, no override yet;
//! - `pci.bind.after-override`: `driver_override` written, no probe yet.
//!
//! Without the feature a point expands to nothing and `sriov-failpoint` is
//! not a dependency at all.

/// Places a crash point; an empty statement without the `failpoints` feature.
macro_rules! failpoint {
    ($name:literal) => {
        #[cfg(feature = "failpoints")]
        sriov_failpoint::hit($name);
    };
}
pub(crate) use failpoint;
