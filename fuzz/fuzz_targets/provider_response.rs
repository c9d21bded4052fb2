//! An external provider's `MountResponse`, decoded from protobuf as the gRPC
//! client does, then checked: `secretfs::fuzzing::provider_response`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message as _;
use secretfs_csi::proto::provider::MountResponse;

fuzz_target!(|data: &[u8]| {
    if let Ok(response) = MountResponse::decode(data) {
        let _ = secretfs::fuzzing::provider_response(response);
    }
});
