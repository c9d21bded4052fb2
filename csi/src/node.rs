//! The CSI Identity and Node services: validate, then delegate.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use secretfs_secrets::SecretMap;
use tonic::{Request, Response, Status};

use crate::manager::{
    ErrorCode, PublishRequest, Readiness, UnpublishRequest, VolumeContext, VolumeError,
    VolumeManager,
};
use crate::proto::csi::{
    self, GetPluginCapabilitiesRequest, GetPluginCapabilitiesResponse, GetPluginInfoRequest,
    GetPluginInfoResponse, NodeGetCapabilitiesRequest, NodeGetCapabilitiesResponse,
    NodeGetInfoRequest, NodeGetInfoResponse, NodePublishVolumeRequest, NodePublishVolumeResponse,
    NodeServiceCapability, NodeUnpublishVolumeRequest, NodeUnpublishVolumeResponse, ProbeRequest,
    ProbeResponse, node_service_capability, volume_capability,
};

/// Maps a manager error to the gRPC status kubelet sees.
pub fn status(err: &VolumeError) -> Status {
    let code = match err.code {
        ErrorCode::InvalidArgument => tonic::Code::InvalidArgument,
        ErrorCode::NotFound => tonic::Code::NotFound,
        ErrorCode::FailedPrecondition => tonic::Code::FailedPrecondition,
        ErrorCode::PermissionDenied => tonic::Code::PermissionDenied,
        ErrorCode::Unavailable => tonic::Code::Unavailable,
        ErrorCode::ResourceExhausted => tonic::Code::ResourceExhausted,
        ErrorCode::DeadlineExceeded => tonic::Code::DeadlineExceeded,
        ErrorCode::Aborted => tonic::Code::Aborted,
        ErrorCode::Internal => tonic::Code::Internal,
        ErrorCode::AlreadyExists => tonic::Code::AlreadyExists,
        ErrorCode::Unknown => tonic::Code::Unknown,
    };
    Status::new(code, err.message.clone())
}

/// Maps a failed call, with `secrets` (the request's secret values)
/// scrubbed from the message kubelet shows in the pod's events. The server's
/// [`FailureLog`](crate::failures::FailureLog) logs it once, with the error
/// type recorded here.
fn failed(err: &VolumeError, secrets: &[&str]) -> Status {
    tracing::Span::current().record("error_type", err.error_type);
    let mut status = status(err);
    let message = crate::failures::scrub(status.message(), secrets);
    if message != status.message() {
        status = Status::new(status.code(), message);
    }
    status
}

/// Records what identifies a publish or unpublish in the call's span
/// (never the volume context or secrets).
fn identify(volume_id: &str, target: &std::path::Path, pod: Option<(&str, &str)>) {
    let span = tracing::Span::current();
    span.record("volume_id", volume_id);
    span.record("target", tracing::field::debug(target));
    if let Some((namespace, name)) = pod {
        span.record("pod", format!("{namespace}/{name}"));
    }
}

/// Identity service: who we are, what we serve, whether we are ready.
pub struct IdentityService {
    name: String,
    version: String,
    manager: Arc<dyn VolumeManager>,
}

impl std::fmt::Debug for IdentityService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdentityService")
            .field("name", &self.name)
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

impl IdentityService {
    pub fn new(
        name: impl Into<String>,
        version: impl Into<String>,
        manager: Arc<dyn VolumeManager>,
    ) -> Self {
        Self {
            name: name.into(),
            version: version.into(),
            manager,
        }
    }
}

#[tonic::async_trait]
impl csi::identity_server::Identity for IdentityService {
    async fn get_plugin_info(
        &self,
        _request: Request<GetPluginInfoRequest>,
    ) -> Result<Response<GetPluginInfoResponse>, Status> {
        Ok(Response::new(GetPluginInfoResponse {
            name: self.name.clone(),
            vendor_version: self.version.clone(),
            manifest: HashMap::new(),
        }))
    }

    /// Nothing: we serve no controller and no topology (unlike upstream,
    /// which advertises a controller service whose every call fails).
    async fn get_plugin_capabilities(
        &self,
        _request: Request<GetPluginCapabilitiesRequest>,
    ) -> Result<Response<GetPluginCapabilitiesResponse>, Status> {
        Ok(Response::new(GetPluginCapabilitiesResponse {
            capabilities: Vec::new(),
        }))
    }

    async fn probe(
        &self,
        _request: Request<ProbeRequest>,
    ) -> Result<Response<ProbeResponse>, Status> {
        match self.manager.readiness().await {
            Readiness::Ready => Ok(Response::new(ProbeResponse { ready: Some(true) })),
            Readiness::NotReady(why) => Err(Status::unavailable(format!("not ready: {why}"))),
        }
    }
}

/// Node service.
pub struct NodeService {
    node_id: String,
    manager: Arc<dyn VolumeManager>,
}

impl std::fmt::Debug for NodeService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeService")
            .field("node_id", &self.node_id)
            .finish_non_exhaustive()
    }
}

impl NodeService {
    pub fn new(node_id: impl Into<String>, manager: Arc<dyn VolumeManager>) -> Self {
        Self {
            node_id: node_id.into(),
            manager,
        }
    }
}

