//! Sync to Kubernetes: the SecretProviderClassPodStatus of each mounted
//! volume, and the Secrets of the class's `secretObjects`, written by
//! server-side apply (field manager `secretfs`) and only when their content
//! changed, so a republish or an unchanged rotation writes nothing.
//!
//! Lifecycle (as upstream): a synced Secret is owned by the pod's owners
//! (its ReplicaSet, StatefulSet, …), or by the pod's status object when the
//! pod has no owner; Kubernetes deletes it when every owner is gone. A
//! Deployment scaled to zero keeps its ReplicaSet, and so its Secret.

mod secret;
mod status;
mod tls;

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher, RandomState};
use std::sync::Mutex;

use base64::Engine;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Patch, PatchParams};
use kube::core::{ApiResource, DynamicObject, GroupVersionKind};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use serde_json::{Value, json};

use crate::names::{FIELD_MANAGER, LABEL_MANAGED};
use crate::provider::{MountedFile, ObjectVersion, PodRef};
use crate::spc::{GROUP, SecretObject};

pub use secret::{SecretError, build as build_secret_data, resolve as resolve_file};

/// Why a sync failed; shown in the pod's events and the log, never with a
/// secret value.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error(transparent)]
    Secret(#[from] SecretError),
    #[error("writing {what}: {source}")]
    Api {
        what: String,
        #[source]
        source: kube::Error,
    },
    #[error("the Kubernetes API did not answer within {0:?}")]
    Timeout(std::time::Duration),
}

/// How long one sync (or one event) may wait for the Kubernetes API. Kube's
/// client has no read timeout and retries a 503 or 429 on its own for
/// minutes; a publish or refresh must not wait that long for a mirror.
pub const DEFAULT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// One volume's state to mirror.
#[derive(Debug, Clone, Copy)]
pub struct SyncInput<'a> {
    pub pod: &'a PodRef,
    pub class: &'a str,
    pub target: &'a str,
    pub secret_objects: &'a [SecretObject],
    pub files: &'a [MountedFile],
    pub versions: &'a [ObjectVersion],
}

/// Writes pod statuses and Secrets.
pub struct Syncer {
    client: kube::Client,
    node: String,
    recorder: Recorder,
    hasher: RandomState,
    /// Object key → hash of what we last applied.
    applied: Mutex<HashMap<String, u64>>,
    /// Whether `secretObjects` Secrets are written (pod statuses always).
    secrets: bool,
    /// Longest wait of one sync or event.
    timeout: std::time::Duration,
}

impl std::fmt::Debug for Syncer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Syncer")
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

fn status_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(GROUP, "v1", "SecretProviderClassPodStatus"),
        "secretproviderclasspodstatuses",
    )
}

