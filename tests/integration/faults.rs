//! Faults, each with an expected outcome (docs/FAULTS.md has the table):
//! Key Vault throttling, errors, resets and slowness; Entra ID and IMDS
//! down; the Kubernetes API down, failing or slow during publish and sync;
//! an external provider's socket gone or its provider hanging. Each test
//! checks the invariants that apply: no half-made mount after a failed
//! publish, no empty file after a failed refresh (the last good bytes
//! stay), no Secret losing data after a failed refresh or sync.
//!
//! Tests with real mounts need root and /dev/fuse
//! (SECRETFS_SKIP_FUSE_TESTS=1 skips them).

pub mod common;

mod external;
mod identity;
mod kube;
mod vault;
