//! The publish errors users see in `kubectl describe pod`: each names the
//! object or field and the fix, with a deliberate gRPC code.

use secretfs_csi::{ErrorCode, VolumeError, error_types};

use crate::provider::{ErrorKind, LookupError, MountError};

pub fn class_not_found(namespace: &str, name: &str) -> VolumeError {
    VolumeError::new(
        ErrorCode::NotFound,
        error_types::SECRET_PROVIDER_CLASS_NOT_FOUND,
        format!(
            "SecretProviderClass {namespace}/{name} not found: create it in namespace {namespace}, \
             or fix volumeAttributes.secretProviderClass in the pod spec"
        ),
    )
}

pub fn unknown_provider(namespace: &str, class: &str, err: &LookupError) -> VolumeError {
    VolumeError::new(
        ErrorCode::InvalidArgument,
        error_types::FAILED_TO_LOOKUP_PROVIDER_GRPC_CLIENT,
        format!("SecretProviderClass {namespace}/{class}: {err}"),
    )
}

/// Maps a provider failure of the volume of class `namespace/class`: the
/// kind decides the code; a provider's own failure is `Unknown`, as
/// upstream answers it.
pub fn provider_failed(namespace: &str, class: &str, err: &MountError) -> VolumeError {
    let code = match (err, err.kind()) {
        (MountError::Provider { .. }, _) => ErrorCode::Unknown,
        (_, ErrorKind::Invalid) => ErrorCode::InvalidArgument,
        (_, ErrorKind::NotFound) => ErrorCode::NotFound,
        (_, ErrorKind::Denied) => ErrorCode::PermissionDenied,
        (_, ErrorKind::Throttled) => ErrorCode::ResourceExhausted,
        (_, ErrorKind::Transient) => ErrorCode::Unavailable,
    };
    let error_type = match err {
        MountError::External { error_type, .. } | MountError::Provider { error_type, .. } => {
            error_type
        }
        _ => error_types::PROVIDER_ERROR,
    };
    VolumeError::new(
        code,
        error_type,
        format!("SecretProviderClass {namespace}/{class}: {err}"),
    )
}
