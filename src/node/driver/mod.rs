//! The volume manager: NodePublishVolume and NodeUnpublishVolume for
//! secretfs volumes (docs/ARCHITECTURE.md, "Publish").
//!
//! Publish: read the request (pod, class, tokens, target path) → load the
//! SecretProviderClass from the pod's namespace → the provider authenticates
//! as the pod and returns the files → mount them read-only with the pod's
//! fsGroup. A publish of a target that is already mounted (kubelet's
//! periodic republish) only refreshes the pod's tokens. Unpublish unmounts
//! and removes the directory; it succeeds for unknown targets.

pub(crate) mod context;
mod errors;
mod lazy;
mod survival;
mod target;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use secretfs_csi::{
    ErrorCode, PublishRequest, Readiness, UnpublishRequest, VolumeError, VolumeManager, error_types,
};
use secretfs_fuse::{
    Content, FS_TYPE, FileSpec, MountOptions, MountedVolume, ReadMode, VolumeId, VolumeSpec,
};
use tokio::sync::Mutex;

use crate::names;
use crate::provider::external::ProviderVolume;
use crate::provider::{
    FileMode, MountRequest, MountedFile, ObjectVersion, Provider, ProviderRegistry,
};
use crate::spc::{SecretObject, SpcSource};

pub use context::{PublishContext, check_target};
pub use survival::{Persistence, RestoreReport};

/// Settings of the volume manager.
#[derive(Debug, Clone)]
pub struct DriverConfig {
    /// This node's name (`--nodeid`).
    pub node_name: String,
    pub read_mode: ReadMode,
    /// The node's refresh interval (`--rotation-poll-interval`): cached
    /// vault objects younger than [`cache_age`] of it are shared by
    /// publishes and scheduled refreshes.
    pub rotation_interval: Duration,
}

/// How old a cached object may be when a volume refreshing every
/// `interval` asks for it: a little less than the shortest wait between two
/// refreshes of one volume (the interval less 10 % jitter), so each object
/// is fetched about once per interval however many volumes use it.
pub fn cache_age(interval: Duration) -> Duration {
    interval.mul_f64(0.85)
}

/// One published volume.
struct Published {
    mounted: MountedVolume,
    provider: Arc<dyn Provider>,
    /// Group of the files (the pod's fsGroup, or 0).
    gid: u32,
    /// The SecretProviderClass's name (in the pod's namespace).
    class: String,
    /// The class's own refresh interval, if it sets one.
    interval: Option<Duration>,
    /// What the provider was last asked, with the newest tokens; rotation
    /// asks again with it.
    request: MountRequest,
    versions: Vec<ObjectVersion>,
    /// The files shown now (their bytes are shared with the volume).
    files: Vec<MountedFile>,
    /// The class's `secretObjects`.
    secret_objects: Vec<SecretObject>,
    /// Whether the pod status and Secrets match the files.
    synced: bool,
    /// When the provider last answered for this volume (publish or refresh).
    refreshed_at: std::time::SystemTime,
    /// Why the last refresh failed, if it did (no secrets in it).
    last_error: Option<String>,
    /// Lazy volumes: the request their files load with (kept current on
    /// republish, so a load uses the pod's newest tokens).
    live: Option<Arc<std::sync::Mutex<MountRequest>>>,
    /// Kubelet's `csi.storage.k8s.io/*` keys (tokens excluded), for an
    /// external provider after a restart.
    kubelet_keys: std::collections::BTreeMap<String, String>,
    /// When each file's object version is valid (by path), as the provider
    /// last reported it (lazy volumes: as the file's last load did; a
    /// refresh that drops the bytes keeps it).
    validity: std::collections::BTreeMap<String, crate::expiry::Validity>,
    /// Lazy volumes: each file's object (by path), from the provider's plan.
    lazy_objects: std::collections::BTreeMap<String, String>,
    /// The expiry warnings this pod got: (path, version, reason), so each
    /// is posted once per object version.
    warned: std::collections::BTreeSet<(String, String, String)>,
    /// Audited volumes (`secretfs.io/audit: reads`): each file's object and
    /// version, as the audit lines name them (kept current at each refresh).
    audit: Option<AuditVersions>,
}

/// The object and version of each file of an audited volume, by path.
type AuditVersions = Arc<std::sync::Mutex<HashMap<String, crate::node::audit::FileVersion>>>;

