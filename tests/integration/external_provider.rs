//! External providers over the upstream provider protocol: our client
//! against our server (the Azure provider, with the Key Vault emulator) and
//! against a test provider that returns bad responses. Publish tests mount
//! FUSE volumes: they need root and /dev/fuse (SECRETFS_SKIP_FUSE_TESTS=1
//! skips them).

pub mod common;

mod azure;
mod bad_responses;
mod binary;
mod client;
mod rotation;
mod status;
mod survival;
