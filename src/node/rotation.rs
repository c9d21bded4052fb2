//! The node's refresh scheduler: every published volume is refreshed once
//! per interval (its class's `secretfs.io/rotation-poll-interval`, or
//! `--rotation-poll-interval`), spread with jitter so a node's volumes do not
//! all ask at once; a failed refresh keeps serving the last good bytes and
//! is retried with exponential backoff (1 s, 2 s, 4 s, … up to the interval
//! and at most `max_backoff`, 5 min), never sooner than the vault's
//! `Retry-After`; a class annotated with a new
//! `secretfs.io/refresh-requested-at` value is refreshed at once. The plan
//! (each volume's next refresh) is published to the driver for `secretfs
//! status`.
//!
//! Vault cost: a refresh asks the provider, which answers from the shared
//! cache when another volume of the same identity already fetched the
//! object in this interval; so a cycle costs one vault request per distinct
//! object, not per volume. A requested refresh takes only objects fetched
//! since the request, so it too costs one request per distinct object.
//!
//! Its clock is tokio's (`tokio::time::Instant`), as the rate limiter's:
//! tests pause and advance it instead of sleeping, so no assertion depends
//! on how loaded the machine is. Only the instant of a refresh request is
//! read from the real clock, because the shared cache compares it with
//! when objects were really fetched.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

use tokio::sync::{Semaphore, mpsc};

use crate::names::ANNOTATION_REFRESH_REQUESTED_AT;
use crate::node::driver::{Driver, Freshness, Scheduled, VolumeInfo};

/// Scheduler settings.
#[derive(Debug, Clone)]
pub struct RotationConfig {
    /// Default refresh interval (`--rotation-poll-interval`).
    pub interval: Duration,
    /// Each wait is shortened by a random share up to this (0.0–1.0).
    pub jitter: f64,
    /// Refreshes running at once.
    pub concurrency: usize,
    /// How often the scheduler looks for due volumes.
    pub tick: Duration,
    /// How often classes are checked for a refresh request.
    pub request_check: Duration,
    /// Longest wait after failures (a `Retry-After` included).
    pub max_backoff: Duration,
}

impl Default for RotationConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(120),
            jitter: 0.1,
            concurrency: 8,
            tick: Duration::from_secs(1),
            request_check: Duration::from_secs(5),
            max_backoff: Duration::from_secs(300),
        }
    }
}

struct Due {
    next: Instant,
    failures: u32,
    running: bool,
    /// The next refresh was requested at this instant (real clock): it
    /// takes only objects fetched since.
    requested_at: Option<std::time::Instant>,
    /// The class's refresh-request annotation when last looked at.
    requested: Option<String>,
}

/// A small non-cryptographic generator for jitter.
struct Jitter(u64);

impl Jitter {
    fn new() -> Self {
        let seed = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0x9e37_79b9, |d| d.as_nanos() as u64)
            | 1;
        Self(seed)
    }

    /// `wait` shortened by a random share in `0..=share`.
    fn apply(&mut self, wait: Duration, share: f64) -> Duration {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        let unit = (self.0 >> 11) as f64 / (1u64 << 53) as f64;
        wait.mul_f64(1.0 - share.clamp(0.0, 1.0) * unit)
    }
}

/// Runs the scheduler until the driver is dropped by everyone else.
pub fn spawn(driver: Arc<Driver>, config: RotationConfig) -> tokio::task::JoinHandle<()> {
    tokio::spawn(run(driver, config))
}

async fn run(driver: Arc<Driver>, config: RotationConfig) {
    let permits = Arc::new(Semaphore::new(config.concurrency.max(1)));
    let (done_tx, mut done_rx) =
        mpsc::unbounded_channel::<(PathBuf, Result<(), Option<Duration>>)>();
    let mut due: HashMap<PathBuf, Due> = HashMap::new();
    let mut jitter = Jitter::new();
    let mut tick = tokio::time::interval(config.tick);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_request_check = Instant::now();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            // A lazy file loaded: its object's validity feeds the expiry
            // series and warnings now, not at the volume's next refresh.
            // (Apart: it waits for the volume, which a publish may hold.)
            _ = driver.lazy_loaded() => {
                let driver = driver.clone();
                tokio::spawn(async move { driver.take_lazy_loads().await });
                continue;
            }
            Some((target, result)) = done_rx.recv() => {
                if let Some(entry) = due.get_mut(&target) {
                    entry.running = false;
                    let interval = driver_interval(&driver, &target).unwrap_or(config.interval);
                    let wait = match result {
                        Ok(()) => {
                            entry.failures = 0;
                            jitter.apply(interval, config.jitter)
                        }
                        Err(retry_after) => {
                            entry.failures += 1;
                            failure_wait(
                                jitter.apply(backoff(entry.failures, interval.min(config.max_backoff)), config.jitter),
                                retry_after,
                                config.max_backoff,
                            )
                        }
                    };
                    // A refresh requested while this one ran is still due.
                    entry.next = if entry.requested_at.is_some() {
                        Instant::now()
                    } else {
                        Instant::now() + wait
                    };
                }
                // A permit is free again: start the next due volume now,
                // not at the next tick.
            }
        }
        if Arc::strong_count(&driver) == 1 {
            driver.set_schedule(HashMap::new());
            return;
        }
        let volumes = driver.volumes();
        let now = Instant::now();
        // `volumes` leaves out volumes busy right now (a republish holds
        // them): only a volume that is gone loses its place in the schedule.
        let published: std::collections::HashSet<PathBuf> = driver.targets().into_iter().collect();
        due.retain(|target, d| d.running || published.contains(target));
        for volume in &volumes {
            due.entry(volume.target.clone()).or_insert_with(|| Due {
                next: now + jitter.apply(volume.interval.unwrap_or(config.interval), config.jitter),
                failures: 0,
                running: false,
                requested_at: None,
                requested: None,
            });
        }
        if now.duration_since(last_request_check) >= config.request_check {
            last_request_check = now;
            check_requests(&driver, &volumes, &mut due).await;
        }
        // The most overdue first, so with more due volumes than permits
        // none waits longer than its turn.
        let mut ready: Vec<(Instant, &VolumeInfo)> = volumes
            .iter()
            .filter_map(|v| {
                let entry = due.get(&v.target)?;
                (!entry.running && entry.next <= now).then_some((entry.next, v))
            })
            .collect();
        ready.sort_by_key(|(next, _)| *next);
        for (_, volume) in ready {
            let Some(entry) = due.get_mut(&volume.target) else {
                continue;
            };
            let Ok(permit) = permits.clone().try_acquire_owned() else {
                break;
            };
            entry.running = true;
            // Requested refreshes take only what was fetched since the
            // request (the first volume asks the vault, the others share
            // its answer); scheduled ones may share what another volume
            // fetched in this interval.
            let freshness = match entry.requested_at.take() {
                Some(at) => Freshness::Since(at),
                None => Freshness::Scheduled,
            };
            let (driver, done, target) = (driver.clone(), done_tx.clone(), volume.target.clone());
            tokio::spawn(async move {
                let result = match driver.refresh_for(&target, freshness).await {
                    Ok(_) => Ok(()),
                    Err(err) => {
                        tracing::warn!(target = ?target, error = %err.error.message, retry_after_ms = err.retry_after.map(|d| d.as_millis() as u64), "refresh failed; the volume keeps its last good contents");
                        Err(err.retry_after)
                    }
                };
                drop(permit);
                let _ = done.send((target, result));
            });
        }
        publish_plan(&driver, &due);
    }
}