/// Each file's object and version, for the audit lines.
fn file_versions(
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

/// Per-target slot: operations on one target run one at a time; different
/// targets run in parallel.
type Slot = Arc<Mutex<Option<Published>>>;

/// The volume manager.
pub struct Driver {
    config: DriverConfig,
    classes: Arc<dyn SpcSource>,
    providers: Arc<ProviderRegistry>,
    targets: std::sync::Mutex<HashMap<PathBuf, Slot>>,
    syncer: Option<Arc<crate::node::sync::Syncer>>,
    /// FUSE request counts: live volumes, plus those already unmounted.
    fuse: std::sync::Mutex<FuseTally>,
    /// State directory and keeper, when volumes survive restarts.
    persist: Option<Arc<Persistence>>,
    /// When the rotation scheduler will refresh each volume next (it
    /// publishes its plan here; `secretfs status` shows it).
    schedule: std::sync::Mutex<HashMap<PathBuf, Scheduled>>,
    /// Where the driver counts publishes, refreshes and syncs.
    metrics: &'static crate::metrics::Metrics,
    /// How long before an object expires its pods are warned
    /// (`--expiry-warning`).
    expiry_warning: Duration,
    /// The node's `secretfs_object_expiry_timestamp_seconds` series.
    expiry: std::sync::Mutex<crate::expiry::ExpiryBoard>,
    /// A file not read for longer than this since it was mounted or
    /// rotated is "mounted but unused" (`--unread-threshold`).
    unread_threshold: Duration,
    /// Who reads what, for classes that ask (`secretfs.io/audit: reads`).
    auditor: Option<Arc<crate::node::audit::Auditor>>,
    /// The validities lazy files' loads learnt, for [`Driver::take_lazy_loads`].
    lazy_loads: Arc<lazy::LazyLoads>,
}

/// The rotation scheduler's plan for one volume.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scheduled {
    /// When the next refresh starts (the interval, less jitter, after the
    /// last one; sooner for a requested refresh; later after failures).
    pub next: std::time::SystemTime,
    /// Refreshes that failed in a row (0 after a success).
    pub failures: u32,
}

#[derive(Default)]
struct FuseTally {
    live: HashMap<PathBuf, Tracked>,
    retired: [u64; 9],
    /// The classes `secretfs_unread_files` has a series of.
    unread_series: std::collections::BTreeSet<crate::metrics::UnreadLabels>,
}

/// A live volume's core, and whose it is (for `secretfs_unread_files`).
struct Tracked {
    core: Arc<secretfs_fuse::FsCore>,
    labels: crate::metrics::UnreadLabels,
}

/// The default of `--unread-threshold`: a file no container read for a day
/// after it was mounted or rotated is reported as mounted but unused.
pub const DEFAULT_UNREAD_THRESHOLD: Duration = Duration::from_secs(24 * 3600);

/// What `secretfs status` and the troubleshooting guide call a file not
/// read for longer than `--unread-threshold`.
pub const UNUSED_HINT: &str = "mounted but unused: consider removing from the class";

/// Whether a file shown since `since` and first read at `first_read` is
/// unused at `now`: never read, for longer than `threshold`.
fn unused(
    reads: &secretfs_fuse::FileReads,
    now: std::time::SystemTime,
    threshold: Duration,
) -> bool {
    reads.first_read.is_none()
        && now
            .duration_since(reads.since)
            .is_ok_and(|shown| shown > threshold)
}

/// (lookups, getattrs, reads, readdirs, errors, then the errors of each:
/// lookup, getattr, read, readdir) of one core.
fn fuse_snapshot(core: &secretfs_fuse::FsCore) -> [u64; 9] {
    use std::sync::atomic::Ordering::Relaxed;
    let c = core.counters();
    [
        &c.lookups,
        &c.getattrs,
        &c.reads,
        &c.readdirs,
        &c.errors,
        &c.lookup_errors,
        &c.getattr_errors,
        &c.read_errors,
        &c.readdir_errors,
    ]
    .map(|a| a.load(Relaxed))
}

impl std::fmt::Debug for Driver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Driver")
            .field("config", &self.config)
            .field("providers", &self.providers)
            .finish_non_exhaustive()
    }
}

impl Driver {
    pub fn new(
        config: DriverConfig,
        classes: Arc<dyn SpcSource>,
        providers: impl Into<ProviderRegistry>,
    ) -> Self {
        Self {
            config,
            classes,
            providers: Arc::new(providers.into()),
            targets: std::sync::Mutex::new(HashMap::new()),
            syncer: None,
            fuse: std::sync::Mutex::new(FuseTally::default()),
            persist: None,
            schedule: std::sync::Mutex::new(HashMap::new()),
            metrics: crate::metrics::global(),
            expiry_warning: crate::expiry::DEFAULT_WARNING,
            expiry: std::sync::Mutex::new(crate::expiry::ExpiryBoard::default()),
            unread_threshold: DEFAULT_UNREAD_THRESHOLD,
            auditor: None,
            lazy_loads: Arc::default(),
        }
    }

    /// Audits the reads of classes annotated `secretfs.io/audit: reads`
    /// (without an auditor such a class is refused at publish).
    pub fn with_auditor(mut self, auditor: Arc<crate::node::audit::Auditor>) -> Self {
        self.auditor = Some(auditor);
        self
    }

