//! The pool's state file, as read at start-up.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| sriov_token_pool::fuzzing::state_file(data));
