//! A kubelet stand-in: turns a Pod manifest into the CSI calls kubelet makes
//! for its inline `csi` volumes, over the driver's Unix socket.
//!
//! What it reproduces (kubelet's csi volume plugin for ephemeral volumes):
//! - the target path `<root>/pods/<uid>/volumes/kubernetes.io~csi/<volume>/mount`;
//! - the volume id `csi-<sha256(pod uid + volume name)>`;
//! - `podInfoOnMount` keys (`csi.storage.k8s.io/pod.name`, `pod.namespace`,
//!   `pod.uid`, `serviceAccount.name`, `ephemeral`) plus the pod's
//!   `volumeAttributes`;
//! - `tokenRequests` as `csi.storage.k8s.io/serviceAccount.tokens`;
//! - the pod's fsGroup as `volume_mount_group` (CSIDriver `fsGroupPolicy:
//!   File` with a driver that advertises `VOLUME_MOUNT_GROUP`);
//! - `readOnly` from the volume.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use aws_lc_rs::digest;
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::Pod;
use secretfs_csi::proto::csi::{
    self, NodePublishVolumeRequest, NodeUnpublishVolumeRequest, VolumeCapability,
    identity_client::IdentityClient, node_client::NodeClient, volume_capability,
};
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint, Uri};

use crate::secrets_seen::{SecretKind, SecretsSeen, SeenSecret};

/// Why a harness call failed before reaching the driver.
#[derive(Debug, thiserror::Error)]
pub enum KubeletError {
    #[error("cannot connect to the driver socket {path:?}: {source}")]
    Connect {
        path: PathBuf,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("pod manifest: {0}")]
    Pod(String),
    #[error("the driver answered {code:?}: {message}")]
    Driver { code: tonic::Code, message: String },
}

impl From<tonic::Status> for KubeletError {
    fn from(status: tonic::Status) -> Self {
        Self::Driver {
            code: status.code(),
            message: status.message().to_owned(),
        }
    }
}

/// Per-publish extras kubelet would add.
#[derive(Debug, Clone, Default)]
pub struct PublishExtras {
    /// `csi.storage.k8s.io/serviceAccount.tokens` JSON, if the CSIDriver
    /// has `tokenRequests`.
    pub service_account_tokens: Option<String>,
    /// `nodePublishSecretRef` data.
    pub secrets: HashMap<String, String>,
}

/// A connected kubelet stand-in.
#[derive(Debug, Clone)]
pub struct Kubelet {
    channel: Channel,
    root: PathBuf,
    /// Credentials sent, for leak checks.
    sent: SecretsSeen,
    /// Error messages the driver answered, for leak checks.
    errors: Arc<Mutex<Vec<String>>>,
}

/// Reads a Pod manifest (YAML).
pub fn parse_pod(yaml: &str) -> Result<Pod, KubeletError> {
    serde_yaml::from_str(yaml).map_err(|e| KubeletError::Pod(e.to_string()))
}

