//! What a publish and a takeover after a restart both make a volume of: its
//! file entries (eager or lazy) and its audit.

use std::collections::HashMap;
use std::sync::Arc;

use secretfs_csi::{ErrorCode, VolumeError, error_types};
use secretfs_fuse::{Content, FileSpec};

use super::{Driver, lazy};
use crate::provider::{MountRequest, MountedFile, ObjectVersion, Provider};

/// The object and version of each file of an audited volume, by path.
pub(super) type AuditVersions =
    Arc<std::sync::Mutex<HashMap<String, crate::node::audit::FileVersion>>>;

/// Each file's object and version, for the audit lines.
pub(super) fn file_versions(
    files: &[MountedFile],
    versions: &[ObjectVersion],
) -> HashMap<String, crate::node::audit::FileVersion> {
    files
        .iter()
        .map(|f| {
            let version = versions
                .iter()
                .find(|v| v.id == f.object_id)
                .map(|v| v.version.clone())
                .unwrap_or_default();
            (
                f.path.clone(),
                crate::node::audit::FileVersion {
                    object: f.object_id.clone(),
                    version,
                },
            )
        })
        .collect()
}

impl Driver {
    /// The mount option that audits a volume, and the versions it names.
    pub(super) fn audit_option(
        &self,
        pod: &crate::provider::PodRef,
        class: &str,
        files: &[MountedFile],
        versions: &[ObjectVersion],
    ) -> Option<(secretfs_fuse::OpenAudit, AuditVersions)> {
        let auditor = self.auditor.as_ref()?;
        let table: AuditVersions = Arc::new(std::sync::Mutex::new(file_versions(files, versions)));
        let observer = auditor.observer(
            crate::node::audit::AuditedVolume {
                namespace: pod.namespace.clone(),
                pod: pod.name.clone(),
                pod_uid: pod.uid.clone(),
                class: class.to_owned(),
            },
            table.clone(),
        );
        if let Some(problem) = auditor.problem() {
            tracing::warn!(pod = %pod.name, namespace = %pod.namespace, class = %class, "audited volume, but auditing cannot attribute reads on this node: {problem}");
        }
        Some((secretfs_fuse::OpenAudit(observer), table))
    }
}

/// The entries of a lazy volume: each loads on first access.
pub(super) fn lazy_file_specs(
    provider: &Arc<dyn Provider>,
    live: &Arc<std::sync::Mutex<MountRequest>>,
    planned: &[crate::provider::PlannedFile],
    gid: u32,
    sink: &lazy::LoadSink,
) -> Result<Vec<FileSpec>, VolumeError> {
    planned
        .iter()
        .map(|f| {
            let source = lazy::LazyFile::new(provider.clone(), live.clone(), &f.path, sink.clone());
            FileSpec::new(
                &f.path,
                f.mode.bits(),
                0,
                gid,
                Content::Lazy(Arc::new(source)),
            )
            .map_err(|e| VolumeError::invalid(format!("object {}: {e}", f.object_id)))
        })
        .collect()
}

/// Each planned file's object, by path.
pub(super) fn planned_objects(
    planned: &[crate::provider::PlannedFile],
) -> std::collections::BTreeMap<String, String> {
    planned
        .iter()
        .map(|f| (f.path.clone(), f.object_id.clone()))
        .collect()
}

/// [`lazy_file_specs`] from the provider's plan for `request`, and each
/// file's object ([`planned_objects`]).
pub(super) fn lazy_specs(
    provider: &Arc<dyn Provider>,
    live: &Arc<std::sync::Mutex<MountRequest>>,
    request: &MountRequest,
    gid: u32,
    sink: &lazy::LoadSink,
) -> Result<(Vec<FileSpec>, std::collections::BTreeMap<String, String>), VolumeError> {
    let planned = provider
        .plan(request)
        .ok_or_else(|| {
            VolumeError::invalid(format!(
                "provider {:?} cannot mount lazily",
                provider.name()
            ))
        })?
        .map_err(|e| {
            VolumeError::new(
                ErrorCode::Unavailable,
                error_types::PROVIDER_ERROR,
                format!(
                    "restored volume of pod {}/{}: {e}",
                    request.pod.namespace, request.pod.name
                ),
            )
        })?;
    Ok((
        lazy_file_specs(provider, live, &planned, gid, sink)?,
        planned_objects(&planned),
    ))
}

/// The file-system entry of a provider's file: owned by root, group `gid`.
pub(super) fn file_spec(
    file: &MountedFile,
    gid: u32,
    code: ErrorCode,
    error_type: &'static str,
) -> Result<FileSpec, VolumeError> {
    FileSpec::new(
        &file.path,
        file.mode.bits(),
        0,
        gid,
        Content::Ready(file.contents.clone()),
    )
    .map_err(|e| VolumeError::new(code, error_type, format!("object {}: {e}", file.object_id)))
}