impl Syncer {
    pub fn new(client: kube::Client, node: impl Into<String>) -> Self {
        let node = node.into();
        let recorder = Recorder::new(
            client.clone(),
            Reporter {
                controller: "secretfs".into(),
                instance: Some(node.clone()),
            },
        );
        Self {
            client,
            node,
            recorder,
            hasher: RandomState::new(),
            applied: Mutex::new(HashMap::new()),
            secrets: true,
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// Sets the longest wait of one sync or event (default
    /// [`DEFAULT_TIMEOUT`]).
    pub fn with_timeout(mut self, timeout: std::time::Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Whether to write `secretObjects` Secrets (`--sync-secrets`).
    pub fn with_secrets(mut self, secrets: bool) -> Self {
        self.secrets = secrets;
        self
    }

    fn changed(&self, key: &str, body: &Value) -> (bool, u64) {
        let mut hasher = self.hasher.build_hasher();
        hasher.write(body.to_string().as_bytes());
        let hash = hasher.finish();
        let applied = self.applied.lock().unwrap_or_else(|e| e.into_inner());
        (applied.get(key) != Some(&hash), hash)
    }

    fn remember(&self, key: String, hash: u64) {
        self.applied
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, hash);
    }

    /// Mirrors one volume; writes only what changed since the last call.
    /// Gives up after the timeout: what was not written is written at the
    /// next call.
    pub async fn sync(&self, input: SyncInput<'_>) -> Result<usize, SyncError> {
        tokio::time::timeout(self.timeout, self.sync_once(input))
            .await
            .unwrap_or(Err(SyncError::Timeout(self.timeout)))
    }

    async fn sync_once(&self, input: SyncInput<'_>) -> Result<usize, SyncError> {
        let mut writes = 0;
        let status = status::body(
            &self.node,
            input.pod,
            input.class,
            input.target,
            input.versions,
        );
        let status_name = status::name(input.pod, input.class);
        let key = format!("status/{}/{status_name}", input.pod.namespace);
        let (changed, hash) = self.changed(&key, &status);
        let api = kube::Api::<DynamicObject>::namespaced_with(
            self.client.clone(),
            &input.pod.namespace,
            &status_resource(),
        );
        let params = PatchParams::apply(FIELD_MANAGER).force();
        let mut status_uid = None;
        if changed {
            let applied = api
                .patch(&status_name, &params, &Patch::Apply(&status))
                .await
                .map_err(|source| SyncError::Api {
                    what: format!(
                        "SecretProviderClassPodStatus {}/{status_name}",
                        input.pod.namespace
                    ),
                    source,
                })?;
            status_uid = applied.metadata.uid;
            self.remember(key, hash);
            writes += 1;
        }
        if input.secret_objects.is_empty() || !self.secrets {
            return Ok(writes);
        }
        // Build every Secret first: a bad entry fails before any write.
        let mut secrets = Vec::new();
        for object in input.secret_objects {
            secrets.push((object, secret::build(object, input.files)?));
        }
        let mut owners: Option<Value> = None;
        for (object, data) in secrets {
            let encoded: serde_json::Map<String, Value> = data
                .iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        Value::String(base64::engine::general_purpose::STANDARD.encode(v.expose())),
                    )
                })
                .collect();
            let mut labels = object.labels.clone();
            labels.insert(LABEL_MANAGED.into(), "true".into());
            let secret_key = format!("secret/{}/{}", input.pod.namespace, object.secret_name);
            let mut body = json!({
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {
                    "name": object.secret_name,
                    "namespace": input.pod.namespace,
                    "labels": labels,
                    "annotations": object.annotations,
                },
                "type": object.secret_type,
                "data": encoded,
            });
            let (changed, hash) = self.changed(&secret_key, &body);
            if !changed {
                continue;
            }
            if owners.is_none() {
                owners = Some(
                    self.owners(input.pod, &status_name, status_uid.clone(), &api)
                        .await?,
                );
            }
            body["metadata"]["ownerReferences"] = owners.clone().unwrap_or(Value::Null);
            kube::Api::<k8s_openapi::api::core::v1::Secret>::namespaced(
                self.client.clone(),
                &input.pod.namespace,
            )
            .patch(&object.secret_name, &params, &Patch::Apply(&body))
            .await
            .map_err(|source| SyncError::Api {
                what: format!("Secret {}/{}", input.pod.namespace, object.secret_name),
                source,
            })?;
            self.remember(secret_key, hash);
            writes += 1;
        }
        Ok(writes)
    }

    /// The pod's owners, or the pod status object when it has none.
    async fn owners(
        &self,
        pod: &PodRef,
        status_name: &str,
        status_uid: Option<String>,
        statuses: &kube::Api<DynamicObject>,
    ) -> Result<Value, SyncError> {
        let api_error = |what: String| move |source| SyncError::Api { what, source };
        let live = kube::Api::<Pod>::namespaced(self.client.clone(), &pod.namespace)
            .get(&pod.name)
            .await
            .map_err(api_error(format!(
                "reading Pod {}/{}",
                pod.namespace, pod.name
            )))?;
        if let Some(owners) = live.metadata.owner_references.filter(|o| !o.is_empty()) {
            let owners: Vec<Value> = owners
                .into_iter()
                .map(|o| json!({"apiVersion": o.api_version, "kind": o.kind, "name": o.name, "uid": o.uid}))
                .collect();
            return Ok(Value::Array(owners));
        }
        let uid = match status_uid {
            Some(uid) => uid,
            None => statuses
                .get(status_name)
                .await
                .map_err(api_error(format!(
                    "reading SecretProviderClassPodStatus {status_name}"
                )))?
                .metadata
                .uid
                .unwrap_or_default(),
        };
        Ok(json!([{
            "apiVersion": format!("{GROUP}/v1"),
            "kind": "SecretProviderClassPodStatus",
            "name": status_name,
            "uid": uid,
        }]))
    }

    /// An event on the pod (best effort: failures are logged).
    pub async fn event(&self, pod: &PodRef, warning: bool, reason: &str, note: String) {
        let reference = k8s_openapi::api::core::v1::ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            name: Some(pod.name.clone()),
            namespace: Some(pod.namespace.clone()),
            uid: Some(pod.uid.clone()),
            ..Default::default()
        };
        let event = Event {
            type_: if warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: reason.into(),
            note: Some(note),
            action: "Sync".into(),
            secondary: None,
        };
        match tokio::time::timeout(self.timeout, self.recorder.publish(&event, &reference)).await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => tracing::warn!(error = %err, reason, "publishing an event"),
            Err(_) => {
                tracing::warn!(reason, timeout = ?self.timeout, "publishing an event: no answer")
            }
        }
    }
}
