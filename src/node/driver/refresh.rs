//! A refresh: ask the provider again for a mounted volume (with the pod's
//! newest tokens) and swap in place what changed, with no remount; the
//! rotation scheduler, `secretfs refresh` and the demo drive it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use secretfs_csi::{ErrorCode, VolumeError, error_types};

use super::build::{file_spec, file_versions};
use super::{Driver, cache_age, errors};

impl Driver {
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
    pub(super) async fn take_lazy_loads_of(&self, wait: bool) {
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
