//! External providers: provider processes (AWS, GCP, Vault, …, or
//! `secretfs provider`) that speak the upstream provider protocol
//! (`v1alpha1.CSIDriverProvider`, `csi/proto/provider.proto`) on a unix
//! socket.
//!
//! An [`ExternalClient`] is one gRPC channel to one socket, reused by every
//! volume of that provider. An [`ExternalProvider`] binds it to one volume
//! (its class, target path and kubelet's volume-context keys) and implements
//! [`Provider`]: the volume manager and rotation call it like a built-in one.
//!
//! Client behaviour, as upstream's driver:
//! - `:authority` `localhost`, insecure transport (the socket's permissions
//!   are the only protection);
//! - responses above `--max-call-recv-msg-size` (default 4 MiB) fail with a
//!   hint to raise it;
//! - only `UNAVAILABLE` is retried (3 attempts, backoff 1 s × 1.1 up to
//!   10 s), all inside one deadline below kubelet's (~2 m): 100 s. A
//!   connection lost during a call (the provider stopped, crashed or
//!   restarted) is `UNAVAILABLE` there, as gRPC-Go reports it, so it is
//!   retried too; tonic reports it as `Cancelled` or as an `Unknown`
//!   "transport error";
//! - a provider's own failure (a gRPC error it sent, or `error.code`) is
//!   final, answered `Unknown` as upstream answers it; only the transport
//!   failures above are `UNAVAILABLE`;
//! - a file mode of 0 (proto3's "not set") becomes the volume's default
//!   file mode, as if the provider had sent the `permission` it was given;
//! - the response is checked before anything is shown: paths by the atomic
//!   writer's rules, no duplicates, modes 0..=511, object versions present,
//!   and a non-empty `error.code` fails the mount with that code as the
//!   metric's `error_type`.
//!
//! Deliberate differences: only kubelet's `csi.storage.k8s.io/*` keys and
//! `secretProviderClass` join the class parameters in `attributes` (never
//! other pod attributes), and `current_object_version` holds what the volume
//! shows (upstream v1.6 sends it empty). A response with no files fails: a
//! legacy provider writing into the target path itself cannot work under a
//! FUSE volume.
//!
//! Secrets: the attributes JSON holds service-account tokens and the secrets
//! JSON the nodePublishSecretRef data; neither, nor any file content, is ever
//! logged or shown by `Debug`.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper_util::rt::TokioIo;
use secretfs_csi::proto::provider as pb;
use secretfs_csi::proto::provider::csi_driver_provider_client::CsiDriverProviderClient;
use secretfs_csi::{error_types, keys};
use tokio::net::UnixStream;
use tonic::Code;
use tonic::transport::{Channel, Endpoint, Uri};

use super::{ErrorKind, MountError, MountRequest, MountResponse, Provider};

#[cfg(test)]
mod tests;
mod validate;

pub use validate::{check_response, error_type_label};

/// The API version the driver sends in `VersionRequest`.
pub const API_VERSION: &str = "v1alpha1";
/// `--provider-volume`'s default.
pub const DEFAULT_PROVIDER_VOLUME: &str = "/var/run/secrets-store-csi-providers";
/// `--additional-provider-volume-paths`' default.
pub const DEFAULT_ADDITIONAL_PROVIDER_VOLUME_PATHS: &str =
    "/etc/kubernetes/secrets-store-csi-providers";
/// `--max-call-recv-msg-size`'s default (4 MiB, upstream's).
pub const DEFAULT_MAX_RECV_MSG_SIZE: usize = 4 * 1024 * 1024;
/// The per-mount deadline: below kubelet's NodePublish deadline (~2 m 3 s),
/// so our error reaches the pod's events instead of kubelet's timeout.
pub const DEFAULT_PROVIDER_TIMEOUT: Duration = Duration::from_secs(100);
/// Upstream logs a warning above this total of file bytes (a synced
/// Kubernetes Secret cannot hold more).
const SYNC_SIZE_HINT: usize = 1024 * 1024;

/// Retries of `UNAVAILABLE` (upstream's gRPC service config).
#[derive(Debug, Clone, PartialEq)]
pub struct ExternalRetry {
    /// Calls in total, the first included.
    pub max_attempts: u32,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    pub multiplier: f64,
}

impl Default for ExternalRetry {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(10),
            multiplier: 1.1,
        }
    }
}

