//! A start takes over the volumes of the previous process: each record with
//! its connection from the keeper is served again (built as a publish
//! builds, [`crate::node::driver`]'s `build`); the rest are unmounted and
//! their pods named.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine;
use secretfs_fuse::SessionState;

use super::blob::decode_secrets;
use super::record::{ReadRecord, Record, b64};
use crate::node::driver::Driver;
use crate::node::driver::build::{Ask, Attach, Blueprint, Contents};
use crate::node::driver::target::unmount_stale;
use crate::node::keeper::{KeeperClient, Kept};
use crate::provider::external::ProviderVolume;
use crate::provider::{FileMode, MountRequest, MountedFile, PlannedFile, Provider};
use crate::spc::SecretObject;

/// The provider of a restored volume that was not available at start: looked
/// up again at each refresh until it is.
pub(super) struct Deferred {
    name: String,
    registry: Arc<crate::provider::ProviderRegistry>,
    volume: ProviderVolume,
    found: std::sync::Mutex<Option<Arc<dyn crate::provider::Provider>>>,
}

#[async_trait::async_trait]
impl crate::provider::Provider for Deferred {
    fn name(&self) -> &str {
        &self.name
    }

    async fn mount(
        &self,
        request: &MountRequest,
    ) -> Result<crate::provider::MountResponse, crate::provider::MountError> {
        let cached = self.found.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let provider = match cached {
            Some(provider) => provider,
            None => {
                let provider = self
                    .registry
                    .lookup(&self.name, || self.volume.clone())
                    .map_err(|e| {
                        crate::provider::MountError::config(
                            crate::provider::ErrorKind::Transient,
                            e.to_string(),
                        )
                    })?;
                *self.found.lock().unwrap_or_else(|e| e.into_inner()) = Some(provider.clone());
                provider
            }
        };
        provider.mount(request).await
    }
}

/// What a start did with the volumes it found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RestoreReport {
    /// Volumes served again, with no remount.
    pub adopted: usize,
    /// Volumes whose mount could not be kept; their pods need a restart.
    pub lost: Vec<String>,
}

impl Driver {
    /// Serves again the volumes of a previous process (call once, before
    /// serving CSI).
    pub async fn restore(&self) -> RestoreReport {
        let mut report = RestoreReport::default();
        let Some(persist) = self.persist.clone() else {
            return report;
        };
        let records = persist.records();
        let listing = persist.clone();
        let listed = tokio::task::spawn_blocking(move || {
            listing
                .keeper
                .as_ref()
                .map(|link| link.with(KeeperClient::list))
        })
        .await;
        let mut kept: BTreeMap<String, Kept> = match listed {
            Ok(Some(Ok(entries))) => entries.into_iter().map(|k| (k.key.clone(), k)).collect(),
            Ok(Some(Err(e))) => {
                tracing::error!(error = %e, "cannot reach the keeper: volumes of the previous process cannot be taken over");
                BTreeMap::new()
            }
            _ => BTreeMap::new(),
        };
        for record in records {
            let key = record.target.to_string_lossy().into_owned();
            let target = record.target.clone();
            let pod = format!(
                "{}/{} (uid {})",
                record.pod.namespace, record.pod.name, record.pod.uid
            );
            let outcome = match kept.remove(&key) {
                Some(entry) => self.adopt(record, entry).await,
                None => Err(
                    "its FUSE connection was not kept (no keeper, or the keeper restarted)"
                        .to_owned(),
                ),
            };
            match outcome {
                Ok(()) => {
                    tracing::info!(target = ?target, pod = %pod, "volume taken over from the previous process");
                    report.adopted += 1;
                }
                Err(reason) => {
                    tracing::warn!(
                        target = ?target,
                        pod = %pod,
                        "volume lost: {reason}; restart the pod (its next republish mounts a fresh volume, which reaches only new containers)"
                    );
                    let stale = target.clone();
                    let _ = tokio::task::spawn_blocking(move || unmount_stale(&stale)).await;
                    self.forget(&target).await;
                    report.lost.push(pod);
                }
            }
        }
        // Connections the keeper holds for volumes nobody recorded.
        for (key, entry) in kept {
            drop(entry);
            tracing::warn!(target = %key, "the keeper held a volume with no state record: dropped");
            let target = PathBuf::from(&key);
            let _ = tokio::task::spawn_blocking(move || unmount_stale(&target)).await;
            self.forget(Path::new(&key)).await;
        }
        self.metrics().restored(report.adopted, report.lost.len());
        report
    }

