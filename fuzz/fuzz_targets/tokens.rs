//! NSM path tokens (JWTs) as the policies read them from a hostile path:
//! decoding, and verification against a certificate.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    sriov_identity::fuzzing::tokens(data);
});