/// How the driver reaches and calls external providers.
#[derive(Debug, Clone, PartialEq)]
pub struct ExternalConfig {
    /// Directories holding `<provider>.sock`, tried in order
    /// (`--provider-volume`, then `--additional-provider-volume-paths`).
    pub dirs: Vec<PathBuf>,
    /// Largest response accepted, in bytes (`--max-call-recv-msg-size`).
    pub max_recv_msg_size: usize,
    /// Deadline of one mount, retries included (`--provider-timeout`).
    pub timeout: Duration,
    pub retry: ExternalRetry,
}

impl Default for ExternalConfig {
    fn default() -> Self {
        Self {
            dirs: vec![
                PathBuf::from(DEFAULT_PROVIDER_VOLUME),
                PathBuf::from(DEFAULT_ADDITIONAL_PROVIDER_VOLUME_PATHS),
            ],
            max_recv_msg_size: DEFAULT_MAX_RECV_MSG_SIZE,
            timeout: DEFAULT_PROVIDER_TIMEOUT,
            retry: ExternalRetry::default(),
        }
    }
}

/// What `Version` answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderVersion {
    pub version: String,
    pub runtime_name: String,
    pub runtime_version: String,
}

/// One provider socket and its gRPC channel, shared by every volume of the
/// provider. The channel connects lazily and reconnects after a provider
/// restart.
pub struct ExternalClient {
    name: String,
    socket: PathBuf,
    channel: Channel,
    config: Arc<ExternalConfig>,
}

impl fmt::Debug for ExternalClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExternalClient")
            .field("name", &self.name)
            .field("socket", &self.socket)
            .finish_non_exhaustive()
    }
}

