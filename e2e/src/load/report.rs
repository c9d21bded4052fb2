//! What a run measured, and how it is printed.

use std::fmt;
use std::time::Duration;

#[derive(Debug, Clone, Default)]
pub struct Latencies(Vec<u64>);

impl Latencies {
    pub(super) fn new(mut samples: Vec<u64>) -> Self {
        samples.sort_unstable();
        Self(samples)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The `q` quantile (0.0–1.0), nearest rank.
    pub fn quantile(&self, q: f64) -> Duration {
        if self.0.is_empty() {
            return Duration::ZERO;
        }
        let rank = ((self.0.len() as f64 * q).ceil() as usize).clamp(1, self.0.len());
        Duration::from_nanos(self.0[rank - 1])
    }

    pub fn p50(&self) -> Duration {
        self.quantile(0.50)
    }

    pub fn p99(&self) -> Duration {
        self.quantile(0.99)
    }

    pub fn max(&self) -> Duration {
        Duration::from_nanos(self.0.last().copied().unwrap_or(0))
    }
}

/// What the readers saw.
#[derive(Debug, Clone, Default)]
pub struct ReadStats {
    pub latencies: Latencies,
    pub reads: u64,
    pub errors: u64,
    /// Bytes that are no whole value the secret ever had.
    pub unexpected: u64,
    /// A reader saw an older version of a file after a newer one.
    pub went_back: u64,
    /// A reader saw a file change to a newer version.
    pub changes_seen: u64,
    /// Wall time of the whole read phase.
    pub elapsed: Duration,
    /// The first few problems, for the report.
    pub samples: Vec<String>,
}

/// Resident memory of a process, in KiB.
#[derive(Debug, Clone, Copy, Default)]
pub struct Memory {
    pub rss_kb: u64,
    pub hwm_kb: u64,
}

/// Everything the run measured.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub volumes: usize,
    /// Files across all volumes.
    pub files: usize,
    /// Objects mounted across all volumes (the upstream model fetches each).
    pub objects_mounted: usize,
    pub classes: usize,
    pub distinct_objects: usize,
    pub publish_concurrency: usize,
    /// The first publish, alone (new credential, token, challenge).
    pub publish_first: Duration,
    /// The other publishes, `publish_concurrency` at a time.
    pub publish: Latencies,
    pub publish_wall: Duration,
    pub secretfs: ReadStats,
    pub tmpfs: ReadStats,
    pub readers: usize,
    pub read_time: Duration,
    pub rotation_poll_interval: Duration,
    pub rotate_every: Duration,
    /// Versions written by the rotator.
    pub versions_written: u64,
    /// Of them, versions that reached readers (per secret, the newest
    /// version a reader saw).
    pub versions_seen: u64,
    /// Files at their secret's latest version after the rotator stopped.
    pub converged: usize,
    /// Volumes with a file behind.
    pub volumes_behind: usize,
    /// When they were (last) checked, after the last rotation; the first
    /// check is at the end of the reads.
    pub converged_after: Duration,
    pub memory_idle: Memory,
    pub memory_published: Memory,
    pub memory_end: Memory,
    pub publish_gets: u64,
    pub publish_requests: u64,
    pub rotation_gets: u64,
    pub rotation_requests: u64,
    /// Length of the rotation phase (reads and convergence).
    pub rotation_phase: Duration,
    pub unpublish_errors: u64,
    /// Mounts left under the work directory after unpublishing.
    pub left_mounted: usize,
    /// Target directories left after unpublishing.
    pub left_targets: usize,
    pub problems: Vec<String>,
}