impl Kubelet {
    /// Connects to the driver's socket; `root` plays `/var/lib/kubelet`.
    pub async fn connect(socket: &Path, root: &Path) -> Result<Self, KubeletError> {
        let path = socket.to_owned();
        let channel =
            Endpoint::from_static("http://kubelet.invalid")
                .connect_with_connector(tower::service_fn(move |_: Uri| {
                    let path = path.clone();
                    async move {
                        Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(path).await?))
                    }
                }))
                .await
                .map_err(|source| KubeletError::Connect {
                    path: socket.to_owned(),
                    source,
                })?;
        Ok(Self {
            channel,
            root: root.to_owned(),
            sent: SecretsSeen::default(),
            errors: Arc::default(),
        })
    }

    /// The credentials this stand-in sent: `nodePublishSecretRef` values
    /// (but those of keys ending in `id`, client ids) and service-account
    /// tokens.
    pub fn credentials_sent(&self) -> Vec<SeenSecret> {
        self.sent.list()
    }

    /// Every error message the driver answered a publish or unpublish.
    pub fn errors_received(&self) -> Vec<String> {
        self.errors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn note_sent(&self, request: &NodePublishVolumeRequest) {
        for (key, value) in &request.secrets {
            if !key.to_ascii_lowercase().ends_with("id") {
                self.sent.record(SecretKind::Credential, value);
            }
        }
        let tokens = request
            .volume_context
            .get("csi.storage.k8s.io/serviceAccount.tokens")
            .and_then(|t| serde_json::from_str::<serde_json::Value>(t).ok());
        for token in tokens
            .iter()
            .filter_map(|t| t.as_object())
            .flat_map(|t| t.values())
        {
            if let Some(token) = token["token"].as_str() {
                self.sent.record(SecretKind::ServiceAccountToken, token);
            }
        }
    }

    fn note_error(&self, status: tonic::Status) -> KubeletError {
        self.errors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(status.message().to_owned());
        status.into()
    }

    /// The driver's name and version (what kubelet registers).
    pub async fn plugin_info(&self) -> Result<(String, String), KubeletError> {
        let info = IdentityClient::new(self.channel.clone())
            .get_plugin_info(csi::GetPluginInfoRequest {})
            .await?
            .into_inner();
        Ok((info.name, info.vendor_version))
    }

    /// Where kubelet asks the driver to mount `volume` of `pod`.
    pub fn target_path(&self, pod: &Pod, volume: &str) -> PathBuf {
        self.root.join(format!(
            "pods/{}/volumes/kubernetes.io~csi/{volume}/mount",
            pod.metadata.uid.as_deref().unwrap_or_default()
        ))
    }

    /// The NodePublishVolume kubelet sends for `volume` of `pod`.
    pub fn publish_request(
        &self,
        pod: &Pod,
        volume: &str,
        extras: &PublishExtras,
    ) -> Result<NodePublishVolumeRequest, KubeletError> {
        let uid = pod.metadata.uid.clone().ok_or_else(|| {
            KubeletError::Pod("metadata.uid is not set (the API server sets it)".into())
        })?;
        let spec = pod
            .spec
            .as_ref()
            .ok_or_else(|| KubeletError::Pod("spec is missing".into()))?;
        let csi_volume = spec
            .volumes
            .iter()
            .flatten()
            .find(|v| v.name == volume)
            .and_then(|v| v.csi.as_ref())
            .ok_or_else(|| KubeletError::Pod(format!("no csi volume named {volume:?}")))?;
        let mut context: HashMap<String, String> = csi_volume
            .volume_attributes
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect();
        context.insert(
            "csi.storage.k8s.io/pod.name".into(),
            pod.metadata.name.clone().unwrap_or_default(),
        );
        context.insert(
            "csi.storage.k8s.io/pod.namespace".into(),
            pod.metadata
                .namespace
                .clone()
                .unwrap_or_else(|| "default".into()),
        );
        context.insert("csi.storage.k8s.io/pod.uid".into(), uid.clone());
        context.insert(
            "csi.storage.k8s.io/serviceAccount.name".into(),
            spec.service_account_name
                .clone()
                .unwrap_or_else(|| "default".into()),
        );
        context.insert("csi.storage.k8s.io/ephemeral".into(), "true".into());
        if let Some(tokens) = &extras.service_account_tokens {
            context.insert(
                "csi.storage.k8s.io/serviceAccount.tokens".into(),
                tokens.clone(),
            );
        }
        let fs_group = spec
            .security_context
            .as_ref()
            .and_then(|s| s.fs_group)
            .map(|g| g.to_string())
            .unwrap_or_default();
        let volume_id = format!(
            "csi-{}",
            hex(digest::digest(&digest::SHA256, format!("{uid}{volume}").as_bytes()).as_ref())
        );
        Ok(NodePublishVolumeRequest {
            volume_id,
            target_path: self.target_path(pod, volume).to_string_lossy().into_owned(),
            volume_capability: Some(VolumeCapability {
                access_type: Some(volume_capability::AccessType::Mount(
                    volume_capability::MountVolume {
                        fs_type: csi_volume.fs_type.clone().unwrap_or_default(),
                        mount_flags: Vec::new(),
                        volume_mount_group: fs_group,
                    },
                )),
                access_mode: Some(volume_capability::AccessMode {
                    mode: volume_capability::access_mode::Mode::SingleNodeWriter as i32,
                }),
            }),
            readonly: csi_volume.read_only.unwrap_or(false),
            secrets: extras.secrets.clone(),
            volume_context: context,
            ..Default::default()
        })
    }

    /// Publishes `volume` of `pod`; returns the target path.
    pub async fn publish(
        &self,
        pod: &Pod,
        volume: &str,
        extras: &PublishExtras,
    ) -> Result<PathBuf, KubeletError> {
        let request = self.publish_request(pod, volume, extras)?;
        let target = PathBuf::from(&request.target_path);
        // Kubelet creates the parent; the driver the mount point itself.
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| KubeletError::Pod(format!("cannot create {parent:?}: {e}")))?;
        }
        self.note_sent(&request);
        NodeClient::new(self.channel.clone())
            .node_publish_volume(request)
            .await
            .map_err(|s| self.note_error(s))?;
        Ok(target)
    }

    /// Sends a NodePublishVolume as given (for requests kubelet would not
    /// build, in tests of the driver's validation).
    pub async fn send_publish(
        &self,
        request: NodePublishVolumeRequest,
    ) -> Result<(), KubeletError> {
        self.note_sent(&request);
        NodeClient::new(self.channel.clone())
            .node_publish_volume(request)
            .await
            .map_err(|s| self.note_error(s))?;
        Ok(())
    }

    /// Unpublishes `volume` of `pod`.
    pub async fn unpublish(&self, pod: &Pod, volume: &str) -> Result<(), KubeletError> {
        let request = self.publish_request(pod, volume, &PublishExtras::default())?;
        NodeClient::new(self.channel.clone())
            .node_unpublish_volume(NodeUnpublishVolumeRequest {
                volume_id: request.volume_id,
                target_path: request.target_path,
            })
            .await
            .map_err(|s| self.note_error(s))?;
        Ok(())
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