impl ExternalClient {
    /// A client for provider `name` at `socket`. Nothing is dialled until the
    /// first call. Must run inside a tokio runtime.
    pub fn new(name: &str, socket: &Path, config: Arc<ExternalConfig>) -> Self {
        let path = socket.to_owned();
        // The URI is never resolved: the connector dials the socket, and the
        // host becomes `:authority: localhost` as upstream sends it.
        let channel =
            Endpoint::from_static("http://localhost").connect_with_connector_lazy(
                tower::service_fn(move |_: Uri| {
                    let path = path.clone();
                    async move {
                        Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(path).await?))
                    }
                }),
            );
        Self {
            name: name.to_owned(),
            socket: socket.to_owned(),
            channel,
            config,
        }
    }

    /// The provider name (`spec.provider`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The socket path.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    fn client(&self) -> CsiDriverProviderClient<Channel> {
        CsiDriverProviderClient::new(self.channel.clone())
            .max_decoding_message_size(self.config.max_recv_msg_size)
    }

    /// Calls `Version`. `Ok(None)`: the provider does not implement it (old
    /// Azure provider releases), which says nothing about its health.
    pub async fn version(&self) -> Result<Option<ProviderVersion>, MountError> {
        let call = async {
            let request = || {
                let mut request = tonic::Request::new(pb::VersionRequest {
                    version: API_VERSION.to_owned(),
                });
                request.set_timeout(Duration::from_secs(5));
                request
            };
            match self.client().version(request()).await {
                // The connection of a provider that restarted breaks on its
                // first use; the channel reconnects for the next call.
                Err(status) if matches!(status.code(), Code::Unavailable | Code::Cancelled) => {
                    self.client().version(request()).await
                }
                other => other,
            }
        };
        match tokio::time::timeout(Duration::from_secs(5), call).await {
            Err(_) => Err(self.deadline_error(Duration::from_secs(5))),
            Ok(Ok(response)) => {
                let v = response.into_inner();
                Ok(Some(ProviderVersion {
                    version: v.version,
                    runtime_name: v.runtime_name,
                    runtime_version: v.runtime_version,
                }))
            }
            Ok(Err(status)) if status.code() == Code::Unimplemented => Ok(None),
            Ok(Err(status)) => Err(self.status_error(&status)),
        }
    }

    /// Calls `Mount` with upstream's retry (only `UNAVAILABLE`) inside the
    /// deadline, and returns the raw response.
    pub async fn mount_raw(
        &self,
        message: &pb::MountRequest,
    ) -> Result<pb::MountResponse, MountError> {
        let timeout = self.config.timeout;
        let deadline = Instant::now() + timeout;
        let retry = &self.config.retry;
        let mut backoff = retry.initial_backoff;
        let mut attempt = 1;
        let mut went_away = false;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(self.deadline_error(timeout));
            }
            let mut request = tonic::Request::new(message.clone());
            request.set_timeout(remaining);
            let status = match tokio::time::timeout(remaining, self.client().mount(request)).await {
                Err(_) => return Err(self.deadline_error(timeout)),
                Ok(Ok(response)) => return Ok(response.into_inner()),
                Ok(Err(status)) => status,
            };
            // The provider's server enforces the `grpc-timeout` we send, and
            // tonic's answers `Cancelled` when it fires first.
            let near_deadline =
                deadline.saturating_duration_since(Instant::now()) < Duration::from_millis(100);
            if status.code() == Code::DeadlineExceeded
                || (status.code() == Code::Cancelled && near_deadline)
            {
                return Err(self.deadline_error(timeout));
            }
            // Otherwise `Cancelled`, and an `Unknown` made here from a
            // transport error, are tonic's words for a connection that
            // closed under the call (the provider stopped, crashed or
            // restarted); gRPC-Go, and so upstream, says `UNAVAILABLE` and
            // retries.
            let lost = connection_lost(&status);
            went_away |= lost;
            let status = if lost {
                tonic::Status::unavailable(format!(
                    "the provider went away during the call: its connection closed ({}); \
                     is it restarting?",
                    status.message()
                ))
            } else {
                status
            };
            if status.code() != Code::Unavailable || attempt >= retry.max_attempts.max(1) {
                let mut err = self.status_error(&status);
                if went_away
                    && !lost
                    && let MountError::External { message, .. } = &mut err
                {
                    message.push_str(&format!(
                        " (after {attempt} attempts: the provider went away during an earlier one, \
                         its connection closed, and no provider answered since)"
                    ));
                }
                return Err(err);
            }
            tracing::debug!(provider = %self.name, socket = ?self.socket, attempt, "provider unavailable; retrying");
            let pause = backoff.min(deadline.saturating_duration_since(Instant::now()));
            tokio::time::sleep(pause).await;
            backoff = backoff
                .mul_f64(retry.multiplier.max(1.0))
                .min(retry.max_backoff);
            attempt += 1;
        }
    }

    fn deadline_error(&self, timeout: Duration) -> MountError {
        MountError::External {
            kind: ErrorKind::Transient,
            error_type: error_types::GRPC_PROVIDER_ERROR,
            message: format!(
                "provider {:?} (socket {}) did not answer Mount within {timeout:?}: check the provider's \
                 logs and health, or raise --provider-timeout (keep it below kubelet's ~2 m)",
                self.name,
                self.socket.display()
            ),
        }
    }

    /// A gRPC error: the provider's own message is shown (providers put
    /// their reason there; upstream shows it in pod events too).
    fn status_error(&self, status: &tonic::Status) -> MountError {
        let (kind, hint) = match status.code() {
            // tonic reports an oversize message as OutOfRange, Go's gRPC as
            // ResourceExhausted.
            Code::OutOfRange | Code::ResourceExhausted
                if status.message().contains("too large")
                    || status.message().contains("larger than max") =>
            {
                (
                    ErrorKind::Invalid,
                    format!(
                        ": the response is larger than --max-call-recv-msg-size ({} bytes); raise the \
                         flag, or mount fewer or smaller objects",
                        self.config.max_recv_msg_size
                    ),
                )
            }
            Code::Unavailable => (
                ErrorKind::Transient,
                format!(
                    ": is the provider running? Its DaemonSet must create {}",
                    self.socket.display()
                ),
            ),
            Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => {
                (ErrorKind::Invalid, String::new())
            }
            Code::NotFound => (ErrorKind::NotFound, String::new()),
            Code::PermissionDenied | Code::Unauthenticated => (ErrorKind::Denied, String::new()),
            Code::ResourceExhausted => (ErrorKind::Throttled, String::new()),
            // The provider's own failure (a Go provider's plain error is
            // `Unknown`): final, answered `Unknown` as upstream does.
            _ => {
                return MountError::Provider {
                    error_type: error_types::GRPC_PROVIDER_ERROR,
                    message: format!(
                        "provider {:?} (socket {}) failed: {:?}: {}",
                        self.name,
                        self.socket.display(),
                        status.code(),
                        status.message()
                    ),
                };
            }
        };
        MountError::External {
            kind,
            error_type: error_types::GRPC_PROVIDER_ERROR,
            message: format!(
                "provider {:?} (socket {}) failed: {:?}: {}{hint}",
                self.name,
                self.socket.display(),
                status.code(),
                status.message()
            ),
        }
    }
}

/// What an external provider is told about the volume it serves.
#[derive(Clone, PartialEq, Eq)]
pub struct ProviderVolume {
    /// The SecretProviderClass name (`secretProviderClass`).
    pub class: String,
    /// Kubelet's target path.
    pub target_path: PathBuf,
    /// Kubelet's `csi.storage.k8s.io/*` volume-context keys, tokens excluded
    /// (the newest tokens come with each [`MountRequest`]).
    pub kubelet_keys: BTreeMap<String, String>,
}