    pub(super) async fn adopt(&self, record: Record, entry: Kept) -> Result<(), String> {
        let secrets = decode_secrets(&entry.blob)
            .map_err(|e| format!("the keeper's copy is unusable ({e})"))?;
        let interval = record.interval_seconds.map(std::time::Duration::from_secs);
        let request = self.mount_request(Ask {
            parameters: record.parameters.clone(),
            pod: record.pod.clone(),
            tokens: secrets.tokens,
            secrets: secrets.secrets,
            default_mode: FileMode::new(record.default_mode).unwrap_or_default(),
            interval,
        });
        let kubelet_keys = record.kubelet_keys.clone();
        let volume_of = || ProviderVolume {
            class: record.class.clone(),
            target_path: record.target.clone(),
            kubelet_keys: kubelet_keys.clone(),
        };
        let provider = match self.providers.lookup(&record.provider, volume_of) {
            Ok(provider) => provider,
            // An external provider restarting with the node plugin: the
            // kept files are served meanwhile and each refresh looks again.
            Err(e) if !record.lazy => {
                tracing::warn!(
                    target = ?record.target,
                    provider = %record.provider,
                    error = %e,
                    "provider not available yet: serving the kept files; refreshes look for it again"
                );
                Arc::new(Deferred {
                    name: record.provider.clone(),
                    registry: self.providers.clone(),
                    volume: volume_of(),
                    found: std::sync::Mutex::new(None),
                })
            }
            Err(e) => return Err(format!("its provider is not available ({e})")),
        };
        let contents = if record.lazy {
            Contents::Lazy(plan_restored(&provider, &request)?)
        } else {
            let mut files = Vec::new();
            for f in &record.files {
                let contents = secrets
                    .files
                    .get(&f.path)
                    .cloned()
                    .ok_or_else(|| format!("the keeper has no bytes for {:?}", f.path))?;
                files.push(MountedFile {
                    path: f.path.clone(),
                    mode: FileMode::new(f.mode).unwrap_or_default(),
                    contents,
                    object_id: f.object.clone(),
                });
            }
            Contents::Ready(files)
        };
        let state = SessionState {
            init_request: b64()
                .decode(&record.fuse_init_request)
                .map_err(|e| e.to_string())?,
            init_reply: b64()
                .decode(&record.fuse_init_reply)
                .map_err(|e| e.to_string())?,
            versions: b64()
                .decode(&record.fuse_versions)
                .map_err(|e| e.to_string())?,
        };
        // Which files were read, as recorded: the takeover moves every name
        // to a new version, but the contents are the same.
        let reads = record.reads.iter().map(ReadRecord::reads).collect();
        let blueprint = Blueprint {
            target: record.target.clone(),
            volume_id: record.volume_id.clone(),
            class: record.class.clone(),
            interval,
            provider,
            request,
            gid: record.gid,
            contents,
            versions: record.versions.clone(),
            validity: record.validity.clone(),
            secret_objects: record.secret_objects.clone(),
            kubelet_keys: record.kubelet_keys.clone(),
            audited: record.audited,
        };
        let attach = Attach::Adopt {
            fd: entry.fd,
            state,
            reads,
        };
        let mut published = self.build(blueprint, attach).await.map_err(|e| e.message)?;
        // An audited volume stays audited (its kernel connection still
        // sends opens); without an auditor now, its opens are answered as
        // any volume's and the kernel stops sending them.
        if record.audited && published.audit.is_none() {
            tracing::warn!(target = ?record.target, "an audited volume taken over without --audit-log: its reads are no longer audited");
        }
        published.synced = record.synced;
        published.refreshed_at =
            std::time::UNIX_EPOCH + std::time::Duration::from_secs(record.refreshed_at);
        published.warned = record.expiry_warned.iter().cloned().collect();
        // The process after this one must know the inode numbers this one
        // gave the files (every name moved to a new version at the takeover).
        self.persist(&record.target, &published, true).await;
        self.track(&record.target, &published);
        // Its expiry series at once; warnings not given yet come at its
        // first refresh (none is posted before CSI is served).
        self.set_expiry_series(&record.target, &published);
        if let Some(syncer) = &self.syncer {
            // Before anything is published: the Secrets this volume writes
            // keep its owners at the next apply by any volume of this node.
            let secret_objects: &[SecretObject] = if published.live.is_some() {
                &[]
            } else {
                &published.secret_objects
            };
            syncer.adopt(
                &record.target.to_string_lossy(),
                &published.request.pod,
                &published.class,
                secret_objects,
            );
        }
        *self.slot(&record.target).lock().await = Some(published);
        Ok(())
    }
}

/// The files of a restored lazy volume, from its provider's plan.
fn plan_restored(
    provider: &Arc<dyn Provider>,
    request: &MountRequest,
) -> Result<Vec<PlannedFile>, String> {
    provider
        .plan(request)
        .ok_or_else(|| format!("provider {:?} cannot mount lazily", provider.name()))?
        .map_err(|e| {
            format!(
                "restored volume of pod {}/{}: {e}",
                request.pod.namespace, request.pod.name
            )
        })
}
