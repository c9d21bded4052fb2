//! The seam between the CSI node service and the driver: the node service
//! validates requests and hands typed ones to a [`VolumeManager`].

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use secretfs_secrets::SecretMap;

/// Kubelet's volume-context keys (CSIDriver `podInfoOnMount` and
/// `tokenRequests`).
pub mod keys {
    pub const POD_NAME: &str = "csi.storage.k8s.io/pod.name";
    pub const POD_NAMESPACE: &str = "csi.storage.k8s.io/pod.namespace";
    pub const POD_UID: &str = "csi.storage.k8s.io/pod.uid";
    pub const SERVICE_ACCOUNT_NAME: &str = "csi.storage.k8s.io/serviceAccount.name";
    pub const SERVICE_ACCOUNT_TOKENS: &str = "csi.storage.k8s.io/serviceAccount.tokens";
    pub const EPHEMERAL: &str = "csi.storage.k8s.io/ephemeral";
    /// The pod's `volumeAttributes` key naming the SecretProviderClass.
    pub const SECRET_PROVIDER_CLASS: &str = "secretProviderClass";
}

/// The volume context with values that carry credentials redacted in
/// `Debug` (the service-account tokens).
#[derive(Default, Clone)]
pub struct VolumeContext(BTreeMap<String, String>);

impl VolumeContext {
    pub fn new(map: impl IntoIterator<Item = (String, String)>) -> Self {
        Self(map.into_iter().collect())
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
}

impl fmt::Debug for VolumeContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.0.iter().map(|(k, v)| {
                let shown = if k == keys::SERVICE_ACCOUNT_TOKENS {
                    "***stripped***"
                } else {
                    v.as_str()
                };
                (k, shown)
            }))
            .finish()
    }
}

/// A validated NodePublishVolume.
#[derive(Debug, Clone)]
pub struct PublishRequest {
    pub volume_id: String,
    pub target_path: PathBuf,
    pub volume_context: VolumeContext,
    pub secrets: SecretMap,
    /// The pod's fsGroup, when kubelet passes it (`VOLUME_MOUNT_GROUP`).
    pub mount_group: Option<u32>,
    /// Mount flags from the volume capability (informational).
    pub mount_flags: Vec<String>,
}

/// A validated NodeUnpublishVolume.
#[derive(Debug, Clone)]
pub struct UnpublishRequest {
    pub volume_id: String,
    pub target_path: PathBuf,
}

/// The gRPC status a failure maps to; chosen deliberately per failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    InvalidArgument,
    NotFound,
    FailedPrecondition,
    PermissionDenied,
    Unavailable,
    ResourceExhausted,
    DeadlineExceeded,
    Aborted,
    Internal,
    /// A publish of a target already published with another volume (CSI:
    /// `ALREADY_EXISTS`, "published but incompatible").
    AlreadyExists,
    /// A provider's own failure, answered as upstream answers it.
    Unknown,
}

/// Why a publish or unpublish failed. `message` is shown to users (kubelet
/// puts it in the pod's events): it names the object or field and the fix,
/// and never contains a secret. `error_type` is a stable, bounded label for
/// metrics (upstream's names where they exist, e.g.
/// `SecretProviderClassNotFound`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct VolumeError {
    pub code: ErrorCode,
    pub error_type: &'static str,
    pub message: String,
}

impl VolumeError {
    pub fn new(code: ErrorCode, error_type: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            error_type,
            message: message.into(),
        }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(
            ErrorCode::InvalidArgument,
            crate::error_types::INVALID_REQUEST,
            message,
        )
    }
}

/// Whether the plugin can serve publishes now, and if not, why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readiness {
    Ready,
    NotReady(String),
}

/// What the node service delegates to. Both calls must be idempotent:
/// kubelet retries, and republishes mounted volumes (`requiresRepublish`).
#[async_trait::async_trait]
pub trait VolumeManager: Send + Sync + 'static {
    async fn publish(&self, request: PublishRequest) -> Result<(), VolumeError>;
    async fn unpublish(&self, request: UnpublishRequest) -> Result<(), VolumeError>;
    async fn readiness(&self) -> Readiness;
}
