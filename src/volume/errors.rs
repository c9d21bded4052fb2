//! The publish errors users see in `kubectl describe pod`: each names the
//! object or field and the fix, with a deliberate gRPC code.

use secretfs_csi::{ErrorCode, VolumeError};

use crate::provider::{ErrorKind, MountError};

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

pub fn unknown_provider<'a>(
    class: &str,
    provider: &str,
    known: impl Iterator<Item = &'a String>,
) -> VolumeError {
    let known: Vec<&str> = known.map(String::as_str).collect();
    let message = if provider.is_empty() {
        format!("SecretProviderClass {class} has no spec.provider: set it to one of {known:?}")
    } else {
        format!(
            "SecretProviderClass {class} names provider {provider:?}, which this node does not serve: \
             use one of {known:?}, or install the provider (its socket goes in the provider directory)"
        )
    };
    VolumeError::new(
        ErrorCode::InvalidArgument,
        "FailedToLookupProviderGRPCClient",
        message,
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
    VolumeError::new(
        code,
        "ProviderError",
        format!("SecretProviderClass {class}: {err}"),
    )
}
