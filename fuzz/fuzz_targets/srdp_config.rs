//! The standalone device plugin's JSON `resourceList`, selectors and
//! `pfNames` `#` ranges included.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = sriov_selector_pools::Config::parse(text, "intel.com");
    }
});
