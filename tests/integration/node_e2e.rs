//! End to end: the real `secretfs node` binary, driven over its Unix socket
//! by the kubelet stand-in, fetching from the Key Vault emulator over HTTPS,
//! with real FUSE mounts. Needs root and /dev/fuse
//! (SECRETFS_SKIP_FUSE_TESTS=1 skips).

pub mod harness;

mod bad_input;
mod cluster;
mod demo;
mod identities;
mod leaks;
mod seed;
mod standalone;
mod survival;
mod sync_restart;
