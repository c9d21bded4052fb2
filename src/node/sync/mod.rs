//! Sync to Kubernetes: the SecretProviderClassPodStatus of each mounted
//! volume, and the Secrets of the class's `secretObjects`, written by
//! server-side apply and only when their content changed, so a republish or
//! an unchanged rotation writes nothing.
//!
//! Lifecycle (owners as upstream): a synced Secret is owned by the pod's
//! owners (its ReplicaSet, StatefulSet, …), or by the pod's status object
//! when the pod has no owner; Kubernetes deletes it when every owner is
//! gone. A Deployment scaled to zero keeps its ReplicaSet, and so its
//! Secret.
//!
//! - Each node applies its Secrets with its own field manager
//!   (`secretfs-<node>`, [`secret_field_manager`]), listing the owners of
//!   every volume of the node that writes the Secret. `ownerReferences` is
//!   a list keyed by uid under server-side apply, so an apply keeps the
//!   owners other nodes applied; a second pod (of another owner) adds its
//!   owner even when the data did not change.
//! - Every [`DEFAULT_RECHECK`] a volume's status and Secrets are applied
//!   again, and its pod's owners read again, even if nothing changed: a
//!   Secret deleted while pods use it is re-created (upstream re-checks
//!   every 5 minutes too). The driver asks [`Syncer::due`] at each refresh.
//! - An unpublished volume is forgotten ([`Syncer::forget`]); nothing is
//!   written then. Its owners stay on the Secret until the node applies it
//!   again (without them) or Kubernetes removes them once they are gone.
//! - Pod status objects are applied with field manager `secretfs` (one per
//!   pod and class, so there is nothing to share).

mod ledger;
mod secret;
mod status;
mod tls;

use std::collections::BTreeSet;
use std::hash::{BuildHasher, Hasher, RandomState};
use std::sync::Mutex;
use std::time::Duration;

use base64::Engine;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Patch, PatchParams};
use kube::core::{ApiResource, DynamicObject, GroupVersionKind};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use serde_json::{Value, json};

use crate::names::{FIELD_MANAGER, LABEL_MANAGED};
use crate::provider::{MountedFile, ObjectVersion, PodRef};
use crate::spc::{GROUP, SecretObject};
use ledger::{Ledger, Owner};

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
    #[error("the {what} of pod {pod} is gone; its Secrets are not written for it")]
    Gone { what: String, pod: String },
}

/// A volume's owners as read from the API.
enum Resolved {
    /// The owners, and the uid of the pod's status object if it was read.
    Owners(Vec<Owner>, Option<String>),
    /// The pod (this uid) or its status object no longer exists.
    Gone(String),
}

/// How long one sync (or one event) may wait for the Kubernetes API. Kube's
/// client has no read timeout and retries a 503 or 429 on its own for
/// minutes; a publish or refresh must not wait that long for a mirror.
pub const DEFAULT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// How often a volume's status and Secrets are applied again although
/// nothing changed (upstream's 5 minutes): repairs a deleted Secret or
/// status object and refreshes the owners.
pub const DEFAULT_RECHECK: Duration = Duration::from_secs(300);

/// The API server's limit on a field manager's length.
const FIELD_MANAGER_MAX: usize = 128;