impl Report {
    /// What makes the run fail (empty: it passed).
    pub fn failures(&self) -> Vec<String> {
        let mut failures = Vec::new();
        let s = &self.secretfs;
        if s.errors > 0 {
            failures.push(format!("{} reads failed", s.errors));
        }
        if s.unexpected > 0 {
            failures.push(format!(
                "{} reads returned torn or unknown bytes",
                s.unexpected
            ));
        }
        if s.went_back > 0 {
            failures.push(format!(
                "{} reads went back to an older version",
                s.went_back
            ));
        }
        if self.tmpfs.errors > 0 || self.tmpfs.unexpected > 0 {
            failures.push("the tmpfs baseline failed".into());
        }
        if self.converged < self.files {
            failures.push(format!(
                "only {} of {} files reached their latest version ({} volumes behind)",
                self.converged, self.files, self.volumes_behind
            ));
        }
        if self.unpublish_errors > 0 {
            failures.push(format!("{} unpublishes failed", self.unpublish_errors));
        }
        if self.left_mounted > 0 || self.left_targets > 0 {
            failures.push(format!(
                "after unpublish: {} mounts and {} target directories left",
                self.left_mounted, self.left_targets
            ));
        }
        failures.extend(self.problems.iter().cloned());
        failures
    }
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

fn us(d: Duration) -> String {
    format!("{:.1} µs", d.as_secs_f64() * 1e6)
}

fn mib(kb: u64) -> String {
    format!("{:.1} MiB", kb as f64 / 1024.0)
}

fn ratio(a: Duration, b: Duration) -> f64 {
    a.as_secs_f64() / b.as_secs_f64().max(1e-9)
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.secretfs;
        let t = &self.tmpfs;
        writeln!(
            f,
            "load: {} volumes ({} classes, {} distinct objects, {} files), {} readers, {} reads over {:.0} s, node --rotation-poll-interval {:.1} s, new versions every {:.1} s",
            self.volumes,
            self.classes,
            self.distinct_objects,
            self.files,
            self.readers,
            s.reads,
            self.read_time.as_secs_f64(),
            self.rotation_poll_interval.as_secs_f64(),
            self.rotate_every.as_secs_f64()
        )?;
        writeln!(
            f,
            "publish: first volume {} (alone); the other {} at {} at a time: p50 {}, p99 {}, max {}; first/p99 {:.2}; all published in {:.2} s",
            ms(self.publish_first),
            self.publish.len(),
            self.publish_concurrency,
            ms(self.publish.p50()),
            ms(self.publish.p99()),
            ms(self.publish.max()),
            ratio(self.publish_first, self.publish.p99()),
            self.publish_wall.as_secs_f64()
        )?;
        writeln!(
            f,
            "read secretfs: p50 {}, p99 {}, max {} ({} reads in {:.1} s, {:.0}/s)",
            us(s.latencies.p50()),
            us(s.latencies.p99()),
            us(s.latencies.max()),
            s.reads,
            s.elapsed.as_secs_f64(),
            s.reads as f64 / s.elapsed.as_secs_f64().max(1e-9)
        )?;
        writeln!(
            f,
            "read tmpfs (baseline, same run): p50 {}, p99 {}, max {}",
            us(t.latencies.p50()),
            us(t.latencies.p99()),
            us(t.latencies.max())
        )?;
        writeln!(
            f,
            "ratio secretfs/tmpfs: p50 {:.2}, p99 {:.2}",
            ratio(s.latencies.p50(), t.latencies.p50()),
            ratio(s.latencies.p99(), t.latencies.p99())
        )?;
        writeln!(
            f,
            "reads with errors: {}; torn or unknown values: {}; older after newer: {}",
            s.errors, s.unexpected, s.went_back
        )?;
        writeln!(
            f,
            "rotation: {} versions written, {} reached readers, {} changes seen by readers; {}/{} files at their latest version when checked {:.1} s after the last rotation",
            self.versions_written,
            self.versions_seen,
            s.changes_seen,
            self.converged,
            self.files,
            self.converged_after.as_secs_f64()
        )?;
        writeln!(
            f,
            "node memory: idle VmRSS {} (VmHWM {}); after publish VmRSS {} (VmHWM {}); end VmRSS {} (VmHWM {})",
            mib(self.memory_idle.rss_kb),
            mib(self.memory_idle.hwm_kb),
            mib(self.memory_published.rss_kb),
            mib(self.memory_published.hwm_kb),
            mib(self.memory_end.rss_kb),
            mib(self.memory_end.hwm_kb)
        )?;
        let cycles = self.rotation_phase.as_secs_f64() / self.rotation_poll_interval.as_secs_f64();
        writeln!(
            f,
            "vault: publish {} secret GETs ({} requests in all) for {} volumes × objects = {} ({:.0}× fewer); rotation phase {:.1} s ≈ {:.1} intervals: {} GETs ({} requests) vs {:.0} = volumes × objects × intervals",
            self.publish_gets,
            self.publish_requests,
            self.volumes,
            self.objects_mounted,
            self.objects_mounted as f64 / self.publish_gets.max(1) as f64,
            self.rotation_phase.as_secs_f64(),
            cycles,
            self.rotation_gets,
            self.rotation_requests,
            self.objects_mounted as f64 * cycles
        )?;
        writeln!(
            f,
            "unpublish: {} errors; left mounted {}, target directories left {}",
            self.unpublish_errors, self.left_mounted, self.left_targets
        )?;
        for sample in s.samples.iter().chain(&t.samples) {
            writeln!(f, "  problem: {sample}")?;
        }
        let failures = self.failures();
        if failures.is_empty() {
            write!(f, "result: PASS")
        } else {
            write!(f, "result: FAIL: {}", failures.join("; "))
        }
    }
}
