//! The `Provider` trait: what the volume manager asks of a vault provider.
//!
//! A provider turns a SecretProviderClass's parameters plus the pod's
//! identity into the files of one volume. Built-in providers (Azure) fetch
//! through the shared, identity-keyed cache; external providers speak the
//! upstream provider protocol. Rotation calls `mount` again for a mounted
//! volume with the versions it currently shows, and swaps only the files
//! whose bytes changed.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use secretfs_secrets::{SecretBytes, SecretMap, SecretString};

use super::{ErrorKind, FileMode, ObjectErrors};

/// The pod a volume is for (kubelet's `podInfoOnMount` keys).
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodRef {
    pub name: String,
    pub namespace: String,
    pub uid: String,
    pub service_account: String,
}

/// One object's id and version, as upstream reports them
/// (`secret/sql-password` → `c55925c29c6743dcb9bb4bf091be03b0`).
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct ObjectVersion {
    pub id: String,
    pub version: String,
}

/// Everything a provider gets for one mount (or one rotation check).
#[derive(Clone)]
pub struct MountRequest {
    /// `SecretProviderClass.spec.parameters`, exactly as written. Volume
    /// attributes never override them.
    pub parameters: BTreeMap<String, String>,
    pub pod: PodRef,
    /// The service-account tokens JSON from kubelet
    /// (`csi.storage.k8s.io/serviceAccount.tokens`, or the request secrets
    /// on Kubernetes ≥ 1.35), if any.
    pub service_account_tokens: Option<SecretString>,
    /// `NodePublishVolumeRequest.secrets` (the nodePublishSecretRef data).
    pub secrets: SecretMap,
    /// Mode for files whose object sets no `filePermission`.
    pub default_mode: FileMode,
    /// What the volume shows now (empty on the first mount).
    pub current: Vec<ObjectVersion>,
    /// This node's name.
    pub node_name: String,
    /// The oldest cached object the provider may answer with, counted back
    /// from when the provider starts on this request: rotation and
    /// publishes within one refresh interval share one vault request per
    /// object; `ZERO` always asks the vault.
    pub max_age: std::time::Duration,
    /// When set, replaces `max_age`: only objects whose fetch started at or
    /// after this instant (an on-demand refresh requested then). Absolute,
    /// so that volumes refreshed one after another for one request share
    /// what the first fetched, however long each waited for its turn.
    pub fresh_since: Option<std::time::Instant>,
}

impl fmt::Debug for MountRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MountRequest")
            .field("parameters", &self.parameters)
            .field("pod", &self.pod)
            .field(
                "service_account_tokens",
                &self.service_account_tokens.as_ref().map(|_| "<redacted>"),
            )
            .field("secrets", &self.secrets)
            .field("default_mode", &self.default_mode)
            .field("current", &self.current)
            .field("max_age", &self.max_age)
            .field("fresh_since", &self.fresh_since)
            .finish()
    }
}

/// One file of a mounted volume.
#[derive(Debug, Clone)]
pub struct MountedFile {
    /// Relative path, checked by the plan rules.
    pub path: String,
    pub mode: FileMode,
    pub contents: Arc<SecretBytes>,
    /// The object this file shows (`ObjectVersion::id`).
    pub object_id: String,
}

/// `versions` sorted by id, one entry per id: the last one in the given
/// order. Upstream's driver keeps the versions a provider returns in a map
/// keyed by id, so when a class names one object twice (two aliases, two
/// versions: both `secret/<name>`) its pod status records the version of
/// the later entry in `objects`; pass the versions in that order.
pub fn last_version_per_id(mut versions: Vec<ObjectVersion>) -> Vec<ObjectVersion> {
    // Stable: equal ids keep their order.
    versions.sort_by(|a, b| a.id.cmp(&b.id));
    let mut out: Vec<ObjectVersion> = Vec::with_capacity(versions.len());
    for version in versions {
        match out.last_mut() {
            Some(last) if last.id == version.id => *last = version,
            _ => out.push(version),
        }
    }
    out
}

/// What a provider returns.
#[derive(Debug, Clone, Default)]
pub struct MountResponse {
    pub files: Vec<MountedFile>,
    /// One per object id, sorted by id (written to the pod status); see
    /// [`last_version_per_id`].
    pub versions: Vec<ObjectVersion>,
    /// Things the user should be told (deprecated settings, chain order…);
    /// the driver turns them into events and log lines. No secrets.
    pub warnings: Vec<String>,
    /// When each file's object version is valid, by file path: Key Vault's
    /// `nbf`/`exp` and a certificate chain's dates (the built-in Azure
    /// provider; an external provider's client: the chain dates of files
    /// that are PEM certificates). Timestamps only.
    pub validity: BTreeMap<String, crate::expiry::Validity>,
}

/// Why a mount failed: a configuration problem, or the objects that could
/// not be fetched (all of them, not just the first).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MountError {
    /// Parameters, identity or request problems: the message names the
    /// field and the fix.
    #[error("{message}")]
    Config { kind: ErrorKind, message: String },
    /// One or more objects failed (never empty).
    #[error("{0}")]
    Objects(ObjectErrors),
    /// An external provider failed or sent a response the driver refuses.
    /// `error_type` is the metric label: the provider's own `error.code`,
    /// `GRPCProviderError` or `InvalidProviderResponse`.
    #[error("{message}")]
    External {
        kind: ErrorKind,
        error_type: &'static str,
        message: String,
    },
    /// An external provider's own failure: a gRPC error it answered (not a
    /// broken connection), or its `error.code`. Final (kind
    /// [`ErrorKind::Invalid`]: the same call fails the same way), and
    /// answered to kubelet as `Unknown`, as upstream does.
    #[error("{message}")]
    Provider {
        error_type: &'static str,
        message: String,
    },
}

impl MountError {
    pub fn config(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self::Config {
            kind,
            message: message.into(),
        }
    }

    /// The kind that decides the gRPC code and metric label: for several
    /// objects, the least retryable one.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::Config { kind, .. } => *kind,
            Self::Objects(errors) => errors.kind().unwrap_or(ErrorKind::Transient),
            Self::External { kind, .. } => *kind,
            Self::Provider { .. } => ErrorKind::Invalid,
        }
    }
}

/// A vault provider.
#[async_trait::async_trait]
pub trait Provider: Send + Sync + 'static {
    /// The `spec.provider` name it serves (`azure`).
    fn name(&self) -> &str;

    /// Validates the parameters, authenticates as the pod's identity and
    /// returns the volume's files. Must not return partial results: either
    /// every required object, or an error naming every failing one.
    async fn mount(&self, request: &MountRequest) -> Result<MountResponse, MountError>;

    /// The files a mount of `request` would show, without asking the vault
    /// (for lazy volumes: `secretfs.io/fetch: lazy`). Configuration errors
    /// are reported here as they would be by `mount`. `None`: this provider
    /// cannot plan ahead, so its volumes are always fetched eagerly.
    fn plan(&self, request: &MountRequest) -> Option<Result<Vec<super::PlannedFile>, MountError>> {
        let _ = request;
        None
    }
}
