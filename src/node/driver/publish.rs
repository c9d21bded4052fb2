//! NodePublishVolume and NodeUnpublishVolume: a republish refreshes the
//! pod's tokens; a new publish reads the class and its parameters, asks the
//! provider (or plans a lazy volume) and has [`super::build`] mount it.

use secretfs_csi::{
    ErrorCode, PublishRequest, Readiness, UnpublishRequest, VolumeError, VolumeManager, error_types,
};

use super::build::{Ask, Attach, Blueprint, Contents};
use super::context::{self, PublishContext};
use super::{Driver, Published, errors, fuse_snapshot, target};
use crate::names;
use crate::provider::FileMode;
use crate::provider::external::ProviderVolume;

#[async_trait::async_trait]
impl VolumeManager for Driver {
    async fn publish(&self, request: PublishRequest) -> Result<(), VolumeError> {
        let ctx = context::read(&request)?;
        let slot = self.slot(&request.target_path);
        let mut published = slot.lock().await;
        if let Some(existing) = published.as_mut() {
            // Kubelet's periodic republish: fresh tokens, no remount, no
            // vault call (rotation runs on its own schedule).
            if existing.request.pod.uid != ctx.pod.uid {
                return Err(VolumeError::new(
                    ErrorCode::FailedPrecondition,
                    error_types::UNEXPECTED_TARGET_PATH,
                    format!(
                        "target path {:?} is already mounted for another pod",
                        request.target_path
                    ),
                ));
            }
            republish_matches(existing, &request, &ctx)?;
            existing.request.service_account_tokens = ctx.tokens;
            existing.request.secrets = request.secrets;
            if let Some(live) = &existing.live {
                *live.lock().unwrap_or_else(|e| e.into_inner()) = existing.request.clone();
            }
            tracing::debug!(target = ?request.target_path, "republish: tokens refreshed");
            self.persist(&request.target_path, existing, false).await;
            return Ok(());
        }
        // Before any vault call: no symbolic link from pods/ on, nothing
        // but directories (created at the mount step, if missing).
        if let Err(err) = target::find(&request.target_path) {
            self.metrics.publish_failed("unknown", err.error_type);
            return Err(err);
        }
        let mut label = String::from("unknown");
        let mut new = match self.publish_new(&request, ctx, &mut label).await {
            Ok(new) => new,
            Err(err) => {
                self.metrics.publish_failed(&label, err.error_type);
                return Err(err);
            }
        };
        self.metrics.published(new.provider.name());
        self.track(&request.target_path, &new);
        self.sync(&request.target_path, &mut new).await;
        self.check_expiry(&request.target_path, &mut new).await;
        self.persist(&request.target_path, &new, true).await;
        tracing::info!(
            target = ?request.target_path,
            pod = %new.request.pod.name,
            namespace = %new.request.pod.namespace,
            objects = new.versions.len(),
            "published"
        );
        *published = Some(new);
        Ok(())
    }

