//! The `error_type` labels: every value the driver gives
//! [`VolumeError::error_type`](crate::VolumeError) and the providers'
//! mount errors, in one place, as upstream keeps them in one `errors.go`.
//! They are the `error_type` of `node_publish_error_total` and of the `CSI
//! call failed` log line; docs/FAULTS.md ("Error types") names each one.
//! Upstream's names where upstream has the failure.
//!
//! The driver also uses an external provider's own `error.code` as a label
//! when it is a short plain code, so the set of values a metric can show is
//! this list plus at most 64 provider codes.

/// The request itself is malformed (CSI validation).
pub const INVALID_REQUEST: &str = "InvalidRequest";
/// A kubelet key (`csi.storage.k8s.io/pod.*`) is missing from the volume
/// context: the CSIDriver lacks `podInfoOnMount: true`.
pub const POD_INFO_MISSING: &str = "PodInfoMissing";
/// The pod's `volumeAttributes` hold a key other than
/// `secretProviderClass`.
pub const VOLUME_ATTRIBUTE_NOT_ALLOWED: &str = "VolumeAttributeNotAllowed";
/// The target path is not kubelet's path for the pod's CSI volume, or a
/// component of it is a symbolic link.
pub const UNEXPECTED_TARGET_PATH: &str = "UnexpectedTargetPath";
/// The SecretProviderClass is not in the pod's namespace.
pub const SECRET_PROVIDER_CLASS_NOT_FOUND: &str = "SecretProviderClassNotFound";
/// The Kubernetes API could not be read for a class not in the cache yet.
pub const SECRET_PROVIDER_CLASS_UNAVAILABLE: &str = "SecretProviderClassUnavailable";
/// The class's provider is neither built in nor has a socket.
pub const FAILED_TO_LOOKUP_PROVIDER_GRPC_CLIENT: &str = "FailedToLookupProviderGRPCClient";
/// The target path is published already with another class, volume or
/// fsGroup.
pub const VOLUME_MISMATCH: &str = "VolumeMismatch";
/// The built-in provider failed to fetch the objects, or a restored
/// volume's provider could not be reached.
pub const PROVIDER_ERROR: &str = "ProviderError";
/// An external provider failed or could not be reached.
pub const GRPC_PROVIDER_ERROR: &str = "GRPCProviderError";
/// An external provider's answer breaks the protocol's rules.
pub const INVALID_PROVIDER_RESPONSE: &str = "InvalidProviderResponse";
/// An external provider's `error.code` that is not a short plain code, or
/// one past the 64 distinct codes kept as labels.
pub const PROVIDER_ERROR_OTHER: &str = "ProviderErrorOther";
/// A file the provider returned cannot be shown (its path or mode).
pub const FILE_WRITE_ERROR: &str = "FileWriteError";
/// The target directory could not be created.
pub const FAILED_TO_ENSURE_MOUNT_POINT: &str = "FailedToEnsureMountPoint";
/// The FUSE mount itself failed.
pub const FAILED_TO_MOUNT: &str = "FailedToMount";
/// A refresh could not apply what the provider returned.
pub const FAILED_TO_ROTATE: &str = "FailedToRotate";
/// No volume is published at the target path (refresh).
pub const VOLUME_NOT_FOUND: &str = "VolumeNotFound";
/// The FUSE mount could not be unmounted.
pub const FAILED_TO_UNMOUNT: &str = "FailedToUnmount";
/// The target directory could not be found or removed at unpublish.
pub const FAILED_TO_CLEANUP_MOUNT_POINT: &str = "FailedToCleanupMountPoint";

/// Every label above.
pub const ALL: [&str; 19] = [
    INVALID_REQUEST,
    POD_INFO_MISSING,
    VOLUME_ATTRIBUTE_NOT_ALLOWED,
    UNEXPECTED_TARGET_PATH,
    SECRET_PROVIDER_CLASS_NOT_FOUND,
    SECRET_PROVIDER_CLASS_UNAVAILABLE,
    FAILED_TO_LOOKUP_PROVIDER_GRPC_CLIENT,
    VOLUME_MISMATCH,
    PROVIDER_ERROR,
    GRPC_PROVIDER_ERROR,
    INVALID_PROVIDER_RESPONSE,
    PROVIDER_ERROR_OTHER,
    FILE_WRITE_ERROR,
    FAILED_TO_ENSURE_MOUNT_POINT,
    FAILED_TO_MOUNT,
    FAILED_TO_ROTATE,
    VOLUME_NOT_FOUND,
    FAILED_TO_UNMOUNT,
    FAILED_TO_CLEANUP_MOUNT_POINT,
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_distinct_plain_codes() {
        let distinct: std::collections::BTreeSet<_> = ALL.iter().collect();
        assert_eq!(distinct.len(), ALL.len());
        for label in ALL {
            assert!(
                !label.is_empty() && label.bytes().all(|b| b.is_ascii_alphanumeric()),
                "{label:?}"
            );
        }
    }
}
