//! Mount failures leave nothing mounted.

use secretfs_fuse::{MountError, MountOptions, MountedVolume, TreeError};

use super::fixture::*;

#[test]
fn an_invalid_volume_mounts_nothing() {
    if !fuse_available() {
        return;
    }
    let runtime = runtime();
    let (_dir, target) = target_dir();
    let err = MountedVolume::mount(
        spec(vec![file("a", 0o644, 0, b"1"), file("a/b", 0o644, 0, b"2")]),
        &target,
        &MountOptions::default(),
        runtime.handle().clone(),
    )
    .unwrap_err();
    assert!(
        matches!(err, MountError::Tree(TreeError::FileIsDirectory { .. })),
        "{err}"
    );
    assert!(mount_line(&target).is_none());
}

#[test]
fn a_missing_target_is_a_clear_error() {
    if !fuse_available() {
        return;
    }
    let runtime = runtime();
    let (_dir, target) = target_dir();
    let missing = target.join("does-not-exist");
    let err = MountedVolume::mount(
        spec(vec![file("a", 0o644, 0, b"1")]),
        &missing,
        &MountOptions::default(),
        runtime.handle().clone(),
    )
    .unwrap_err();
    assert!(
        matches!(err, MountError::TargetNotDirectory { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("does-not-exist"), "{err}");
}
