//! PFX → PEM of certificate-backed secrets, and the split of a mounted PEM
//! or PFX file into `tls.crt`/`tls.key`: `secretfs::fuzzing::pfx_pem`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = secretfs::fuzzing::pfx_pem(data);
});