/// The field manager of this node's Secret applies: `secretfs-<node>`; a
/// node name too long for the API's 128 bytes is cut and ends with a digest
/// of the whole name, so names stay distinct.
pub fn secret_field_manager(node: &str) -> String {
    let full = format!("{FIELD_MANAGER}-{node}");
    if full.len() <= FIELD_MANAGER_MAX {
        return full;
    }
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, node.as_bytes());
    let suffix = hex::encode(&digest.as_ref()[..8]);
    let mut cut = FIELD_MANAGER_MAX - suffix.len() - 1;
    while !full.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}-{suffix}", &full[..cut])
}

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
    /// Field manager of the Secret applies ([`secret_field_manager`]).
    secret_manager: String,
    recorder: Recorder,
    hasher: RandomState,
    /// What this node applied, per volume and per Secret.
    ledger: Mutex<Ledger>,
    /// Whether `secretObjects` Secrets are written (pod statuses always).
    secrets: bool,
    /// Longest wait of one sync or event.
    timeout: std::time::Duration,
    /// How often an unchanged volume is applied again.
    recheck: Duration,
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
            secret_manager: secret_field_manager(&node),
            node,
            recorder,
            hasher: RandomState::new(),
            ledger: Mutex::new(Ledger::default()),
            secrets: true,
            timeout: DEFAULT_TIMEOUT,
            recheck: DEFAULT_RECHECK,
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

    /// Sets how often an unchanged volume is applied again (default
    /// [`DEFAULT_RECHECK`]).
    pub fn with_recheck(mut self, recheck: Duration) -> Self {
        self.recheck = recheck;
        self
    }

    fn ledger(&self) -> std::sync::MutexGuard<'_, Ledger> {
        self.ledger.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn hash(&self, body: &Value) -> u64 {
        let mut hasher = self.hasher.build_hasher();
        hasher.write(body.to_string().as_bytes());
        hasher.finish()
    }

    /// Whether the volume at `target` is due for its periodic re-check: the
    /// driver then syncs it although nothing changed.
    pub fn due(&self, target: &str) -> bool {
        self.ledger().due(target, self.recheck)
    }

    /// Records a volume taken over from a previous process (call before
    /// this process serves CSI). Nothing is written now; but the next apply
    /// of any Secret it writes lists its owners too (read from the API
    /// first, when needed), and the volume is due for its re-check at once,
    /// so a status object or Secret deleted meanwhile comes back at its next
    /// refresh. Without this, the first apply after a restart would list
    /// only the owners of volumes published since, and server-side apply
    /// would take the others off the Secret.
    pub fn adopt(&self, target: &str, pod: &PodRef, class: &str, secret_objects: &[SecretObject]) {
        let secrets = if self.secrets {
            secret_objects
                .iter()
                .map(|o| format!("{}/{}", pod.namespace, o.secret_name))
                .collect()
        } else {
            BTreeSet::new()
        };
        self.ledger().adopt(target, pod.clone(), class, secrets);
    }

    /// Forgets the volume at `target` (unpublished). Writes nothing.
    pub fn forget(&self, target: &str) {
        self.ledger().forget(target);
    }

    /// Mirrors one volume; writes only what changed since the last call, or
    /// everything when its re-check is due ([`Syncer::due`]). Gives up after
    /// the timeout: what was not written is written at the next call.
    pub async fn sync(&self, input: SyncInput<'_>) -> Result<usize, SyncError> {
        tokio::time::timeout(self.timeout, self.sync_once(input))
            .await
            .unwrap_or(Err(SyncError::Timeout(self.timeout)))
    }

    async fn sync_once(&self, input: SyncInput<'_>) -> Result<usize, SyncError> {
        let mut writes = 0;
        let target = input.target;
        let recheck = self.due(target);
        let status = status::body(
            &self.node,
            input.pod,
            input.class,
            input.target,
            input.versions,
        );
        let status_name = status::name(input.pod, input.class);
        let hash = self.hash(&status);
        let changed = {
            let mut ledger = self.ledger();
            let volume = ledger.volume(target);
            volume.pod = Some((input.pod.clone(), input.class.to_owned()));
            recheck || volume.status_hash != Some(hash)
        };
        let api = self.statuses(&input.pod.namespace);
        if changed {
            let params = PatchParams::apply(FIELD_MANAGER).force();
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
            let mut ledger = self.ledger();
            let volume = ledger.volume(target);
            volume.status_hash = Some(hash);
            if applied.metadata.uid.is_some() {
                volume.status_uid = applied.metadata.uid;
            }
            writes += 1;
        }
        if input.secret_objects.is_empty() || !self.secrets {
            let mut ledger = self.ledger();
            ledger.use_secrets(target, BTreeSet::new());
            if recheck {
                ledger.volume(target).checked = Some(std::time::Instant::now());
            }
            return Ok(writes);
        }
        // Build every Secret first: a bad entry fails before any write.
        let mut secrets = Vec::new();
        for object in input.secret_objects {
            secrets.push((object, secret::build(object, input.files)?));
        }
        // This volume's owners: read once, and again at each re-check.
        let known = {
            let mut ledger = self.ledger();
            let volume = ledger.volume(target);
            if recheck {
                volume.owners = None;
            }
            volume.owners.is_some()
        };
        if !known {
            let status_uid = self.ledger().volume(target).status_uid.clone();
            match self.owners(input.pod, &status_name, status_uid).await? {
                Resolved::Owners(owners, status_uid) => {
                    let mut ledger = self.ledger();
                    let volume = ledger.volume(target);
                    volume.owners = Some(owners);
                    volume.status_uid = status_uid.or(volume.status_uid.take());
                }
                Resolved::Gone(what) => {
                    return Err(SyncError::Gone {
                        what,
                        pod: format!("{}/{}", input.pod.namespace, input.pod.name),
                    });
                }
            }
        }
        let keys = |name: &str| format!("{}/{name}", input.pod.namespace);
        self.ledger().use_secrets(
            target,
            input
                .secret_objects
                .iter()
                .map(|o| keys(&o.secret_name))
                .collect(),
        );
        let params = PatchParams::apply(&self.secret_manager).force();
        for (object, data) in secrets {
            let secret_key = keys(&object.secret_name);
            // One apply of this Secret at a time on this node: the owner
            // list applied last is the newest.
            let lock = self.ledger().secret_lock(&secret_key);
            let _held = lock.lock().await;
            // The owners of the other volumes that write it must be known
            // before an apply: this manager's last apply listed them, and a
            // list without them would take them off the Secret (volumes
            // taken over from a previous process start unknown).
            self.resolve_others(&secret_key).await?;
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
            let owners: Vec<Value> = self
                .ledger()
                .owners_of(&secret_key)
                .iter()
                .map(Owner::to_json)
                .collect();
            let body = json!({
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {
                    "name": object.secret_name,
                    "namespace": input.pod.namespace,
                    "labels": labels,
                    "annotations": object.annotations,
                    "ownerReferences": owners,
                },
                "type": object.secret_type,
                "data": encoded,
            });
            let hash = self.hash(&body);
            let due = self
                .ledger()
                .secret_due(&secret_key, hash, recheck.then_some(self.recheck));
            if !due {
                continue;
            }
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
            self.ledger().secret_applied(&secret_key, hash);
            writes += 1;
        }
        if recheck {
            self.ledger().volume(target).checked = Some(std::time::Instant::now());
        }
        Ok(writes)
    }

    fn statuses(&self, namespace: &str) -> kube::Api<DynamicObject> {
        kube::Api::namespaced_with(self.client.clone(), namespace, &status_resource())
    }

    /// Reads the owners of every other volume that writes the Secret `key`
    /// and whose owners are not known yet. A volume whose pod (or status
    /// object) is gone gives no owner: kubelet unpublishes it soon. Any
    /// other failure fails the sync, so that no shorter list is applied.
    async fn resolve_others(&self, key: &str) -> Result<(), SyncError> {
        let unresolved = self.ledger().unresolved(key);
        for (target, pod, class, status_uid) in unresolved {
            let status_name = status::name(&pod, &class);
            let owners = match self.owners(&pod, &status_name, status_uid).await? {
                Resolved::Owners(owners, _) => owners,
                Resolved::Gone(what) => {
                    tracing::debug!(target = %target, %what, "a volume's pod or status object is gone: it gives no owner");
                    Vec::new()
                }
            };
            let mut ledger = self.ledger();
            let volume = ledger.volume(&target);
            if volume.owners.is_none() {
                volume.owners = Some(owners);
            }
        }
        Ok(())
    }

    /// The pod's owners, or the pod's status object when it has none (with
    /// that object's uid, to remember).
    async fn owners(
        &self,
        pod: &PodRef,
        status_name: &str,
        status_uid: Option<String>,
    ) -> Result<Resolved, SyncError> {
        let api_error = |what: String| move |source| SyncError::Api { what, source };
        let live = match kube::Api::<Pod>::namespaced(self.client.clone(), &pod.namespace)
            .get_opt(&pod.name)
            .await
            .map_err(api_error(format!(
                "reading Pod {}/{}",
                pod.namespace, pod.name
            )))? {
            // A pod of the same name but another uid (a StatefulSet's pod
            // made again) is not this volume's.
            Some(live) if live.metadata.uid.as_deref() == Some(pod.uid.as_str()) => live,
            _ => return Ok(Resolved::Gone("Pod".into())),
        };
        if let Some(owners) = live.metadata.owner_references.filter(|o| !o.is_empty()) {
            return Ok(Resolved::Owners(
                owners
                    .into_iter()
                    .map(|o| Owner {
                        api_version: o.api_version,
                        kind: o.kind,
                        name: o.name,
                        uid: o.uid,
                    })
                    .collect(),
                status_uid,
            ));
        }
        let uid = match status_uid {
            Some(uid) => uid,
            None => {
                let status = self
                    .statuses(&pod.namespace)
                    .get_opt(status_name)
                    .await
                    .map_err(api_error(format!(
                        "reading SecretProviderClassPodStatus {}/{status_name}",
                        pod.namespace
                    )))?;
                match status.and_then(|s| s.metadata.uid) {
                    Some(uid) => uid,
                    None => return Ok(Resolved::Gone("SecretProviderClassPodStatus".into())),
                }
            }
        };
        Ok(Resolved::Owners(
            vec![Owner {
                api_version: format!("{GROUP}/v1"),
                kind: "SecretProviderClassPodStatus".into(),
                name: status_name.into(),
                uid: uid.clone(),
            }],
            Some(uid),
        ))
    }

    /// An event on the pod (best effort: failures are logged).
    pub async fn event(&self, pod: &PodRef, warning: bool, reason: &str, note: String) {
        self.publish_event(pod, warning, reason, note, None).await;
    }

    /// A Warning event on the pod about one object of its class: the
    /// file `path` showing version `version`. The event's related object is
    /// the SecretProviderClass with that file and version as its field
    /// path, so events about different objects or versions stay apart (the
    /// recorder would otherwise fold events of one reason on one pod into
    /// one, keeping the first note).
    pub async fn object_event(
        &self,
        pod: &PodRef,
        class: &str,
        path: &str,
        version: &str,
        reason: &str,
        note: String,
    ) {
        let related = k8s_openapi::api::core::v1::ObjectReference {
            api_version: Some(format!("{GROUP}/v1")),
            kind: Some("SecretProviderClass".into()),
            name: Some(class.to_owned()),
            namespace: Some(pod.namespace.clone()),
            field_path: Some(format!("spec.parameters.objects{{{path}@{version}}}")),
            ..Default::default()
        };
        self.publish_event(pod, true, reason, note, Some(related))
            .await;
    }

    async fn publish_event(
        &self,
        pod: &PodRef,
        warning: bool,
        reason: &str,
        note: String,
        related: Option<k8s_openapi::api::core::v1::ObjectReference>,
    ) {
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
            secondary: related,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_node_has_its_own_field_manager_within_the_api_limit() {
        assert_eq!(secret_field_manager("aks-pool-1"), "secretfs-aks-pool-1");
        let long = format!("{}.example.com", "n".repeat(200));
        let other = format!("{}.example.org", "n".repeat(200));
        let (a, b) = (secret_field_manager(&long), secret_field_manager(&other));
        assert!(a.len() <= FIELD_MANAGER_MAX && b.len() <= FIELD_MANAGER_MAX);
        assert!(a.starts_with("secretfs-nnn"), "{a}");
        assert_ne!(a, b, "names that differ only past the cut stay distinct");
        assert_eq!(a, secret_field_manager(&long), "stable across restarts");
    }
}
