//! The publish errors users see in `kubectl describe pod`: each names the
//! object or field and the fix, with a deliberate gRPC code.

use secretfs_csi::{ErrorCode, VolumeError};

use crate::provider::{ErrorKind, LookupError, MountError};

pub fn class_not_found(namespace: &str, name: &str) -> VolumeError {
    VolumeError::new(
        ErrorCode::NotFound,
        "SecretProviderClassNotFound",
        format!(
            "SecretProviderClass {namespace}/{name} not found: create it in namespace {namespace}, \
             or fix volumeAttributes.secretProviderClass in the pod spec"
        ),
    )
}

pub fn unknown_provider(namespace: &str, class: &str, err: &LookupError) -> VolumeError {
    VolumeError::new(
        ErrorCode::InvalidArgument,
        "FailedToLookupProviderGRPCClient",
        format!("SecretProviderClass {namespace}/{class}: {err}"),
    )
}

/// Maps a provider failure: the kind decides the code.
pub fn provider_failed(class: &str, err: &MountError) -> VolumeError {
    let code = match err.kind() {
        ErrorKind::Invalid => ErrorCode::InvalidArgument,
        ErrorKind::NotFound => ErrorCode::NotFound,
        ErrorKind::Denied => ErrorCode::PermissionDenied,
        ErrorKind::Throttled => ErrorCode::ResourceExhausted,
        ErrorKind::Transient => ErrorCode::Unavailable,
    };
    let error_type = match err {
        MountError::External { error_type, .. } => error_type,
        _ => "ProviderError",
    };
    VolumeError::new(
        code,
        error_type,
        format!("SecretProviderClass {class}: {err}"),
    )
}