    async fn unpublish(&self, request: UnpublishRequest) -> Result<(), VolumeError> {
        // Only a kubelet volume path is unmounted or removed.
        context::check_unpublish_target(&request.target_path)?;
        let slot = self.slot(&request.target_path);
        let mut published = slot.lock().await;
        let target = request.target_path.clone();
        // Walked without following symbolic links. A publish never mounts
        // through one, so a target with one holds nothing of ours unless it
        // was swapped in after the mount: then nothing is touched (the
        // unmount would follow the link) and the error says what to fix.
        let found = match target::find(&target) {
            Ok(found) => found,
            Err(err) if err.code == ErrorCode::InvalidArgument && published.is_none() => {
                tracing::warn!(target = ?target, reason = %err.message, "unpublish: nothing of ours is mounted there; left as it is");
                drop(published);
                self.forget_slot(&request.target_path);
                return Ok(());
            }
            Err(err) if err.code == ErrorCode::InvalidArgument => {
                return Err(VolumeError::new(
                    ErrorCode::FailedPrecondition,
                    error_types::UNEXPECTED_TARGET_PATH,
                    format!(
                        "{}; a volume is mounted there and stays until the path is restored",
                        err.message
                    ),
                ));
            }
            Err(err) => return Err(err),
        };
        let taken = published.take();
        let had_volume = taken.is_some();
        // The pod's container names are not needed once its audited volume
        // is gone (a pod with two audited volumes reads them again once).
        if let (Some(p), Some(auditor)) = (&taken, &self.auditor)
            && p.audit.is_some()
        {
            auditor.forget_pod(&p.request.pod.uid);
        }
        {
            let mut tally = self.fuse.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(tracked) = tally.live.remove(&request.target_path) {
                let counts = fuse_snapshot(&tracked.core);
                for (r, v) in tally.retired.iter_mut().zip(counts) {
                    *r += v;
                }
            }
        }
        let result = tokio::task::spawn_blocking(move || -> Result<(), VolumeError> {
            match taken {
                Some(p) => p.mounted.unmount().map_err(|e| {
                    VolumeError::new(
                        ErrorCode::Internal,
                        error_types::FAILED_TO_UNMOUNT,
                        format!("unmounting {target:?} failed: {e}"),
                    )
                })?,
                // Not ours (a previous process, or already gone): unmount a
                // leftover secretfs mount, leave anything else alone.
                None => target::unmount_stale(&target)?,
            }
            target::remove(&target, found)
        })
        .await
        .map_err(|e| {
            VolumeError::new(
                ErrorCode::Internal,
                error_types::FAILED_TO_UNMOUNT,
                format!("unmount task failed: {e}"),
            )
        })?;
        drop(published);
        if let Some(syncer) = &self.syncer {
            syncer.forget(&request.target_path.to_string_lossy());
        }
        match &result {
            Ok(()) => self.metrics.unpublished(had_volume),
            Err(_) => self.metrics.unpublish_failed(),
        }
        if result.is_ok() {
            self.forget_expiry(&request.target_path);
            self.forget(&request.target_path).await;
            self.forget_slot(&request.target_path);
        }
        result
    }

    /// Ready when classes can be read and the providers this node depends
    /// on answer (see [`crate::node::health`]).
    async fn readiness(&self) -> Readiness {
        match self.classes.readiness().await {
            Readiness::Ready => {}
            not_ready => return not_ready,
        }
        crate::node::health::providers_ready(&self.providers, &self.providers_in_use()).await
    }
}

impl Driver {
    /// Mounts a new volume. `provider_label` is set to the class's provider
    /// as soon as the class is read (for the metrics of a failure; the class
    /// is not read twice, which would double the wait on a slow API).
    pub(super) async fn publish_new(
        &self,
        request: &PublishRequest,
        ctx: PublishContext,
        provider_label: &mut String,
    ) -> Result<Published, VolumeError> {
        let class = self
            .classes
            .get(&ctx.pod.namespace, &ctx.class)
            .await
            .map_err(|e| {
                VolumeError::new(
                    ErrorCode::Unavailable,
                    error_types::SECRET_PROVIDER_CLASS_UNAVAILABLE,
                    e.to_string(),
                )
            })?
            .ok_or_else(|| errors::class_not_found(&ctx.pod.namespace, &ctx.class))?;
        let audited = match class
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(names::ANNOTATION_AUDIT))
            .map(String::as_str)
        {
            None => false,
            Some(crate::node::audit::AUDIT_READS) if self.auditor.is_some() => true,
            Some(crate::node::audit::AUDIT_READS) => {
                return Err(VolumeError::invalid(format!(
                    "SecretProviderClass {}/{}: annotation {} is set but this node has no audit log: remove the annotation, or run the node with --audit-log",
                    ctx.pod.namespace,
                    ctx.class,
                    names::ANNOTATION_AUDIT
                )));
            }
            Some(other) => {
                return Err(VolumeError::invalid(format!(
                    "SecretProviderClass {}/{}: annotation {} is {other:?}: use reads, or remove it",
                    ctx.pod.namespace,
                    ctx.class,
                    names::ANNOTATION_AUDIT
                )));
            }
        };
        let spec = class.spec;
        if !spec.provider.is_empty() {
            provider_label.clone_from(&spec.provider);
        }
        let secret_objects = spec.secret_objects.clone();
        let interval = match spec.parameters.get(names::PARAM_ROTATION_INTERVAL) {
            Some(text) => Some(crate::duration::parse(text).map_err(|e| {
                VolumeError::invalid(format!(
                    "SecretProviderClass {}/{}: parameter {}: {e}",
                    ctx.pod.namespace,
                    ctx.class,
                    names::PARAM_ROTATION_INTERVAL
                ))
            })?),
            None => None,
        };
        let volume = ProviderVolume::new(
            &ctx.class,
            &request.target_path,
            request.volume_context.iter(),
        );
        let kubelet_keys = volume.kubelet_keys.clone();
        let provider = self
            .providers
            .lookup(&spec.provider, || volume)
            .map_err(|e| errors::unknown_provider(&ctx.pod.namespace, &ctx.class, &e))?;

