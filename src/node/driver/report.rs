//! What a volume reports after each publish and refresh: its Secrets and
//! pod status mirrored to Kubernetes (the syncer), and its objects' expiry
//! (the node's series and the pod's warnings).

use std::path::Path;

use super::{Driver, Published};
use crate::spc::SecretObject;

impl Driver {
    /// Syncs `published` after a refresh if its files `changed`, its last
    /// sync failed, or its periodic re-check is due.
    pub(super) async fn sync_if_due(
        &self,
        target: &Path,
        published: &mut Published,
        changed: bool,
    ) {
        let recheck = self
            .syncer
            .as_ref()
            .is_some_and(|s| s.due(&target.to_string_lossy()));
        if changed || !published.synced || recheck {
            self.sync(target, published).await;
        }
    }

    /// Mirrors `published` to Kubernetes if a syncer is configured; a
    /// failure is reported (log, event, metric) and retried at the next
    /// refresh, it never fails the mount.
    pub(super) async fn sync(&self, target: &Path, published: &mut Published) {
        let Some(syncer) = &self.syncer else {
            return;
        };
        let target_text = target.to_string_lossy();
        // A lazy volume holds no values to mirror: its class's Secrets are
        // not written (the pod status is).
        let secret_objects: &[SecretObject] = if published.live.is_some() {
            &[]
        } else {
            &published.secret_objects
        };
        let input = crate::node::sync::SyncInput {
            pod: &published.request.pod,
            class: &published.class,
            target: &target_text,
            secret_objects,
            files: &published.files,
            versions: &published.versions,
        };
        match syncer.sync(input).await {
            Ok(writes) => {
                published.synced = true;
                if writes > 0 && !published.secret_objects.is_empty() {
                    self.metrics
                        .sync_k8s_secret
                        .get_or_create(&crate::metrics::ProviderLabels {
                            provider: published.provider.name().to_owned(),
                            os_type: "linux".into(),
                        })
                        .inc();
                }
            }
            Err(err) => {
                published.synced = false;
                self.metrics.sync_errors.inc();
                tracing::warn!(target = ?target, error = %err, "sync to Kubernetes failed; retried at the next refresh");
                syncer
                    .event(
                        &published.request.pod,
                        true,
                        "FailedToCreateSecret",
                        err.to_string(),
                    )
                    .await;
            }
        }
    }

    /// Sets the node's expiry series of the volume at `target` and warns
    /// its pod of each object that has expired, is not valid yet or expires
    /// within the threshold: once per object version and reason (a Warning
    /// event and a log line, neither with a value). Whether a new warning
    /// was given (the record keeps which were).
    pub(super) async fn check_expiry(&self, target: &Path, published: &mut Published) -> bool {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        self.set_expiry_series(target, published);
        let pod = &published.request.pod;
        let mut due = Vec::new();
        for (path, object_id) in shown_objects(published) {
            let Some(validity) = published.validity.get(path) else {
                continue;
            };
            if let Some(condition) = validity.condition(now, self.expiry_warning) {
                let key = (
                    path.to_owned(),
                    validity.version.clone(),
                    condition.reason().to_owned(),
                );
                if !published.warned.contains(&key) {
                    let message = condition.message(path, object_id, &validity.version, now);
                    due.push((key, condition.reason(), message));
                }
            }
        }
        // Only the versions shown now are remembered.
        let shown: std::collections::BTreeSet<(&str, &str)> = published
            .validity
            .iter()
            .map(|(path, v)| (path.as_str(), v.version.as_str()))
            .collect();
        published
            .warned
            .retain(|(path, version, _)| shown.contains(&(path.as_str(), version.as_str())));
        let warned = !due.is_empty();
        for (key, reason, message) in due {
            tracing::warn!(
                pod = %pod.name,
                namespace = %pod.namespace,
                class = %published.class,
                reason,
                "{message}"
            );
            if let Some(syncer) = &self.syncer {
                syncer
                    .object_event(pod, &published.class, &key.0, &key.1, reason, message)
                    .await;
            }
            published.warned.insert(key);
        }
        warned
    }

    /// Sets the node's expiry series of the volume at `target`: one per
    /// file whose object has an expiry.
    pub(super) fn set_expiry_series(&self, target: &Path, published: &Published) {
        let pod = &published.request.pod;
        let series = shown_objects(published)
            .filter_map(|(path, object_id)| {
                let until = published.validity.get(path)?.expires_at()?;
                let labels = crate::expiry::ExpiryLabels::new(
                    &pod.namespace,
                    &published.class,
                    path,
                    object_id,
                );
                Some((labels, until.at))
            })
            .collect();
        let changes = self
            .expiry
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .set(target, series);
        self.metrics.object_expiry_changed(changes);
    }

    /// Removes the volume at `target` from the node's expiry series.
    pub(super) fn forget_expiry(&self, target: &Path) {
        let changes = self
            .expiry
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .set(target, Default::default());
        self.metrics.object_expiry_changed(changes);
    }
}

/// The files a volume shows, as (path, object): an eager volume's fetched
/// files; a lazy volume's planned files (each one's validity is known once
/// it loaded).
pub(super) fn shown_objects(published: &Published) -> Box<dyn Iterator<Item = (&str, &str)> + '_> {
    if published.live.is_some() {
        Box::new(
            published
                .lazy_objects
                .iter()
                .map(|(path, object)| (path.as_str(), object.as_str())),
        )
    } else {
        Box::new(
            published
                .files
                .iter()
                .map(|f| (f.path.as_str(), f.object_id.as_str())),
        )
    }
}
