//! The forwarder's SR-IOV YAML config (`NSM_SRIOV_CONFIG_FILE`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = sriov_config::SriovConfig::parse(std::path::Path::new("fuzz.yaml"), text);
    }
});