/// Checks a NodePublishVolume and turns it into a typed request.
pub fn validate_publish(req: NodePublishVolumeRequest) -> Result<PublishRequest, VolumeError> {
    if req.volume_id.is_empty() {
        return Err(VolumeError::invalid(
            "volume_id is missing from the NodePublishVolume request",
        ));
    }
    if req.target_path.is_empty() {
        return Err(VolumeError::invalid(
            "target_path is missing from the NodePublishVolume request",
        ));
    }
    let capability = req.volume_capability.ok_or_else(|| {
        VolumeError::invalid("volume_capability is missing from the NodePublishVolume request")
    })?;
    let mount = match capability.access_type {
        Some(volume_capability::AccessType::Mount(mount)) => mount,
        Some(volume_capability::AccessType::Block(_)) => {
            return Err(VolumeError::invalid(
                "block volumes are not supported: secrets volumes are file systems (use a csi volume, not volumeDevices)",
            ));
        }
        None => {
            return Err(VolumeError::invalid(
                "volume_capability.access_type is missing: a mount volume capability is required",
            ));
        }
    };
    if !req.readonly {
        return Err(VolumeError::new(
            ErrorCode::InvalidArgument,
            crate::error_types::INVALID_REQUEST,
            "Readonly is not true in request: set `readOnly: true` on the csi volume in the pod spec",
        ));
    }
    if req.volume_context.is_empty() {
        return Err(VolumeError::invalid(
            "volume_context is empty: the pod's csi volume needs volumeAttributes.secretProviderClass",
        ));
    }
    let mount_group = match mount.volume_mount_group.as_str() {
        "" => None,
        group => Some(group.parse::<u32>().map_err(|_| {
            VolumeError::invalid(format!(
                "volume_mount_group {group:?} is not a numeric group id: set the pod's securityContext.fsGroup to a number"
            ))
        })?),
    };
    Ok(PublishRequest {
        volume_id: req.volume_id,
        target_path: PathBuf::from(req.target_path),
        volume_context: VolumeContext::new(req.volume_context),
        secrets: SecretMap::new(req.secrets),
        mount_group,
        mount_flags: mount.mount_flags,
    })
}

/// Checks a NodeUnpublishVolume.
pub fn validate_unpublish(
    req: NodeUnpublishVolumeRequest,
) -> Result<UnpublishRequest, VolumeError> {
    if req.volume_id.is_empty() {
        return Err(VolumeError::invalid(
            "volume_id is missing from the NodeUnpublishVolume request",
        ));
    }
    if req.target_path.is_empty() {
        return Err(VolumeError::invalid(
            "target_path is missing from the NodeUnpublishVolume request",
        ));
    }
    Ok(UnpublishRequest {
        volume_id: req.volume_id,
        target_path: PathBuf::from(req.target_path),
    })
}

#[tonic::async_trait]
impl csi::node_server::Node for NodeService {
    async fn node_publish_volume(
        &self,
        request: Request<NodePublishVolumeRequest>,
    ) -> Result<Response<NodePublishVolumeResponse>, Status> {
        let request = request.into_inner();
        // Values a message must never carry back: the request's secrets and
        // the service-account tokens (kept only while the call runs). The
        // `clientid` of a nodePublishSecretRef names the service principal,
        // is no secret, and errors name it so the user knows whose access
        // to fix.
        let sensitive: Vec<zeroize::Zeroizing<String>> = request
            .secrets
            .iter()
            .filter(|(key, _)| key.as_str() != "clientid")
            .map(|(_, value)| value)
            .chain(
                request
                    .volume_context
                    .get(crate::manager::keys::SERVICE_ACCOUNT_TOKENS),
            )
            .map(|v| zeroize::Zeroizing::new(v.clone()))
            .collect();
        let sensitive: Vec<&str> = sensitive.iter().map(|v| v.as_str()).collect();
        let typed = validate_publish(request).map_err(|e| failed(&e, &sensitive))?;
        let pod = (
            typed
                .volume_context
                .get(crate::manager::keys::POD_NAMESPACE),
            typed.volume_context.get(crate::manager::keys::POD_NAME),
        );
        identify(&typed.volume_id, &typed.target_path, pod.0.zip(pod.1));
        tracing::debug!(request = ?typed, "NodePublishVolume");
        self.manager
            .publish(typed)
            .await
            .map_err(|e| failed(&e, &sensitive))?;
        Ok(Response::new(NodePublishVolumeResponse {}))
    }

    async fn node_unpublish_volume(
        &self,
        request: Request<NodeUnpublishVolumeRequest>,
    ) -> Result<Response<NodeUnpublishVolumeResponse>, Status> {
        let typed = validate_unpublish(request.into_inner()).map_err(|e| failed(&e, &[]))?;
        identify(&typed.volume_id, &typed.target_path, None);
        tracing::debug!(request = ?typed, "NodeUnpublishVolume");
        self.manager
            .unpublish(typed)
            .await
            .map_err(|e| failed(&e, &[]))?;
        Ok(Response::new(NodeUnpublishVolumeResponse {}))
    }

    /// `VOLUME_MOUNT_GROUP`: kubelet then passes the pod's fsGroup in
    /// `volume_mount_group` instead of changing ownership itself.
    async fn node_get_capabilities(
        &self,
        _request: Request<NodeGetCapabilitiesRequest>,
    ) -> Result<Response<NodeGetCapabilitiesResponse>, Status> {
        let rpc = |t: node_service_capability::rpc::Type| NodeServiceCapability {
            r#type: Some(node_service_capability::Type::Rpc(
                node_service_capability::Rpc { r#type: t as i32 },
            )),
        };
        Ok(Response::new(NodeGetCapabilitiesResponse {
            capabilities: vec![rpc(node_service_capability::rpc::Type::VolumeMountGroup)],
        }))
    }

    async fn node_get_info(
        &self,
        _request: Request<NodeGetInfoRequest>,
    ) -> Result<Response<NodeGetInfoResponse>, Status> {
        Ok(Response::new(NodeGetInfoResponse {
            node_id: self.node_id.clone(),
            max_volumes_per_node: 0,
            accessible_topology: None,
        }))
    }
}