    /// The mount option that audits a volume, and the versions it names.
    fn audit_option(
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

    /// Reports files not read for longer than `threshold` since they were
    /// mounted or rotated (default a day; `--unread-threshold`).
    pub fn with_unread_threshold(mut self, threshold: Duration) -> Self {
        self.unread_threshold = threshold;
        self
    }

    /// Sets `secretfs_unread_files`: per class of the node's volumes, the
    /// files never read for longer than `--unread-threshold`; a class with
    /// no volume left loses its series. Cheap (no FUSE request, one read
    /// lock per volume): called at each scrape of `/metrics` and each
    /// `secretfs status`.
    pub fn update_unread_files(&self) {
        let now = std::time::SystemTime::now();
        let mut counts: std::collections::BTreeMap<crate::metrics::UnreadLabels, i64> =
            std::collections::BTreeMap::new();
        let mut tally = self.fuse.lock().unwrap_or_else(|e| e.into_inner());
        for tracked in tally.live.values() {
            let unread = tracked
                .core
                .reads()
                .iter()
                .filter(|r| unused(r, now, self.unread_threshold))
                .count();
            *counts.entry(tracked.labels.clone()).or_default() += unread as i64;
        }
        for gone in tally
            .unread_series
            .iter()
            .filter(|l| !counts.contains_key(l))
        {
            self.metrics.unread_files.remove(gone);
        }
        for (labels, n) in &counts {
            self.metrics.unread_files.get_or_create(labels).set(*n);
        }
        tally.unread_series = counts.into_keys().collect();
    }

    /// Warns pods of objects expiring within `threshold` (default 7 days;
    /// `--expiry-warning`).
    pub fn with_expiry_warning(mut self, threshold: Duration) -> Self {
        self.expiry_warning = threshold;
        self
    }

    /// Counts into `metrics` instead of the process's registry (tests).
    pub fn with_metrics(mut self, metrics: &'static crate::metrics::Metrics) -> Self {
        self.metrics = metrics;
        self
    }

    /// The registry the driver counts into (the process's, unless
    /// [`Driver::with_metrics`]).
    pub fn metrics(&self) -> &'static crate::metrics::Metrics {
        self.metrics
    }

    /// The rotation scheduler's plan, replacing the previous one.
    pub fn set_schedule(&self, plan: HashMap<PathBuf, Scheduled>) {
        *self.schedule.lock().unwrap_or_else(|e| e.into_inner()) = plan;
    }

    /// The scheduler's plan for `target`, if a scheduler runs and has seen it.
    pub fn scheduled(&self, target: &Path) -> Option<Scheduled> {
        self.schedule
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(target)
            .copied()
    }

    /// Counts the FUSE requests of a volume served from now on.
    fn track(&self, target: &Path, published: &Published) {
        self.fuse
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .live
            .insert(
                target.to_owned(),
                Tracked {
                    core: published.mounted.volume().core().clone(),
                    labels: crate::metrics::UnreadLabels {
                        namespace: published.request.pod.namespace.clone(),
                        class: published.class.clone(),
                    },
                },
            );
    }

    /// FUSE requests that reached this process since it started:
    /// (lookups, getattrs, reads, readdirs, errors, lookup errors, getattr
    /// errors, read errors, readdir errors).
    pub fn fuse_counts(&self) -> [u64; 9] {
        let tally = self.fuse.lock().unwrap_or_else(|e| e.into_inner());
        tally.live.values().fold(tally.retired, |mut sum, tracked| {
            for (s, v) in sum.iter_mut().zip(fuse_snapshot(&tracked.core)) {
                *s += v;
            }
            sum
        })
    }

    /// Mirrors volumes to Kubernetes (pod statuses, `secretObjects`).
    pub fn with_syncer(mut self, syncer: Arc<crate::node::sync::Syncer>) -> Self {
        self.syncer = Some(syncer);
        self
    }

    /// Every target and its slot, now.
    fn slots(&self) -> Vec<(PathBuf, Slot)> {
        let targets = self.targets.lock().unwrap_or_else(|e| e.into_inner());
        targets
            .iter()
            .map(|(p, s)| (p.clone(), s.clone()))
            .collect()
    }

    fn slot(&self, target: &Path) -> Slot {
        let mut targets = self.targets.lock().unwrap_or_else(|e| e.into_inner());
        targets.entry(target.to_owned()).or_default().clone()
    }

    /// Every target with a volume or an operation under way, busy or not.
    pub fn targets(&self) -> Vec<PathBuf> {
        self.slots().into_iter().map(|(path, _)| path).collect()
    }

    /// The volumes mounted now and not busy (a publish or refresh holds a
    /// volume while it runs): what the rotation scheduler works on.
    pub fn volumes(&self) -> Vec<VolumeInfo> {
        let slots = self.slots();
        let mut out: Vec<VolumeInfo> = slots
            .into_iter()
            .filter_map(|(target, slot)| {
                let guard = slot.try_lock().ok()?;
                let published = guard.as_ref()?;
                Some(VolumeInfo {
                    target,
                    namespace: published.request.pod.namespace.clone(),
                    class: published.class.clone(),
                    interval: published.interval,
                })
            })
            .collect();
        out.sort_by(|a, b| a.target.cmp(&b.target));
        out
    }

