//! What the driver's volumes show, for `secretfs status`, the rotation
//! scheduler and `secretfs_unread_files`: never a value.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use super::Driver;

/// The default of `--unread-threshold`: a file no container read for a day
/// after it was mounted or rotated is reported as mounted but unused.
pub const DEFAULT_UNREAD_THRESHOLD: Duration = Duration::from_secs(24 * 3600);

/// What `secretfs status` and the troubleshooting guide call a file not
/// read for longer than `--unread-threshold`.
pub const UNUSED_HINT: &str = "mounted but unused: consider removing from the class";

/// Whether a file shown since `since` and first read at `first_read` is
/// unused at `now`: never read, for longer than `threshold`.
pub(super) fn unused(
    reads: &secretfs_fuse::FileReads,
    now: std::time::SystemTime,
    threshold: Duration,
) -> bool {
    reads.first_read.is_none()
        && now
            .duration_since(reads.since)
            .is_ok_and(|shown| shown > threshold)
}

impl Driver {
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
