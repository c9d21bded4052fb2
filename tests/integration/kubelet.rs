//! Paths as kubelet makes them, shared by every area of these tests.

use std::path::{Path, PathBuf};

/// Where kubelet, with root directory `root`, mounts the inline CSI volume
/// `secrets-store-inline` of pod `uid`.
pub fn target_path(root: &Path, uid: &str) -> PathBuf {
    root.join(format!(
        "pods/{uid}/volumes/kubernetes.io~csi/secrets-store-inline/mount"
    ))
}