    /// What every volume shows now, for `secretfs status` (never a value).
    pub async fn status(&self) -> Vec<VolumeStatus> {
        self.take_lazy_loads_of(false).await;
        self.update_unread_files();
        let slots = self.slots();
        let now = std::time::SystemTime::now();
        let mut out = Vec::new();
        for (target, slot) in slots {
            let guard = slot.lock().await;
            let Some(p) = guard.as_ref() else { continue };
            let since_epoch = |t: std::time::SystemTime| {
                t.duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs())
            };
            let scheduled = self.scheduled(&target);
            let reads: HashMap<String, secretfs_fuse::FileReads> = p
                .mounted
                .volume()
                .reads()
                .into_iter()
                .map(|r| (r.path.clone(), r))
                .collect();
            let millis = |t: std::time::SystemTime| {
                t.duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            };
            out.push(VolumeStatus {
                target: target.to_string_lossy().into_owned(),
                pod: format!("{}/{}", p.request.pod.namespace, p.request.pod.name),
                class: p.class.clone(),
                provider: p.provider.name().to_owned(),
                files: p
                    .files
                    .iter()
                    .map(|f| {
                        let version = p
                            .versions
                            .iter()
                            .find(|v| v.id == f.object_id)
                            .map(|v| v.version.clone())
                            .unwrap_or_default();
                        (
                            f.path.as_str(),
                            f.object_id.as_str(),
                            version,
                            f.contents.len(),
                        )
                    })
                    // A lazy volume's file shows once it has loaded (its
                    // validity stays known when a refresh drops the bytes).
                    .chain(p.lazy_objects.iter().filter_map(|(path, object)| {
                        let loaded = p.mounted.volume().contents(path).map(|c| c.len());
                        let validity = p.validity.get(path);
                        if loaded.is_none() && validity.is_none() {
                            return None;
                        }
                        Some((
                            path.as_str(),
                            object.as_str(),
                            validity.map(|v| v.version.clone()).unwrap_or_default(),
                            loaded.unwrap_or(0),
                        ))
                    }))
                    .map(|(path, object, version, bytes)| FileStatus {
                        path: path.to_owned(),
                        object: object.to_owned(),
                        version,
                        bytes,
                        expiry: p.validity.get(path).and_then(FileExpiry::of),
                        shown_since_ms: reads.get(path).map(|r| millis(r.since)),
                        first_read_ms: reads.get(path).and_then(|r| r.first_read).map(millis),
                        unused: reads
                            .get(path)
                            .is_some_and(|r| unused(r, now, self.unread_threshold)),
                    })
                    .collect(),
                objects: p
                    .versions
                    .iter()
                    .map(|v| ObjectStatus {
                        id: v.id.clone(),
                        version: v.version.clone(),
                    })
                    .collect(),
                refreshed_at: since_epoch(p.refreshed_at),
                interval_seconds: p.interval.map(|d| d.as_secs()),
                next_refresh_at: scheduled.map(|s| since_epoch(s.next)),
                refresh_failures: scheduled.map_or(0, |s| s.failures),
                synced: p.synced,
                last_error: p.last_error.clone(),
                unread_threshold_seconds: Some(self.unread_threshold.as_secs()),
                audit: p.audit.as_ref().map(|_| {
                    let problem = self.auditor.as_ref().and_then(|a| a.problem());
                    AuditStatus {
                        can_attribute: problem.is_none(),
                        problem,
                    }
                }),
            });
        }
        out.sort_by(|a, b| a.target.cmp(&b.target));
        out
    }

    /// The class source, for on-demand refresh requests.
    pub fn classes(&self) -> &Arc<dyn SpcSource> {
        &self.classes
    }

    /// Target paths of the volumes mounted now.
    pub async fn published(&self) -> Vec<PathBuf> {
        let slots = self.slots();
        let mut out = Vec::new();
        for (path, slot) in slots {
            if slot.lock().await.is_some() {
                out.push(path);
            }
        }
        out.sort();
        out
    }

    /// Asks the provider again for the volume at `target` (with the pod's
    /// newest tokens) and swaps in place every file whose bytes changed;
    /// files that appeared or disappeared are added or removed. Readers see
    /// the new bytes at the same paths, with no remount. An on-demand
    /// refresh requested now: only objects fetched from now on are used.
    /// (`secretfs demo` calls it; the admin socket and the scheduler use
    /// [`Driver::refresh_since`] and [`Driver::refresh_for`].)
    pub async fn refresh(&self, target: &Path) -> Result<RefreshOutcome, VolumeError> {
        self.refresh_since(target, std::time::Instant::now()).await
    }

    /// An on-demand refresh requested at `requested_at` (`secretfs
    /// refresh`, the class annotation): it skips the interval, and takes
    /// only objects fetched at or after `requested_at`. So when many volumes
    /// of one identity are refreshed for one request, the first asks the
    /// vault and the others reuse its answer: M objects cost M requests,
    /// not one per volume. The per-vault rate limit still applies.
    pub async fn refresh_since(
        &self,
        target: &Path,
        requested_at: std::time::Instant,
    ) -> Result<RefreshOutcome, VolumeError> {
        self.refresh_for(target, Freshness::Since(requested_at))
            .await
            .map_err(|e| e.error)
    }

    /// [`Driver::refresh`], answering from cached objects younger than
    /// `max_age` (`None`: the volume's own [`cache_age`]; the scheduler's
    /// periodic refreshes use that). Integration tests and benches drive
    /// refreshes through it.
    pub async fn refresh_with(
        &self,
        target: &Path,
        max_age: Option<Duration>,
    ) -> Result<RefreshOutcome, VolumeError> {
        let freshness = match max_age {
            Some(age) => Freshness::MaxAge(age),
            None => Freshness::Scheduled,
        };
        self.refresh_for(target, freshness)
            .await
            .map_err(|e| e.error)
    }

    /// A refresh taking cached objects as `freshness` allows; a failure
    /// carries the service's `Retry-After`, for the scheduler's backoff.
    pub async fn refresh_for(
        &self,
        target: &Path,
        freshness: Freshness,
    ) -> Result<RefreshOutcome, RefreshError> {
        self.take_lazy_loads_of(false).await;
        let slot = self.slot(target);
        let mut guard = slot.lock().await;
        let Some(published) = guard.as_mut() else {
            return Err(VolumeError::new(
                ErrorCode::NotFound,
                error_types::VOLUME_NOT_FOUND,
                format!("no volume is published at {target:?}"),
            )
            .into());
        };
        if published.live.is_some() {
            // A lazy volume keeps no bytes between intervals: its loaded
            // files are dropped (and wiped), and the next access loads them
            // again, fresh, through the shared cache.
            let volume = published.mounted.volume().clone();
            tokio::task::spawn_blocking(move || {
                for path in volume.file_paths() {
                    if volume.contents(&path).is_some() {
                        let _ = volume.unload(&path);
                    }
                }
            })
            .await
            .map_err(|e| {
                VolumeError::new(
                    ErrorCode::Internal,
                    error_types::FAILED_TO_ROTATE,
                    format!("refresh task failed: {e}"),
                )
            })?;
            published.refreshed_at = std::time::SystemTime::now();
            // A file the kernel held moved to a new version (inode): the
            // record must name it for the next process.
            self.persist(target, published, true).await;
            // Its pod status is still re-checked (a lazy volume writes no
            // Secrets).
            self.sync_if_due(target, published, false).await;
            // The last known validity of each loaded file is kept: time
            // passes for it (it may expire now).
            if self.check_expiry(target, published).await {
                self.persist(target, published, true).await;
            }
            return Ok(RefreshOutcome::default());
        }
        let mut request = published.request.clone();
        request.current = published.versions.clone();
        // Taken once the volume is ours, right before the provider looks
        // at its cache.
        match freshness {
            Freshness::Scheduled => {
                request.max_age =
                    cache_age(published.interval.unwrap_or(self.config.rotation_interval));
            }
            Freshness::MaxAge(age) => request.max_age = age,
            Freshness::Since(at) => request.fresh_since = Some(at),
        }
        let started = std::time::Instant::now();
        let provider_name = published.provider.name().to_owned();
        let response = match published.provider.mount(&request).await {
            Ok(response) => response,
            Err(e) => {
                let err =
                    errors::provider_failed(&published.request.pod.namespace, &published.class, &e);
                self.metrics
                    .refresh_failed(&provider_name, e.kind().as_str());
                published.last_error = Some(err.message.clone());
                let retry_after = match &e {
                    crate::provider::MountError::Objects(objects) => {
                        objects.errors().iter().filter_map(|o| o.retry_after).max()
                    }
                    _ => None,
                };
                // A vault that fails does not stop the re-check: a deleted
                // Secret or status object comes back with the last good
                // values.
                self.sync_if_due(target, published, false).await;
                // Time passes for the objects shown: they may expire now.
                if self.check_expiry(target, published).await {
                    self.persist(target, published, true).await;
                }
                return Err(RefreshError {
                    error: err,
                    retry_after,
                });
            }
        };
        let volume = published.mounted.volume().clone();
        let gid = published.gid;
        let files = response.files.clone();
        let outcome = tokio::task::spawn_blocking(move || apply(&volume, gid, &files))
            .await
            .map_err(|e| {
                VolumeError::new(
                    ErrorCode::Internal,
                    error_types::FAILED_TO_ROTATE,
                    format!("refresh task failed: {e}"),
                )
            })??;
        published.versions = response.versions;
        published.files = response.files;
        if let Some(audit) = &published.audit {
            *audit.lock().unwrap_or_else(|e| e.into_inner()) =
                file_versions(&published.files, &published.versions);
        }
        // Attributes can change without the bytes (a new `exp` on the same
        // version): the record must follow.
        let validity_changed = published.validity != response.validity;
        published.validity = response.validity;
        published.refreshed_at = std::time::SystemTime::now();
        published.last_error = None;
        self.metrics.refreshed(
            &provider_name,
            outcome.changed(),
            started.elapsed().as_secs_f64(),
        );
        if outcome.changed() {
            tracing::info!(target = ?target, replaced = outcome.replaced, added = outcome.added, removed = outcome.removed, "rotated");
            if let Some(syncer) = &self.syncer {
                let note = format!(
                    "secrets rotated in place: {} file(s) replaced, {} added, {} removed",
                    outcome.replaced, outcome.added, outcome.removed
                );
                syncer
                    .event(&published.request.pod, false, "MountRotationComplete", note)
                    .await;
            }
        }
        self.sync_if_due(target, published, outcome.changed()).await;
        let warned = self.check_expiry(target, published).await;
        if outcome.changed() || warned || validity_changed {
            self.persist(target, published, true).await;
        }
        Ok(outcome)
    }

    /// Mounts a new volume. `provider_label` is set to the class's provider
    /// as soon as the class is read (for the metrics of a failure; the class
    /// is not read twice, which would double the wait on a slow API).
    async fn publish_new(
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
        let class_name = ctx.class.clone();
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
        let kubelet_keys = ProviderVolume::new(
            &ctx.class,
            &request.target_path,
            request.volume_context.iter(),
        )
        .kubelet_keys;
        let provider = self
            .providers
            .lookup(&spec.provider, || {
                ProviderVolume::new(
                    &ctx.class,
                    &request.target_path,
                    request.volume_context.iter(),
                )
            })
            .map_err(|e| errors::unknown_provider(&ctx.pod.namespace, &ctx.class, &e))?;

        // Files are readable by the pod's fsGroup, not by everyone.
        let (gid, default_mode) = match request.mount_group {
            Some(group) => (group, FileMode::new(0o640).unwrap_or_default()),
            None => (0, FileMode::DEFAULT),
        };
        let mount_request = MountRequest {
            parameters: spec.parameters,
            pod: ctx.pod,
            service_account_tokens: ctx.tokens,
            secrets: request.secrets.clone(),
            default_mode,
            current: Vec::new(),
            node_name: self.config.node_name.clone(),
            max_age: cache_age(interval.unwrap_or(self.config.rotation_interval)),
            fresh_since: None,
        };
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
        let live = lazy.then(|| Arc::new(std::sync::Mutex::new(mount_request.clone())));
        let mut lazy_objects = std::collections::BTreeMap::new();
        let (response, files) = match &live {
            None => {
                let response = provider.mount(&mount_request).await.map_err(|e| {
                    errors::provider_failed(&mount_request.pod.namespace, &ctx.class, &e)
                })?;
                for warning in &response.warnings {
                    tracing::warn!(pod = %mount_request.pod.name, namespace = %mount_request.pod.namespace, class = %ctx.class, "{warning}");
                }
                let files = response
                    .files
                    .iter()
                    .map(|f| {
                        file_spec(
                            f,
                            gid,
                            ErrorCode::InvalidArgument,
                            error_types::FILE_WRITE_ERROR,
                        )
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                (response, files)
            }
            Some(live) => {
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
                    .map_err(|e| errors::provider_failed(&mount_request.pod.namespace, &ctx.class, &e))?;
                let sink = lazy::LoadSink {
                    loads: self.lazy_loads.clone(),
                    target: request.target_path.clone(),
                };
                let files = lazy_file_specs(&provider, live, &planned, gid, &sink)?;
                lazy_objects = planned_objects(&planned);
                (crate::provider::MountResponse::default(), files)
            }
        };
        let spec = VolumeSpec {
            id: VolumeId::new(&request.volume_id),
            dir_uid: 0,
            dir_gid: gid,
            files,
        };
        let target = request.target_path.clone();
        let audit = if audited {
            self.audit_option(
                &mount_request.pod,
                &ctx.class,
                &response.files,
                &response.versions,
            )
        } else {
            None
        };
        let options = MountOptions {
            read_mode: self.config.read_mode,
            audit: audit.as_ref().map(|(option, _)| option.clone()),
            ..MountOptions::default()
        };
        let runtime = tokio::runtime::Handle::current();
        let mounted = tokio::task::spawn_blocking(move || -> Result<MountedVolume, VolumeError> {
            // Made here, walked without following symbolic links; removed
            // again if the mount fails (a failed publish leaves nothing).
            let created = target::ensure(&target)?;
            MountedVolume::mount(spec, &target, &options, runtime).map_err(|e| {
                created.undo();
                VolumeError::new(
                    ErrorCode::Internal,
                    error_types::FAILED_TO_MOUNT,
                    format!("mounting {target:?} failed: {e}"),
                )
            })
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
            provider,
            gid,
            class: class_name,
            interval,
            request: mount_request,
            versions: response.versions,
            files: response.files,
            validity: response.validity,
            lazy_objects,
            warned: Default::default(),
            secret_objects,
            synced: false,
            refreshed_at: std::time::SystemTime::now(),
            last_error: None,
            live,
            kubelet_keys,
            audit: audit.map(|(_, table)| table),
        })
    }

    /// Syncs `published` after a refresh if its files `changed`, its last
    /// sync failed, or its periodic re-check is due.
    async fn sync_if_due(&self, target: &Path, published: &mut Published, changed: bool) {
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
    async fn sync(&self, target: &Path, published: &mut Published) {
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
}

impl Driver {
    /// Sets the node's expiry series of the volume at `target` and warns
    /// its pod of each object that has expired, is not valid yet or expires
    /// within the threshold: once per object version and reason (a Warning
    /// event and a log line, neither with a value). Whether a new warning
    /// was given (the record keeps which were).
    async fn check_expiry(&self, target: &Path, published: &mut Published) -> bool {
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

    /// Takes into their volumes what lazy files' loads learnt of their
    /// objects' validity (the expiry series, warnings and status follow, as
    /// for an eager volume's fetch). Run by the rotation scheduler as loads
    /// report; it waits for a volume that is busy.
    pub async fn take_lazy_loads(&self) {
        self.take_lazy_loads_of(true).await;
    }

    /// [`Driver::take_lazy_loads`]; without `wait`, a busy volume's reports
    /// are left for the next time (before a refresh and `secretfs status`,
    /// which must not wait for another volume's publish).
    async fn take_lazy_loads_of(&self, wait: bool) {
        let mut by_target: std::collections::BTreeMap<
            PathBuf,
            Vec<(String, Option<crate::expiry::Validity>)>,
        > = std::collections::BTreeMap::new();
        for (target, path, validity) in self.lazy_loads.take() {
            by_target.entry(target).or_default().push((path, validity));
        }
        for (target, loads) in by_target {
            let slot = {
                let targets = self.targets.lock().unwrap_or_else(|e| e.into_inner());
                match targets.get(&target) {
                    Some(slot) => slot.clone(),
                    None => continue,
                }
            };
            let mut guard = if wait {
                slot.lock().await
            } else if let Ok(guard) = slot.try_lock() {
                guard
            } else {
                self.lazy_loads.put_back(
                    loads
                        .into_iter()
                        .map(|(path, validity)| (target.clone(), path, validity)),
                );
                continue;
            };
            let Some(published) = guard.as_mut() else {
                continue;
            };
            if published.live.is_none() {
                continue;
            }
            let mut changed = false;
            for (path, validity) in loads {
                if !published.lazy_objects.contains_key(&path) {
                    continue;
                }
                changed |= match validity {
                    Some(v) => published.validity.insert(path, v.clone()) != Some(v),
                    None => published.validity.remove(&path).is_some(),
                };
            }
            let warned = self.check_expiry(&target, published).await;
            if changed || warned {
                self.persist(&target, published, true).await;
            }
        }
    }

    /// Resolves once a lazy file's load learnt something for
    /// [`Driver::take_lazy_loads`].
    pub async fn lazy_loaded(&self) {
        self.lazy_loads.reported().await;
    }

    /// Sets the node's expiry series of the volume at `target`: one per
    /// file whose object has an expiry.
    fn set_expiry_series(&self, target: &Path, published: &Published) {
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
    fn forget_expiry(&self, target: &Path) {
        let changes = self
            .expiry
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .set(target, Default::default());
        self.metrics.object_expiry_changed(changes);
    }

    /// Drops the slot of a target that holds no volume.
    fn forget_slot(&self, target: &Path) {
        let mut targets = self.targets.lock().unwrap_or_else(|e| e.into_inner());
        targets.remove(target);
    }
}

/// A republish must be of the volume that is mounted: same class, volume
/// id and fsGroup. Anything else is refused, and nothing changes.
fn republish_matches(
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

/// Readiness: which providers the mounted volumes use.
impl Driver {
    /// The providers of the volumes mounted now (a volume busy with a
    /// publish or refresh is skipped: that call exercises its provider).
    fn providers_in_use(&self) -> std::collections::BTreeSet<String> {
        self.slots()
            .into_iter()
            .filter_map(|(_, slot)| {
                let guard = slot.try_lock().ok()?;
                Some(guard.as_ref()?.provider.name().to_owned())
            })
            .collect()
    }

    /// What is wrong with the providers this node depends on (empty: all
    /// answer); `--provider-health-check` logs it.
    pub async fn provider_problems(&self) -> Vec<String> {
        crate::node::health::provider_problems(&self.providers, &self.providers_in_use()).await
    }
}

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
                None => unmount_stale(&target)?,
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

/// One volume in `secretfs status`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct VolumeStatus {
    pub target: String,
    pub pod: String,
    pub class: String,
    pub provider: String,
    pub files: Vec<FileStatus>,
    /// Every object version the provider reported (as the pod status holds
    /// them). A file's own version is in [`FileStatus`] when its object id
    /// is one of these; an external provider's object ids (`secret/foo`)
    /// need not be its file paths, so its versions are only here.
    #[serde(default)]
    pub objects: Vec<ObjectStatus>,
    /// Unix seconds of the last answer from the provider.
    pub refreshed_at: u64,
    /// The class's own interval; `None` means the node's.
    pub interval_seconds: Option<u64>,
    /// Unix seconds of the rotation scheduler's next refresh of this volume
    /// (interval, jitter, backoff and `Retry-After` included); `None` when
    /// rotation is off or the scheduler has not seen the volume yet.
    #[serde(default)]
    pub next_refresh_at: Option<u64>,
    /// Scheduled refreshes that failed in a row.
    #[serde(default)]
    pub refresh_failures: u32,
    pub synced: bool,
    pub last_error: Option<String>,
    /// The node's `--unread-threshold` (seconds): a file not read for
    /// longer than it since it was shown is `unused`. `None` from a node
    /// too old to say.
    #[serde(default)]
    pub unread_threshold_seconds: Option<u64>,
    /// Set for a volume whose class audits its reads
    /// (`secretfs.io/audit: reads`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit: Option<AuditStatus>,
}

/// Auditing of one volume in `secretfs status`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AuditStatus {
    /// Whether this node can attribute reads to pods.
    pub can_attribute: bool,
    /// Why it cannot, and what to do.
    pub problem: Option<String>,
}

/// One file in `secretfs status`: where it comes from, never its bytes.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FileStatus {
    pub path: String,
    pub object: String,
    pub version: String,
    pub bytes: usize,
    /// When its object version is valid, if known (the built-in Azure
    /// provider's attributes and certificates; an external provider's PEM
    /// certificate files; a lazy file's once it loaded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiry: Option<FileExpiry>,
    /// Unix milliseconds since when its contents are shown: the mount, or
    /// the rotation that brought them (for a volume taken over after a
    /// restart: as recorded, else the takeover).
    #[serde(default)]
    pub shown_since_ms: Option<u64>,
    /// Unix milliseconds of the first read of those contents (a read that
    /// reached the driver: in page-cache mode only the first of each
    /// version does); `None`: not read since they were shown.
    #[serde(default)]
    pub first_read_ms: Option<u64>,
    /// Not read for longer than the node's `--unread-threshold`: mounted
    /// but unused.
    #[serde(default)]
    pub unused: bool,
}

/// A file's validity in `secretfs status`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FileExpiry {
    /// Unix seconds when it expires: the earlier of Key Vault's `exp` and
    /// the certificate chain's earliest `notAfter`.
    pub expires_at: Option<i64>,
    /// What decided `expires_at` (`Key Vault exp`, `certificate notAfter
    /// (leaf)`, `certificate notAfter (chain certificate 2 of 3)`).
    pub expires_by: Option<String>,
    /// Unix seconds from when it is valid: the later of Key Vault's `nbf`
    /// and the chain's latest `notBefore`.
    pub valid_from: Option<i64>,
    /// What decided `valid_from`.
    pub valid_from_by: Option<String>,
}

impl FileExpiry {
    /// `None` when nothing is known.
    pub fn of(validity: &crate::expiry::Validity) -> Option<FileExpiry> {
        let until = validity.expires_at();
        let from = validity.valid_from();
        if until.is_none() && from.is_none() {
            return None;
        }
        Some(FileExpiry {
            expires_at: until.as_ref().map(|b| b.at),
            expires_by: until.map(|b| b.source),
            valid_from: from.as_ref().map(|b| b.at),
            valid_from_by: from.map(|b| b.source),
        })
    }
}

/// One object version in `secretfs status`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ObjectStatus {
    pub id: String,
    pub version: String,
}

/// A published volume, as the rotation scheduler sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeInfo {
    pub target: PathBuf,
    pub namespace: String,
    pub class: String,
    pub interval: Option<Duration>,
}

