//! The volume manager: NodePublishVolume and NodeUnpublishVolume for
//! secretfs volumes (docs/ARCHITECTURE.md, "Publish").
//!
//! Publish: read the request (pod, class, tokens, target path) → load the
//! SecretProviderClass from the pod's namespace → the provider authenticates
//! as the pod and returns the files → mount them read-only with the pod's
//! fsGroup. A publish of a target that is already mounted (kubelet's
//! periodic republish) only refreshes the pod's tokens. Unpublish unmounts
//! and removes the directory; it succeeds for unknown targets.
//!
//! The [`Driver`] by job:
//! - this file: the driver's state (its volumes' slots, FUSE counters, the
//!   scheduler's plan) and its settings;
//! - [`publish`]: publish, republish and unpublish; [`build`]: the one
//!   builder of a mounted volume, for a publish and for a takeover;
//!   [`context`]: the publish request as kubelet sends it; [`target`]: the
//!   target directory; [`lazy`]: files that load on first access;
//! - [`refresh`]: rotation in place; [`report`]: what a volume tells
//!   Kubernetes (Secrets, pod status, expiry events) and the metrics;
//! - [`status`]: `secretfs status` and the unread-files gauge;
//! - [`survival`]: the volumes kept across restarts (state records, the
//!   keeper's blobs, the takeover); [`errors`]: user-facing messages.

mod build;
pub(crate) mod context;
mod errors;
mod lazy;
mod publish;
mod refresh;
mod report;
mod status;
mod survival;
mod target;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use secretfs_fuse::{MountedVolume, ReadMode};
use tokio::sync::Mutex;

use crate::provider::{MountRequest, MountedFile, ObjectVersion, Provider, ProviderRegistry};
use crate::spc::{SecretObject, SpcSource};
use build::AuditVersions;

pub use context::{PublishContext, check_target};
pub(crate) use refresh::apply;
pub use refresh::{Freshness, RefreshError, RefreshOutcome};
pub use status::{
    AuditStatus, DEFAULT_UNREAD_THRESHOLD, FileExpiry, FileStatus, ObjectStatus, UNUSED_HINT,
    VolumeInfo, VolumeStatus,
};
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

    /// Reports files not read for longer than `threshold` since they were
    /// mounted or rotated (default a day; `--unread-threshold`).
    pub fn with_unread_threshold(mut self, threshold: Duration) -> Self {
        self.unread_threshold = threshold;
        self
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

    /// The class source, for on-demand refresh requests.
    pub fn classes(&self) -> &Arc<dyn SpcSource> {
        &self.classes
    }

    /// Drops the slot of a target that holds no volume.
    fn forget_slot(&self, target: &Path) {
        let mut targets = self.targets.lock().unwrap_or_else(|e| e.into_inner());
        targets.remove(target);
    }

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