        // Files are readable by the pod's fsGroup, not by everyone.
        let (gid, default_mode) = match request.mount_group {
            Some(group) => (group, FileMode::new(0o640).unwrap_or_default()),
            None => (0, FileMode::DEFAULT),
        };
        let mount_request = self.mount_request(Ask {
            parameters: spec.parameters,
            pod: ctx.pod,
            tokens: ctx.tokens,
            secrets: request.secrets.clone(),
            default_mode,
            interval,
        });
        let lazy = match mount_request
            .parameters
            .get(names::PARAM_FETCH)
            .map(String::as_str)
        {
            None | Some("eager") => false,
            Some("lazy") => true,
            Some(other) => {
                return Err(VolumeError::invalid(format!(
                    "SecretProviderClass {}/{}: parameter {} is {other:?}: use eager (the default) or lazy",
                    mount_request.pod.namespace,
                    ctx.class,
                    names::PARAM_FETCH
                )));
            }
        };
        let (contents, versions, validity) = if lazy {
            // No vault call now: every file loads on its first access.
            let planned = provider
                .plan(&mount_request)
                .ok_or_else(|| {
                    VolumeError::invalid(format!(
                        "SecretProviderClass {}/{}: provider {:?} cannot mount lazily; remove {}",
                        mount_request.pod.namespace,
                        ctx.class,
                        provider.name(),
                        names::PARAM_FETCH
                    ))
                })?
                .map_err(|e| {
                    errors::provider_failed(&mount_request.pod.namespace, &ctx.class, &e)
                })?;
            (Contents::Lazy(planned), Vec::new(), Default::default())
        } else {
            let response = provider.mount(&mount_request).await.map_err(|e| {
                errors::provider_failed(&mount_request.pod.namespace, &ctx.class, &e)
            })?;
            for warning in &response.warnings {
                tracing::warn!(pod = %mount_request.pod.name, namespace = %mount_request.pod.namespace, class = %ctx.class, "{warning}");
            }
            (
                Contents::Ready(response.files),
                response.versions,
                response.validity,
            )
        };
        let blueprint = Blueprint {
            target: request.target_path.clone(),
            volume_id: request.volume_id.clone(),
            class: ctx.class,
            interval,
            provider,
            request: mount_request,
            gid,
            contents,
            versions,
            validity,
            secret_objects,
            kubelet_keys,
            audited,
        };
        self.build(blueprint, Attach::Mount).await
    }
}

/// A republish must be of the volume that is mounted: same class, volume
/// id and fsGroup. Anything else is refused, and nothing changes.
pub(super) fn republish_matches(
    existing: &Published,
    request: &PublishRequest,
    ctx: &PublishContext,
) -> Result<(), VolumeError> {
    let namespace = &existing.request.pod.namespace;
    let mismatch = |what: String| {
        Err(VolumeError::new(
            ErrorCode::AlreadyExists,
            error_types::VOLUME_MISMATCH,
            format!(
                "target path {:?} is already published with {what}; nothing was changed: a volume keeps \
                 its class while it is mounted (delete and recreate the pod to change it)",
                request.target_path
            ),
        ))
    };
    if existing.class != ctx.class {
        return mismatch(format!(
            "SecretProviderClass {namespace}/{}, not {namespace}/{}",
            existing.class, ctx.class
        ));
    }
    let volume_id = existing.mounted.volume().id();
    if volume_id.as_str() != request.volume_id {
        return mismatch(format!(
            "volume id {:?}, not {:?}",
            volume_id.as_str(),
            request.volume_id
        ));
    }
    if request.mount_group.unwrap_or(0) != existing.gid {
        return mismatch(format!(
            "fsGroup {}, not {}",
            existing.gid,
            request.mount_group.unwrap_or(0)
        ));
    }
    Ok(())
}