/// Which cached vault objects a refresh may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freshness {
    /// Younger than the volume's own [`cache_age`] (scheduled refreshes).
    Scheduled,
    /// Younger than this.
    MaxAge(Duration),
    /// Fetched at or after this instant (an on-demand refresh requested
    /// then).
    Since(std::time::Instant),
}

/// A failed refresh.
#[derive(Debug, Clone)]
pub struct RefreshError {
    pub error: VolumeError,
    /// The longest `Retry-After` a failing object's service sent.
    pub retry_after: Option<Duration>,
}

impl From<VolumeError> for RefreshError {
    fn from(error: VolumeError) -> Self {
        RefreshError {
            error,
            retry_after: None,
        }
    }
}

/// What a refresh changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RefreshOutcome {
    pub replaced: usize,
    pub added: usize,
    pub removed: usize,
}

impl RefreshOutcome {
    pub fn changed(&self) -> bool {
        self.replaced + self.added + self.removed > 0
    }
}

/// The files a volume shows, as (path, object): an eager volume's fetched
/// files; a lazy volume's planned files (each one's validity is known once
/// it loaded).
fn shown_objects(published: &Published) -> Box<dyn Iterator<Item = (&str, &str)> + '_> {
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

/// The entries of a lazy volume: each loads on first access.
fn lazy_file_specs(
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
fn planned_objects(
    planned: &[crate::provider::PlannedFile],
) -> std::collections::BTreeMap<String, String> {
    planned
        .iter()
        .map(|f| (f.path.clone(), f.object_id.clone()))
        .collect()
}

/// [`lazy_file_specs`] from the provider's plan for `request`, and each
/// file's object ([`planned_objects`]).
fn lazy_specs(
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
fn file_spec(
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

/// Makes `volume` show exactly `files`, touching only what differs.
pub(crate) fn apply(
    volume: &secretfs_fuse::Volume,
    gid: u32,
    files: &[crate::provider::MountedFile],
) -> Result<RefreshOutcome, VolumeError> {
    let rotate_error = |e: secretfs_fuse::VolumeError| {
        VolumeError::new(
            ErrorCode::Internal,
            error_types::FAILED_TO_ROTATE,
            e.to_string(),
        )
    };
    let mut outcome = RefreshOutcome::default();
    let wanted: std::collections::HashSet<&str> = files.iter().map(|f| f.path.as_str()).collect();
    for path in volume.file_paths() {
        if !wanted.contains(path.as_str()) {
            volume.remove(&path).map_err(rotate_error)?;
            outcome.removed += 1;
        }
    }
    for file in files {
        match volume.contents(&file.path) {
            Some(current) if *current == *file.contents => {}
            Some(_) => {
                volume
                    .replace(&file.path, file.contents.clone())
                    .map_err(rotate_error)?;
                outcome.replaced += 1;
            }
            // Not loaded yet (lazy): it loads fresh on first access.
            None if volume.file_paths().iter().any(|p| p == &file.path) => {}
            None => {
                let spec = file_spec(
                    file,
                    gid,
                    ErrorCode::Internal,
                    error_types::FAILED_TO_ROTATE,
                )?;
                volume.add(spec).map_err(rotate_error)?;
                outcome.added += 1;
            }
        }
    }
    Ok(outcome)
}

/// Unmounts `target` if it is a secretfs mount; anything else is left.
fn unmount_stale(target: &Path) -> Result<(), VolumeError> {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let wanted = target.to_string_lossy();
    let ours = mounts.lines().any(|line| {
        let mut fields = line.split(' ');
        let (_, mount_point, fs_type) = (fields.next(), fields.next(), fields.next());
        mount_point == Some(wanted.as_ref()) && fs_type == Some(FS_TYPE)
    });
    if !ours {
        return Ok(());
    }
    rustix::mount::unmount(target, rustix::mount::UnmountFlags::DETACH).map_err(|e| {
        VolumeError::new(
            ErrorCode::Internal,
            error_types::FAILED_TO_UNMOUNT,
            format!("unmounting stale {target:?} failed: {e}"),
        )
    })
}
