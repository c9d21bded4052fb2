//! The SecretProviderClass `objects` parameter (and the Azure parameters
//! around it): `secretfs::fuzzing::objects`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = secretfs::fuzzing::objects(data);
});