impl ProviderVolume {
    /// From a publish: keeps only kubelet's keys (pod attributes never reach
    /// a provider) and drops the tokens.
    pub fn new<'a>(
        class: &str,
        target_path: &Path,
        volume_context: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Self {
        Self {
            class: class.to_owned(),
            target_path: target_path.to_owned(),
            kubelet_keys: volume_context
                .into_iter()
                .filter(|(k, _)| {
                    k.starts_with("csi.storage.k8s.io/") && *k != keys::SERVICE_ACCOUNT_TOKENS
                })
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
        }
    }
}

impl fmt::Debug for ProviderVolume {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProviderVolume")
            .field("class", &self.class)
            .field("target_path", &self.target_path)
            .field("kubelet_keys", &self.kubelet_keys)
            .finish()
    }
}

/// An external provider bound to one volume.
#[derive(Debug, Clone)]
pub struct ExternalProvider {
    client: Arc<ExternalClient>,
    volume: ProviderVolume,
}

impl ExternalProvider {
    pub fn new(client: Arc<ExternalClient>, volume: ProviderVolume) -> Self {
        Self { client, volume }
    }

    /// The shared client.
    pub fn client(&self) -> &Arc<ExternalClient> {
        &self.client
    }

    /// The wire request for `request` (holds tokens and secrets: never log).
    pub fn wire_request(&self, request: &MountRequest) -> Result<pb::MountRequest, MountError> {
        let mut attributes: BTreeMap<&str, &str> = request
            .parameters
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        for (k, v) in &self.volume.kubelet_keys {
            attributes.insert(k, v);
        }
        // The pod comes from the request (it is what the driver checked).
        let pod = &request.pod;
        for (key, value) in [
            (keys::POD_NAME, &pod.name),
            (keys::POD_NAMESPACE, &pod.namespace),
            (keys::POD_UID, &pod.uid),
            (keys::SERVICE_ACCOUNT_NAME, &pod.service_account),
        ] {
            if !value.is_empty() {
                attributes.insert(key, value);
            }
        }
        attributes.insert(keys::SECRET_PROVIDER_CLASS, &self.volume.class);
        if let Some(tokens) = &request.service_account_tokens {
            attributes.insert(keys::SERVICE_ACCOUNT_TOKENS, tokens.expose());
        }
        let secrets: BTreeMap<&str, &str> = request.secrets.expose().collect();
        let encode = |what: &str, e: serde_json::Error| {
            MountError::config(
                ErrorKind::Invalid,
                format!(
                    "cannot encode the {what} for provider {:?}: {e}",
                    self.client.name
                ),
            )
        };
        Ok(pb::MountRequest {
            attributes: serde_json::to_string(&attributes).map_err(|e| encode("attributes", e))?,
            secrets: serde_json::to_string(&secrets).map_err(|e| encode("secrets", e))?,
            target_path: self.volume.target_path.to_string_lossy().into_owned(),
            // JSON of the default mode: 420 for 0644, as upstream sends it.
            permission: request.default_mode.bits().to_string(),
            current_object_version: request
                .current
                .iter()
                .map(|v| pb::ObjectVersion {
                    id: v.id.clone(),
                    version: v.version.clone(),
                })
                .collect(),
        })
    }
}

#[async_trait::async_trait]
impl Provider for ExternalProvider {
    fn name(&self) -> &str {
        &self.client.name
    }

    async fn mount(&self, request: &MountRequest) -> Result<MountResponse, MountError> {
        let message = self.wire_request(request)?;
        let started = Instant::now();
        let response = self.client.mount_raw(&message).await;
        drop(message);
        tracing::debug!(provider = %self.client.name, class = %self.volume.class, elapsed_ms = started.elapsed().as_millis() as u64, ok = response.is_ok(), "external Mount");
        let mut out = check_response(&self.client.name, &self.client.socket, response?)?;
        // Mode 0 is proto3's "not set" (upstream's own test provider sends
        // no mode): such a file gets the volume's default mode, the
        // `permission` the provider was sent, rather than no access at all.
        for file in &mut out.files {
            if file.mode.bits() == 0 {
                file.mode = request.default_mode;
            }
        }
        Ok(out)
    }
}

/// Whether `status` says the connection broke under the call, rather than
/// carrying the provider's answer: tonic's `Cancelled`, or an `Unknown` it
/// made from a local transport error (a status the provider sent has no
/// source error; one made here from a broken connection has).
fn connection_lost(status: &tonic::Status) -> bool {
    use std::error::Error as _;
    match status.code() {
        Code::Cancelled => true,
        Code::Unknown => status.source().is_some(),
        _ => false,
    }
}
