//! The volume manager with real mounts and a fake provider. Needs root and
//! /dev/fuse (SECRETFS_SKIP_FUSE_TESTS=1 skips).

pub mod fake;

mod classes;
mod lazy;
mod publish;
mod rotation;
mod targets;
