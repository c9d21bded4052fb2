//! Integration tests of the Key Vault + Entra ID + IMDS emulator over real
//! HTTPS/HTTP connections (one test binary, modules per area).

#[path = "emulator/common.rs"]
mod common;

#[path = "emulator/admin_api.rs"]
mod admin_api;
#[path = "emulator/binary.rs"]
mod binary;
#[path = "emulator/challenge.rs"]
mod challenge;
#[path = "emulator/entra.rs"]
mod entra;
#[path = "emulator/faults.rs"]
mod faults;
#[path = "emulator/imds.rs"]
mod imds;
#[path = "emulator/keys_certificates.rs"]
mod keys_certificates;
#[path = "emulator/paging.rs"]
mod paging;
#[path = "emulator/rust_sdk.rs"]
mod rust_sdk;
#[path = "emulator/secrets.rs"]
mod secrets;
