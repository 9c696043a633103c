//! Entry points for `cargo xtask fuzz` (the `fuzz/` crate): the parsers
//! of sysfs values, reachable without a sysfs tree. Not a stable API.

use std::path::Path;

use crate::PciAddress;

/// Feeds one sysfs attribute value to every value parser sysfs reads use.
pub fn sysfs_value(raw: &str) {
    let path = Path::new("/sys/fuzz");
    let _ = crate::device::parse_hex(path, raw, "a hex id");
    let _ = crate::device::parse_dec(path, raw, "a number");
    if let Ok(a) = raw.parse::<PciAddress>() {
        // What we print must parse back to the same address.
        assert_eq!(a.to_string().parse::<PciAddress>().ok(), Some(a));
    }
}