/// Tells the driver when each volume is refreshed next (`secretfs status`).
fn publish_plan(driver: &Driver, due: &HashMap<PathBuf, Due>) {
    let (now, wall) = (Instant::now(), SystemTime::now());
    driver.set_schedule(
        due.iter()
            .map(|(target, d)| {
                let next = if d.running {
                    wall
                } else {
                    wall + d.next.saturating_duration_since(now)
                };
                (
                    target.clone(),
                    Scheduled {
                        next,
                        failures: d.failures,
                    },
                )
            })
            .collect(),
    );
}

/// The wait after a failed refresh: the (jittered) backoff, but never less
/// than the service's `Retry-After` (itself capped at `max`, and not
/// shortened by jitter).
fn failure_wait(backoff: Duration, retry_after: Option<Duration>, max: Duration) -> Duration {
    backoff.max(retry_after.unwrap_or_default().min(max))
}

fn driver_interval(driver: &Driver, target: &PathBuf) -> Option<Duration> {
    driver
        .volumes()
        .into_iter()
        .find(|v| &v.target == target)
        .and_then(|v| v.interval)
}

/// 1 s, 2 s, 4 s, … up to `cap`.
fn backoff(failures: u32, cap: Duration) -> Duration {
    Duration::from_secs(1u64 << failures.min(16).saturating_sub(1)).min(cap)
}

/// Marks the volumes of classes whose refresh-request annotation changed as
/// due now.
async fn check_requests(driver: &Driver, volumes: &[VolumeInfo], due: &mut HashMap<PathBuf, Due>) {
    let (noticed, noticed_at) = (Instant::now(), std::time::Instant::now());
    let mut classes: Vec<(&str, &str)> = volumes
        .iter()
        .map(|v| (v.namespace.as_str(), v.class.as_str()))
        .collect();
    classes.sort();
    classes.dedup();
    for (namespace, name) in classes {
        let Ok(Some(class)) = driver.classes().get(namespace, name).await else {
            continue;
        };
        let requested = class
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(ANNOTATION_REFRESH_REQUESTED_AT))
            .cloned();
        for volume in volumes
            .iter()
            .filter(|v| v.namespace == namespace && v.class == name)
        {
            if let Some(entry) = due.get_mut(&volume.target) {
                if entry.requested.is_some() && entry.requested != requested && requested.is_some()
                {
                    tracing::info!(target = ?volume.target, class = %name, "refresh requested");
                    // Seen now: the volumes of the class take only objects
                    // fetched from now on (a failure backoff is skipped
                    // too, the vault's Retry-After is not: its bucket
                    // stays paused).
                    entry.next = noticed;
                    entry.requested_at = Some(noticed_at);
                }
                entry.requested = requested.clone().or(Some(String::new()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let cap = Duration::from_secs(60);
        let waits: Vec<u64> = (1..=8).map(|f| backoff(f, cap).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 60, 60]);
    }

    #[test]
    fn a_failure_waits_for_the_retry_after_unshortened_up_to_the_cap() {
        let max = Duration::from_secs(300);
        let s = Duration::from_secs;
        assert_eq!(failure_wait(s(2), None, max), s(2));
        assert_eq!(failure_wait(s(2), Some(s(30)), max), s(30));
        assert_eq!(failure_wait(s(60), Some(s(30)), max), s(60));
        assert_eq!(failure_wait(s(2), Some(s(3600)), max), max);
    }

    #[test]
    fn jitter_only_shortens_and_stays_within_its_share() {
        let mut jitter = Jitter::new();
        let wait = Duration::from_secs(100);
        let samples: Vec<Duration> = (0..1000).map(|_| jitter.apply(wait, 0.1)).collect();
        assert!(
            samples
                .iter()
                .all(|d| *d <= wait && *d >= Duration::from_secs(90))
        );
        let distinct: std::collections::HashSet<_> = samples.iter().collect();
        assert!(distinct.len() > 900, "spread, not constant");
    }
}
