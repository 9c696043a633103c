//! ResourceClaims as the API server hands them to DRA mode's Prepare: the claim's JSON, then
//! the opaque `VfConfig` of every allocated device resolved from its config entries (class
//! before claim), and any JSON read as a `VfConfig`. Whatever is accepted obeys every rule.
#![no_main]

use k8s_openapi::api::resource::v1::ResourceClaim;
use libfuzzer_sys::fuzz_target;
use sriov_dra::vfconfig::{VfConfig, resolve};

const DRIVER: &str = "sriovnetwork.k8snetworkplumbingwg.io";

fuzz_target!(|data: &[u8]| {
    if let Ok(value) = serde_json::from_slice::<serde_json::Value>(data)
        && let Ok(config) = VfConfig::from_json(&value)
    {
        assert!(config.validate().is_ok());
    }
    let Ok(claim) = serde_json::from_slice::<ResourceClaim>(data) else {
        return;
    };
    let Some(devices) = claim
        .status
        .as_ref()
        .and_then(|s| s.allocation.as_ref())
        .and_then(|a| a.devices.as_ref())
    else {
        return;
    };
    let configs = devices.config.clone().unwrap_or_default();
    for result in devices.results.iter().flatten() {
        if let Ok(config) = resolve(DRIVER, &configs, &result.request) {
            assert!(config.validate().is_ok());
        }
    }
});
