//! The HTTP/2 `:authority` rewriter in front of every socket we serve:
//! the first byte says where the input is cut into socket reads.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (cuts, input) = data.split_at(data.len().min(8));
    sriov_authority::fuzzing::authority(cuts, input);
});
