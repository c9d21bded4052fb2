//! Paths as kubelet makes them, shared by every area of these tests.

use std::path::{Path, PathBuf};

use secretfs_csi::{PublishRequest, VolumeContext, keys};
use secretfs_secrets::SecretMap;

/// Where kubelet, with root directory `root`, mounts the inline CSI volume
/// `secrets-store-inline` of pod `uid`.
pub fn target_path(root: &Path, uid: &str) -> PathBuf {
    root.join(format!(
        "pods/{uid}/volumes/kubernetes.io~csi/secrets-store-inline/mount"
    ))
}

/// The NodePublishVolume kubelet sends for pod `namespace/name` (uid `uid`,
/// service account `default`) mounting class `class` at `target`: no
/// node-publish secrets, group or flags.
pub fn publish_request(
    volume_id: &str,
    target: &Path,
    namespace: &str,
    name: &str,
    uid: &str,
    class: &str,
) -> PublishRequest {
    PublishRequest {
        volume_id: volume_id.to_owned(),
        target_path: target.to_owned(),
        volume_context: VolumeContext::new(
            [
                (keys::POD_NAME, name),
                (keys::POD_NAMESPACE, namespace),
                (keys::POD_UID, uid),
                (keys::SERVICE_ACCOUNT_NAME, "default"),
                (keys::SECRET_PROVIDER_CLASS, class),
            ]
            .map(|(k, v)| (k.to_owned(), v.to_owned())),
        ),
        secrets: SecretMap::default(),
        mount_group: None,
        mount_flags: vec![],
    }
}
