//! `secretfs provider`: our Azure provider served over the upstream provider
//! protocol (`v1alpha1.CSIDriverProvider` + `grpc.health.v1.Health`) on a
//! unix socket, so the upstream Secrets Store CSI Driver can use it in place
//! of the upstream Azure provider DaemonSet, with our identity-keyed cache
//! behind it.
//!
//! `Mount` reads the request as upstream's Azure provider does:
//! - `attributes`: kubelet's `csi.storage.k8s.io/*` keys give the pod and the
//!   service-account tokens; `secretProviderClass` is dropped; every other
//!   key is a class parameter;
//! - `secrets`: the nodePublishSecretRef data (`null` or `{}` when none); on
//!   Kubernetes ≥ 1.35 the tokens may be there instead;
//! - `permission`: the default file mode as a JSON number (`420`);
//! - `current_object_version`: what the volume shows now.
//!
//! The response holds every file with its mode and the object versions
//! sorted by id. A failure is a gRPC error whose message says what failed
//! and how to fix it (upstream's Azure provider also answers with a plain
//! gRPC error, which the driver shows in the pod's events); its code follows
//! the failure kind (`NotFound`, `PermissionDenied`, `InvalidArgument`,
//! `ResourceExhausted` for throttling, `Unavailable`).
//!
//! Nothing of `attributes`, `secrets` or the file contents is logged.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use secretfs_csi::keys;
use secretfs_csi::proto::health::health_check_response::ServingStatus;
use secretfs_csi::proto::health::health_server::{Health, HealthServer};
use secretfs_csi::proto::health::{HealthCheckRequest, HealthCheckResponse};
use secretfs_csi::proto::provider as pb;
use secretfs_csi::proto::provider::csi_driver_provider_server::{
    CsiDriverProvider, CsiDriverProviderServer,
};
use secretfs_secrets::{SecretMap, SecretString};
use thiserror::Error;
use tokio::net::UnixListener;
use tokio_stream::wrappers::UnixListenerStream;
use tonic::{Request, Response, Status};

use crate::cmd::cli::ProviderArgs;
use crate::cmd::node::{NodeError, VERSION};
use crate::provider::external::API_VERSION;
use crate::provider::{ErrorKind, FileMode, MountRequest, ObjectVersion, PodRef, Provider};

/// `VersionResponse.runtime_name`.
pub const RUNTIME_NAME: &str = "secretfs-provider-azure";
/// The service name health checks may ask for.
pub const SERVICE_NAME: &str = "v1alpha1.CSIDriverProvider";

/// `--cache-max-age`: a Go duration, or `0`/`0s` to always ask the vault.
pub fn parse_max_age(text: &str) -> Result<Duration, String> {
    match text.trim() {
        "0" | "0s" => Ok(Duration::ZERO),
        other => crate::duration::parse(other),
    }
}

