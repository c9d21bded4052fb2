//! A NodePublishVolume's volume context and target path:
//! `secretfs::fuzzing::volume_context` (first line the target path, then
//! `key=value` and `secret:key=value` lines).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = secretfs::fuzzing::volume_context(data);
});
