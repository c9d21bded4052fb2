//! The one builder of a mounted volume, for a publish and for a takeover
//! after a restart: its file entries (eager or lazy), its audit, its mount
//! options, and the mount itself (new) or the kept connection (adopted).

use std::collections::{BTreeMap, HashMap};
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use secretfs_csi::{ErrorCode, VolumeError, error_types};
use secretfs_fuse::{
    Content, FileReads, FileSpec, MountOptions, MountedVolume, SessionState, Volume, VolumeId,
    VolumeSpec,
};
use secretfs_secrets::{SecretMap, SecretString};

use super::{Driver, Published, cache_age, lazy, target};
use crate::expiry::Validity;
use crate::provider::{
    FileMode, MountRequest, MountedFile, ObjectVersion, PlannedFile, PodRef, Provider,
};
use crate::spc::SecretObject;

/// What a volume is made of: from a publish (the class and the provider's
/// answer or plan), or from a state record and the keeper's bytes (a
/// takeover after a restart).
pub(super) struct Blueprint {
    pub target: PathBuf,
    pub volume_id: String,
    /// The SecretProviderClass's name (in the pod's namespace).
    pub class: String,
    /// The class's own refresh interval, if it sets one.
    pub interval: Option<Duration>,
    pub provider: Arc<dyn Provider>,
    /// What the provider is asked, with the newest tokens.
    pub request: MountRequest,
    /// Group of the files and of the root directory.
    pub gid: u32,
    pub contents: Contents,
    pub versions: Vec<ObjectVersion>,
    pub validity: BTreeMap<String, Validity>,
    /// The class's `secretObjects`.
    pub secret_objects: Vec<SecretObject>,
    /// Kubelet's `csi.storage.k8s.io/*` keys (tokens excluded).
    pub kubelet_keys: BTreeMap<String, String>,
    /// The class asks for `secretfs.io/audit: reads`.
    pub audited: bool,
}

/// A volume's files.
pub(super) enum Contents {
    /// Their bytes: fetched now, or kept by the keeper.
    Ready(Vec<MountedFile>),
    /// The provider's plan: each file loads on its first access.
    Lazy(Vec<PlannedFile>),
}

/// How a built volume reaches the kernel.
pub(super) enum Attach {
    /// A new mount on the target (its directory made if missing, removed
    /// again if the mount fails).
    Mount,
    /// The previous process's FUSE connection, its session, and which files
    /// were read (the takeover moves every name to a new version; the
    /// contents are the same).
    Adopt {
        fd: OwnedFd,
        state: SessionState,
        reads: Vec<FileReads>,
    },
}

/// What a new volume's provider is asked: the class's parameters, the pod
/// and its tokens, the publish secrets, the files' default mode.
pub(super) struct Ask {
    pub parameters: BTreeMap<String, String>,
    pub pod: PodRef,
    pub tokens: Option<SecretString>,
    pub secrets: SecretMap,
    pub default_mode: FileMode,
    /// The class's own refresh interval, if it sets one.
    pub interval: Option<Duration>,
}

impl Driver {
    /// The [`MountRequest`] of a volume, at its publish and at its takeover
    /// after a restart: nothing shown yet, cached objects as old as its
    /// refresh interval allows.
    pub(super) fn mount_request(&self, ask: Ask) -> MountRequest {
        MountRequest {
            parameters: ask.parameters,
            pod: ask.pod,
            service_account_tokens: ask.tokens,
            secrets: ask.secrets,
            default_mode: ask.default_mode,
            current: Vec::new(),
            node_name: self.config.node_name.clone(),
            max_age: cache_age(ask.interval.unwrap_or(self.config.rotation_interval)),
            fresh_since: None,
        }
    }

    /// Builds the volume `blueprint` describes and attaches it: its file
    /// entries (ready or lazy), its audit, its mount options, then the
    /// blocking mount or takeover. The one place a [`Published`] is made.
    pub(super) async fn build(
        &self,
        blueprint: Blueprint,
        attach: Attach,
    ) -> Result<Published, VolumeError> {
        let b = blueprint;
        let (specs, files, lazy_objects, live) = match &b.contents {
            Contents::Ready(files) => {
                let specs = files
                    .iter()
                    .map(|f| {
                        file_spec(
                            f,
                            b.gid,
                            ErrorCode::InvalidArgument,
                            error_types::FILE_WRITE_ERROR,
                        )
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                (specs, files.clone(), BTreeMap::new(), None)
            }
            Contents::Lazy(planned) => {
                // Loads ask with the newest request (republish keeps it
                // current).
                let live = Arc::new(std::sync::Mutex::new(b.request.clone()));
                let sink = lazy::LoadSink {
                    loads: self.lazy_loads.clone(),
                    target: b.target.clone(),
                };
                let specs = lazy_file_specs(&b.provider, &live, planned, b.gid, &sink)?;
                (specs, Vec::new(), planned_objects(planned), Some(live))
            }
        };
        let audit = if b.audited {
            self.audit_option(&b.request.pod, &b.class, &files, &b.versions)
        } else {
            None
        };
        let spec = VolumeSpec {
            id: VolumeId::new(&b.volume_id),
            dir_uid: 0,
            dir_gid: b.gid,
            files: specs,
        };
        let options = MountOptions {
            read_mode: self.config.read_mode,
            audit: audit.as_ref().map(|(option, _)| option.clone()),
            ..MountOptions::default()
        };
        let runtime = tokio::runtime::Handle::current();
        let target = b.target.clone();
        let failed = |message: String| {
            VolumeError::new(ErrorCode::Internal, error_types::FAILED_TO_MOUNT, message)
        };
        let mounted = tokio::task::spawn_blocking(move || -> Result<MountedVolume, VolumeError> {
            match attach {
                Attach::Mount => {
                    // Made here, walked without following symbolic links;
                    // removed again if the mount fails (a failed publish
                    // leaves nothing).
                    let created = target::ensure(&target)?;
                    MountedVolume::mount(spec, &target, &options, runtime).map_err(|e| {
                        created.undo();
                        failed(format!("mounting {target:?} failed: {e}"))
                    })
                }
                Attach::Adopt { fd, state, reads } => {
                    let volume = Volume::new(spec).map_err(|e| failed(e.to_string()))?;
                    volume.restore_reads(&reads);
                    MountedVolume::adopt(volume, &target, fd, &state, &options, runtime)
                        .map_err(|e| failed(e.to_string()))
                }
            }
        })
        .await
        .map_err(|e| {
            VolumeError::new(
                ErrorCode::Internal,
                error_types::FAILED_TO_MOUNT,
                format!("mount task failed: {e}"),
            )
        })??;
        Ok(Published {
            mounted,
            provider: b.provider,
            gid: b.gid,
            class: b.class,
            interval: b.interval,
            request: b.request,
            versions: b.versions,
            files,
            validity: b.validity,
            lazy_objects,
            warned: Default::default(),
            secret_objects: b.secret_objects,
            synced: false,
            refreshed_at: std::time::SystemTime::now(),
            last_error: None,
            live,
            kubelet_keys: b.kubelet_keys,
            audit: audit.map(|(_, table)| table),
        })
    }
}

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