/// Why `secretfs provider` could not start or stopped.
#[derive(Debug, Error)]
pub enum ProviderServerError {
    #[error(transparent)]
    Config(#[from] NodeError),
    #[error(transparent)]
    Socket(#[from] secretfs_csi::ServerError),
    #[error("provider gRPC server failed: {0}")]
    Serve(#[from] tonic::transport::Error),
    #[error("cannot start the async runtime: {0}")]
    Runtime(#[source] std::io::Error),
}

/// The `CSIDriverProvider` service over any [`Provider`].
#[derive(Clone)]
pub struct ProviderService {
    provider: Arc<dyn Provider>,
    node_name: String,
    max_age: Duration,
}

impl std::fmt::Debug for ProviderService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProviderService")
            .field("provider", &self.provider.name())
            .field("node_name", &self.node_name)
            .field("max_age", &self.max_age)
            .finish()
    }
}

impl ProviderService {
    /// `max_age`: how old a cached object may be (`--cache-max-age`).
    pub fn new(provider: Arc<dyn Provider>, node_name: &str, max_age: Duration) -> Self {
        Self {
            provider,
            node_name: node_name.to_owned(),
            max_age,
        }
    }
}

fn json_map(what: &str, text: &str) -> Result<BTreeMap<String, String>, Status> {
    let text = text.trim();
    if text.is_empty() || text == "null" {
        return Ok(BTreeMap::new());
    }
    // The serde error names only the position: the text holds tokens.
    serde_json::from_str::<BTreeMap<String, String>>(text).map_err(|e| {
        Status::invalid_argument(format!(
            "{what} is not a JSON object of strings (error at line {} column {}): the driver must \
             send it as upstream's does",
            e.line(),
            e.column()
        ))
    })
}

/// Reads a wire `MountRequest` into ours (see the module docs); cached
/// objects up to `max_age` old may answer it.
pub fn read_request(
    message: &pb::MountRequest,
    node_name: &str,
    max_age: Duration,
) -> Result<MountRequest, Status> {
    let mut attributes = json_map("attributes", &message.attributes)?;
    let secrets = json_map("secrets", &message.secrets)?;
    let default_mode = match message.permission.trim() {
        "" => FileMode::DEFAULT,
        text => text
            .parse::<u32>()
            .ok()
            .and_then(FileMode::new)
            .ok_or_else(|| {
                Status::invalid_argument(format!(
                    "permission {text:?} is not a file mode as a JSON number in 0..=511 (0644 is 420)"
                ))
            })?,
    };
    let tokens = secrets
        .get(keys::SERVICE_ACCOUNT_TOKENS)
        .or_else(|| attributes.get(keys::SERVICE_ACCOUNT_TOKENS))
        .filter(|t| !t.is_empty())
        .map(|t| SecretString::from(t.as_str()));
    let mut take = |key: &str| attributes.remove(key).unwrap_or_default();
    let pod = PodRef {
        name: take(keys::POD_NAME),
        namespace: take(keys::POD_NAMESPACE),
        uid: take(keys::POD_UID),
        service_account: take(keys::SERVICE_ACCOUNT_NAME),
    };
    attributes.remove(keys::SERVICE_ACCOUNT_TOKENS);
    attributes.remove(keys::SECRET_PROVIDER_CLASS);
    attributes.retain(|k, _| !k.starts_with("csi.storage.k8s.io/"));
    Ok(MountRequest {
        parameters: attributes,
        pod,
        service_account_tokens: tokens,
        secrets: SecretMap::new(secrets),
        default_mode,
        current: message
            .current_object_version
            .iter()
            .map(|v| ObjectVersion {
                id: v.id.clone(),
                version: v.version.clone(),
            })
            .collect(),
        node_name: node_name.to_owned(),
        max_age,
        fresh_since: None,
    })
}

fn status_for(kind: ErrorKind, message: String) -> Status {
    match kind {
        ErrorKind::Invalid => Status::invalid_argument(message),
        ErrorKind::NotFound => Status::not_found(message),
        ErrorKind::Denied => Status::permission_denied(message),
        ErrorKind::Throttled => Status::resource_exhausted(message),
        ErrorKind::Transient => Status::unavailable(message),
    }
}

#[tonic::async_trait]
impl CsiDriverProvider for ProviderService {
    async fn version(
        &self,
        _request: Request<pb::VersionRequest>,
    ) -> Result<Response<pb::VersionResponse>, Status> {
        Ok(Response::new(pb::VersionResponse {
            version: API_VERSION.to_owned(),
            runtime_name: RUNTIME_NAME.to_owned(),
            runtime_version: format!("v{VERSION}"),
        }))
    }

    async fn mount(
        &self,
        request: Request<pb::MountRequest>,
    ) -> Result<Response<pb::MountResponse>, Status> {
        let message = request.into_inner();
        let request = read_request(&message, &self.node_name, self.max_age)?;
        drop(message);
        let response = match self.provider.mount(&request).await {
            Ok(response) => response,
            Err(e) => {
                tracing::warn!(pod = %request.pod.name, namespace = %request.pod.namespace, kind = e.kind().as_str(), error = %e, "mount failed");
                return Err(status_for(
                    e.kind(),
                    format!("failed to mount objects, error: {e}"),
                ));
            }
        };
        for warning in &response.warnings {
            tracing::warn!(pod = %request.pod.name, namespace = %request.pod.namespace, "{warning}");
        }
        let mut versions = response.versions;
        versions.sort();
        tracing::info!(pod = %request.pod.name, namespace = %request.pod.namespace, objects = versions.len(), "mounted");
        Ok(Response::new(pb::MountResponse {
            object_version: versions
                .into_iter()
                .map(|v| pb::ObjectVersion {
                    id: v.id,
                    version: v.version,
                })
                .collect(),
            error: None,
            files: response
                .files
                .iter()
                .map(|f| pb::File {
                    path: f.path.clone(),
                    // At most 0o777: fits.
                    mode: f.mode.bits() as i32,
                    contents: f.contents.expose().to_vec(),
                })
                .collect(),
        }))
    }
}

/// `grpc.health.v1.Health`: serving as long as the process runs.
#[derive(Debug, Clone, Copy, Default)]
pub struct HealthService;

#[tonic::async_trait]
impl Health for HealthService {
    async fn check(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        let service = request.into_inner().service;
        if service.is_empty() || service == SERVICE_NAME {
            Ok(Response::new(HealthCheckResponse {
                status: ServingStatus::Serving as i32,
            }))
        } else {
            Err(Status::not_found(format!(
                "unknown service {service:?}: ask for \"\" or {SERVICE_NAME:?}"
            )))
        }
    }
}

/// Serves `provider` on `listener` until `shutdown` completes, then finishes
/// the calls in progress and returns.
pub async fn serve(
    listener: UnixListener,
    service: ProviderService,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ProviderServerError> {
    tonic::transport::Server::builder()
        .add_service(CsiDriverProviderServer::new(service))
        .add_service(HealthServer::new(HealthService))
        .serve_with_incoming_shutdown(UnixListenerStream::new(listener), shutdown)
        .await?;
    Ok(())
}

/// `secretfs provider`: until SIGTERM or SIGINT.
pub fn run(args: &ProviderArgs) -> Result<(), ProviderServerError> {
    let runtime = tokio::runtime::Runtime::new().map_err(ProviderServerError::Runtime)?;
    runtime.block_on(async {
        if let Err(err) = secretfs_secrets::hygiene::harden() {
            tracing::warn!(error = %err, "memory hygiene");
        }
        let config = crate::cmd::node::azure_config(&args.azure)?;
        let azure = crate::provider::azure::AzureProvider::new(config)
            .map_err(|e| NodeError::Azure(e.to_string()))?;
        let path = secretfs_csi::socket_path(&args.endpoint)?;
        let listener = secretfs_csi::bind(&path)?;
        tracing::info!(endpoint = %args.endpoint, "serving the Azure provider over the provider protocol");
        let service = ProviderService::new(Arc::new(azure), &args.node_id, args.cache_max_age);
        let result = serve(listener, service, shutdown_signal()).await;
        let _ = std::fs::remove_file(&path);
        result
    })
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    tracing::info!("shutting down");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_read_like_upstreams_azure_provider() {
        let message = pb::MountRequest {
            attributes: serde_json::json!({
                "keyvaultName": "kv",
                "objects": "array: []",
                "secretProviderClass": "c",
                keys::POD_NAME: "p",
                keys::POD_NAMESPACE: "ns",
                keys::POD_UID: "u",
                keys::SERVICE_ACCOUNT_NAME: "sa",
                keys::EPHEMERAL: "true",
                keys::SERVICE_ACCOUNT_TOKENS: "{\"aud\":{}}",
            })
            .to_string(),
            secrets: "null".into(),
            target_path: "/t".into(),
            permission: "420".into(),
            current_object_version: vec![pb::ObjectVersion {
                id: "secret/a".into(),
                version: "1".into(),
            }],
        };
        let r = read_request(&message, "node-1", Duration::from_secs(7)).unwrap();
        assert_eq!(r.max_age, Duration::from_secs(7));
        assert_eq!(
            r.parameters.keys().collect::<Vec<_>>(),
            ["keyvaultName", "objects"]
        );
        assert_eq!(r.pod.namespace, "ns");
        assert_eq!(r.pod.service_account, "sa");
        assert_eq!(r.default_mode, FileMode::DEFAULT);
        assert_eq!(r.service_account_tokens.unwrap().expose(), "{\"aud\":{}}");
        assert_eq!(r.current.len(), 1);

        let mut bad = message.clone();
        bad.permission = "\"0644\"".into();
        assert_eq!(
            read_request(&bad, "n", Duration::ZERO).unwrap_err().code(),
            tonic::Code::InvalidArgument
        );
        let mut bad = message;
        bad.attributes = "{\"token\": 5}".into();
        let err = read_request(&bad, "n", Duration::ZERO).unwrap_err();
        assert!(err.message().contains("attributes"), "{}", err.message());
    }
}
