//! `load-test`: the real `secretfs node` under load. Starts the Key Vault
//! emulator (the demo seed plus extra secrets) and the node binary with a
//! short rotation interval, publishes many volumes through the kubelet
//! stand-in (a few at a time, like kubelet), then reader threads open, read
//! (one `read(2)` into a large buffer) and close files across all volumes
//! while a rotator writes new secret versions every few seconds.
//!
//! Every read must return exactly one value its secret has had (no errors,
//! no torn or unknown bytes, never an older version after a newer one);
//! after the last rotation every file must reach its latest value; after
//! unpublishing nothing may stay mounted. It prints publish and read
//! latencies, the same readers over the same number of files on a tmpfs
//! (measured in the same run, with the same pacing) and the ratios, the
//! node's resident memory, and the vault requests against the
//! one-request-per-object-per-volume model.
//!
//! Needs root and /dev/fuse. `scripts/load-test.sh` runs it with the full
//! parameters on a release build; `tests/integration/load_smoke.rs` runs a tiny version
//! in CI (it includes this file as a module and calls [`run`]).

use std::fmt;
use std::fs::File;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::Parser;
use secretfs_e2e::kubelet::{Kubelet, PublishExtras, parse_pod};
use secretfs_e2e::{CounterFilter, Emulator, EmulatorConfig, EmulatorHandle, Route, Seed};

const VAULT: &str = "kv-demo";
const VOLUME: &str = "secrets-store-inline";
const TENANT: &str = "9c0d2e7b-1a3f-4b6c-8d5e-7f1a2b3c4d5e";
/// The demo seed's managed identity (it may read kv-demo's secrets).
const NODE_IDENTITY: &str = "5a1d3e0c-6f0e-4c55-9a57-3c2f1b7d9e21";
/// The demo seed's class and secret, mounted by some volumes too.
const SEED_CLASS: &str = "azure-kvname";
const SEED_SECRET: &str = "sql-password";
const SEED_VALUE: &str = "Sql-Passw0rd-from-kv-demo";
const SEED_FILE: &str = "SECRET_1";
/// Sizes of the extra secrets, in turn.
const SIZES: [usize; 5] = [48, 300, 1024, 4096, 16384];
/// The readers' buffer: larger than any value.
const READ_BUFFER: usize = 128 * 1024;

/// Parameters (the defaults are the full load test).
#[derive(Debug, Clone, Parser)]
#[command(
    name = "load-test",
    about = "Load test of the real secretfs node",
    args_override_self = true
)]
pub struct Config {
    /// The `secretfs` binary (e.g. target/release/secretfs).
    #[arg(long, env = "SECRETFS_BIN")]
    pub secretfs: PathBuf,
    /// Volumes (pods) to publish.
    #[arg(long, default_value_t = 250)]
    pub volumes: usize,
    /// Publishes in flight at once (kubelet's parallel pod starts).
    #[arg(long, default_value_t = 16)]
    pub publish_concurrency: usize,
    /// SecretProviderClasses of extra secrets (the demo seed's class is one
    /// more).
    #[arg(long, default_value_t = 6)]
    pub classes: usize,
    /// Objects in each extra class.
    #[arg(long, default_value_t = 4)]
    pub objects_per_class: usize,
    /// Extra secrets in the vault, shared by the classes.
    #[arg(long, default_value_t = 12)]
    pub secrets: usize,
    /// Reads in total (open, one read(2), close).
    #[arg(long, default_value_t = 100_000)]
    pub reads: usize,
    /// Reader threads.
    #[arg(long, default_value_t = 8)]
    pub readers: usize,
    /// Spread the reads over this long (0s: as fast as possible).
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub read_time: Duration,
    /// The node's --rotation-poll-interval.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub rotation_poll_interval: Duration,
    /// How often the rotator writes new versions.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub rotate_every: Duration,
    /// Secrets given a new version at each rotation (round robin over the
    /// extra secrets and the seed secret).
    #[arg(long, default_value_t = 3)]
    pub rotate_per_tick: usize,
    /// Stop rotating after this many rotation ticks (0: until the readers
    /// are done).
    #[arg(long, default_value_t = 0)]
    pub rotation_ticks: usize,
    /// The node's log filter (its log goes to node.log in the work
    /// directory, shown on failure).
    #[arg(long, default_value = "warn")]
    pub node_log: String,
}

/// Parses `250ms`, `5s`, `1m` or a number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, scale) = if let Some(n) = text.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = text.strip_suffix('m') {
        (n, 60.0)
    } else {
        (text, 1.0)
    };
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration (e.g. 500ms, 5s, 1m)"))?;
    if !(value >= 0.0 && value.is_finite()) {
        return Err(format!("{text:?} is not a duration"));
    }
    Ok(Duration::from_secs_f64(value * scale))
}

impl Config {
    /// The CI smoke version: 10 volumes, 2,000 reads, one rotation.
    pub fn smoke(secretfs: PathBuf) -> Self {
        Config {
            secretfs,
            volumes: 10,
            publish_concurrency: 4,
            classes: 2,
            objects_per_class: 3,
            secrets: 4,
            reads: 2_000,
            readers: 4,
            read_time: Duration::from_secs(3),
            rotation_poll_interval: Duration::from_secs(2),
            rotate_every: Duration::from_millis(500),
            rotate_per_tick: 5,
            rotation_ticks: 1,
            node_log: "warn".into(),
        }
    }
}

/// Latency figures (nanoseconds, sorted samples).
#[derive(Debug, Clone, Default)]
pub struct Latencies(Vec<u64>);

impl Latencies {
    fn new(mut samples: Vec<u64>) -> Self {
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

/// One file of a volume: where it is and whose values it shows.
#[derive(Debug, Clone)]
struct FileRef {
    path: PathBuf,
    secret: usize,
    volume: usize,
}

/// A class and the (file, secret) pairs of its volumes.
#[derive(Debug, Clone)]
struct ClassSpec {
    name: String,
    yaml: String,
    files: Vec<(String, usize)>,
}

/// Every value each secret has had, oldest first (index = generation).
#[derive(Debug)]
struct History {
    names: Vec<String>,
    values: RwLock<Vec<Vec<Vec<u8>>>>,
    /// Newest generation some reader saw, per secret.
    seen: Vec<AtomicU32>,
}

impl History {
    fn generation(&self, secret: usize, bytes: &[u8]) -> Option<u32> {
        let values = self.values.read().unwrap();
        values[secret]
            .iter()
            .rposition(|v| v.as_slice() == bytes)
            .map(|g| g as u32)
    }

    fn latest(&self, secret: usize) -> u32 {
        (self.values.read().unwrap()[secret].len() - 1) as u32
    }
}

/// The value of generation `generation` of an extra secret: its name and
/// generation, then filler, so a mix of two versions matches neither.
fn value(name: &str, generation: u32, size: usize) -> String {
    let mut text = format!("{name}#{generation:06}|");
    let filler = char::from(b'a' + (generation % 26) as u8);
    let size = size + (generation as usize % 7);
    while text.len() < size {
        text.push(filler);
    }
    text
}

fn class_yaml(name: &str, secrets: &[String]) -> String {
    let mut objects = String::from("array:\n");
    for secret in secrets {
        objects.push_str(&format!(
            "  - |\n    objectName: {secret}\n    objectType: secret\n"
        ));
    }
    let objects: Vec<String> = objects.lines().map(|l| format!("      {l}")).collect();
    format!(
        "apiVersion: secrets-store.csi.x-k8s.io/v1\nkind: SecretProviderClass\nmetadata:\n  name: {name}\n  namespace: default\nspec:\n  provider: azure\n  parameters:\n    keyvaultName: {VAULT}\n    tenantId: {TENANT}\n    useVMManagedIdentity: \"true\"\n    userAssignedIdentityID: {NODE_IDENTITY}\n    objects: |\n{}\n",
        objects.join("\n")
    )
}

/// The demo seed's class (one secret, aliased SECRET_1).
fn seed_class_yaml() -> String {
    format!(
        "apiVersion: secrets-store.csi.x-k8s.io/v1\nkind: SecretProviderClass\nmetadata:\n  name: {SEED_CLASS}\n  namespace: default\nspec:\n  provider: azure\n  parameters:\n    keyvaultName: {VAULT}\n    tenantId: {TENANT}\n    useVMManagedIdentity: \"true\"\n    userAssignedIdentityID: {NODE_IDENTITY}\n    objects: |\n      array:\n        - |\n          objectName: {SEED_SECRET}\n          objectAlias: {SEED_FILE}\n          objectType: secret\n"
    )
}

fn pod_yaml(index: usize, class: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: load-{index}\n  namespace: default\n  uid: 10ad0000-0000-4000-8000-{index:012}\nspec:\n  containers:\n    - name: app\n      image: busybox\n  volumes:\n    - name: {VOLUME}\n      csi:\n        driver: secrets-store.csi.k8s.io\n        readOnly: true\n        volumeAttributes:\n          secretProviderClass: {class}\n"
    )
}

fn memory(pid: u32) -> Memory {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    Memory {
        rss_kb: field("VmRSS:"),
        hwm_kb: field("VmHWM:"),
    }
}

/// Mount points at or under `dir`, deepest first.
fn mounts_under(dir: &Path) -> Vec<String> {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let dir = dir.to_string_lossy();
    let mut points: Vec<String> = mounts
        .lines()
        .filter_map(|l| l.split(' ').nth(1))
        .filter(|p| p.starts_with(dir.as_ref()))
        .map(str::to_owned)
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    points
}

/// Stops the node and removes the work directory, also on errors.
struct Cleanup {
    work: PathBuf,
    node: Option<Child>,
}

impl Cleanup {
    fn stop_node(&mut self) {
        let Some(mut child) = self.node.take() else {
            return;
        };
        let pid = rustix::process::Pid::from_child(&child);
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        self.stop_node();
        for point in mounts_under(&self.work) {
            let _ = rustix::mount::unmount(point.as_str(), rustix::mount::UnmountFlags::DETACH);
        }
        let _ = std::fs::remove_dir_all(&self.work);
    }
}

/// A small generator for the readers' file choice.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// `readers` threads do `reads` open/read/close in total over `files`,
/// spread over `read_time`, checking each value against `history`.
fn read_phase(
    files: &[FileRef],
    history: &History,
    reads: usize,
    readers: usize,
    read_time: Duration,
) -> ReadStats {
    let readers = readers.max(1);
    let errors = AtomicU64::new(0);
    let unexpected = AtomicU64::new(0);
    let went_back = AtomicU64::new(0);
    let changes = AtomicU64::new(0);
    let samples = Mutex::new(Vec::<String>::new());
    let note = |text: String| {
        let mut samples = samples.lock().unwrap();
        if samples.len() < 10 {
            samples.push(text);
        }
    };
    let start = Instant::now();
    let latencies: Vec<u64> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..readers)
            .map(|r| {
                let share = reads / readers + usize::from(r < reads % readers);
                let (errors, unexpected, went_back, changes, note) =
                    (&errors, &unexpected, &went_back, &changes, &note);
                scope.spawn(move || {
                    let mut buf = vec![0u8; READ_BUFFER];
                    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15 ^ ((r as u64 + 1) << 32));
                    let mut last = vec![u32::MAX; files.len()];
                    let mut latencies = Vec::with_capacity(share);
                    for k in 0..share {
                        if !read_time.is_zero() {
                            // Reader r's k-th read is due at (k + r/readers)
                            // shares of the read time.
                            let due = start
                                + read_time.mul_f64(
                                    (k as f64 + r as f64 / readers as f64) / share.max(1) as f64,
                                );
                            let now = Instant::now();
                            if due > now {
                                std::thread::sleep(due - now);
                            }
                        }
                        let index = (rng.next() % files.len() as u64) as usize;
                        let file = &files[index];
                        let began = Instant::now();
                        let result = File::open(&file.path).and_then(|mut f| f.read(&mut buf));
                        latencies.push(began.elapsed().as_nanos() as u64);
                        let n = match result {
                            Ok(n) => n,
                            Err(e) => {
                                errors.fetch_add(1, Ordering::Relaxed);
                                note(format!("{}: {e}", file.path.display()));
                                continue;
                            }
                        };
                        let Some(generation) = history.generation(file.secret, &buf[..n]) else {
                            unexpected.fetch_add(1, Ordering::Relaxed);
                            note(format!(
                                "{}: {n} bytes that {} never held: {:?}…",
                                file.path.display(),
                                history.names[file.secret],
                                String::from_utf8_lossy(&buf[..n.min(40)])
                            ));
                            continue;
                        };
                        history.seen[file.secret].fetch_max(generation, Ordering::Relaxed);
                        let before = last[index];
                        if before != u32::MAX && generation < before {
                            went_back.fetch_add(1, Ordering::Relaxed);
                            note(format!(
                                "{}: version {generation} after {before}",
                                file.path.display()
                            ));
                        } else if before != u32::MAX && generation > before {
                            changes.fetch_add(1, Ordering::Relaxed);
                        }
                        if before == u32::MAX || generation > before {
                            last[index] = generation;
                        }
                    }
                    latencies
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_default())
            .collect()
    });
    let elapsed = start.elapsed();
    ReadStats {
        reads: latencies.len() as u64,
        latencies: Latencies::new(latencies),
        errors: errors.into_inner(),
        unexpected: unexpected.into_inner(),
        went_back: went_back.into_inner(),
        changes_seen: changes.into_inner(),
        elapsed,
        samples: samples.into_inner().unwrap_or_default(),
    }
}

/// Writes new versions every `every` until `stop` (or `ticks` rotations);
/// returns the versions written and when the last was.
fn rotator(
    control: &secretfs_e2e::Control,
    history: &History,
    sizes: &[usize],
    config: &Config,
    stop: &AtomicBool,
) -> anyhow::Result<(u64, Instant)> {
    let mut written = 0u64;
    let mut last = Instant::now();
    let mut next_secret = 0usize;
    let mut tick = 0usize;
    let count = history.names.len();
    while !stop.load(Ordering::Relaxed) {
        let until = Instant::now() + config.rotate_every;
        while Instant::now() < until {
            if stop.load(Ordering::Relaxed) {
                return Ok((written, last));
            }
            std::thread::sleep(Duration::from_millis(10).min(config.rotate_every));
        }
        for _ in 0..config.rotate_per_tick.min(count) {
            let secret = next_secret % count;
            next_secret += 1;
            let name = &history.names[secret];
            let generation = history.latest(secret) + 1;
            let text = value(name, generation, sizes[secret]);
            // Known before the vault has it, so no reader can see it first.
            history.values.write().unwrap()[secret].push(text.clone().into_bytes());
            control
                .set_secret(VAULT, name, &text)
                .with_context(|| format!("rotating {name}"))?;
            written += 1;
        }
        last = Instant::now();
        tick += 1;
        if config.rotation_ticks > 0 && tick >= config.rotation_ticks {
            break;
        }
    }
    Ok((written, last))
}

fn spawn_node(
    config: &Config,
    emulator: &EmulatorHandle,
    work: &Path,
    socket: &Path,
) -> anyhow::Result<Child> {
    let addr = emulator.https_addr();
    let log = File::create(work.join("node.log"))?;
    Command::new(&config.secretfs)
        .arg("node")
        .arg(format!("--endpoint=unix://{}", socket.display()))
        .arg("--nodeid=load-node")
        .arg("--spc-dir")
        .arg(work.join("classes"))
        .arg("--metrics-addr=")
        .arg("--admin-socket=")
        .arg("--enable-secret-rotation=true")
        .arg(format!(
            "--rotation-poll-interval={}ms",
            config.rotation_poll_interval.as_millis().max(1)
        ))
        .arg(format!("--azure-ca-file={}", emulator.ca_path().display()))
        .arg(format!("--azure-resolve=*.vault.azure.net={addr}"))
        .arg(format!("--azure-resolve=login.microsoftonline.com={addr}"))
        .arg(format!("--azure-vault-port={}", addr.port()))
        .arg(format!(
            "--azure-authority-host={}",
            emulator.authority_url()
        ))
        .arg(format!("--azure-imds-endpoint={}", emulator.imds_url()))
        .arg(format!("--azure-nmi-endpoint={}", emulator.imds_url()))
        .env("SECRETFS_LOG", &config.node_log)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .with_context(|| format!("starting {}", config.secretfs.display()))
}

fn node_log_tail(work: &Path) -> String {
    let log = std::fs::read_to_string(work.join("node.log")).unwrap_or_default();
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// Runs the whole load test. Needs root and /dev/fuse.
pub fn run(config: &Config) -> anyhow::Result<Report> {
    if config.volumes == 0 || config.secrets == 0 || config.objects_per_class == 0 {
        bail!("--volumes, --secrets and --objects-per-class must be at least 1");
    }
    static RUNS: AtomicU32 = AtomicU32::new(0);
    let work = std::env::temp_dir().join(format!(
        "secretfs-load-{}-{}",
        std::process::id(),
        RUNS.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(work.join("classes"))?;
    let mut cleanup = Cleanup {
        work: work.clone(),
        node: None,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let result = run_in(config, &runtime, &work, &mut cleanup);
    if let Err(e) = &result {
        eprintln!(
            "load-test: {e:#}\nnode log (last lines):\n{}",
            node_log_tail(&work)
        );
    } else if let Ok(report) = &result
        && !report.failures().is_empty()
    {
        eprintln!("node log (last lines):\n{}", node_log_tail(&work));
    }
    drop(cleanup);
    result
}

fn run_in(
    config: &Config,
    runtime: &tokio::runtime::Runtime,
    work: &Path,
    cleanup: &mut Cleanup,
) -> anyhow::Result<Report> {
    let emulator = runtime.block_on(Emulator::start(EmulatorConfig::with_seed(Seed::demo())))?;
    let control = emulator.control().clone();

    // Secrets: the extra ones (generation 0 written now), then the seed's.
    let mut names: Vec<String> = (0..config.secrets)
        .map(|i| format!("load-{i:02}"))
        .collect();
    let mut sizes: Vec<usize> = (0..config.secrets)
        .map(|i| SIZES[i % SIZES.len()])
        .collect();
    let mut values = Vec::new();
    for (name, size) in names.iter().zip(&sizes) {
        let text = value(name, 0, *size);
        control.set_secret(VAULT, name, &text)?;
        values.push(vec![text.into_bytes()]);
    }
    names.push(SEED_SECRET.into());
    sizes.push(SEED_VALUE.len());
    values.push(vec![SEED_VALUE.as_bytes().to_vec()]);
    let seed_secret = names.len() - 1;
    let history = History {
        seen: names.iter().map(|_| AtomicU32::new(0)).collect(),
        names,
        values: RwLock::new(values),
    };

    // Classes: overlapping windows over the extra secrets, plus the seed's.
    let per_class = config.objects_per_class.min(config.secrets);
    let stride = (config.secrets / config.classes.max(1)).max(1);
    let mut classes: Vec<ClassSpec> = (0..config.classes)
        .map(|c| {
            let secrets: Vec<usize> = (0..per_class)
                .map(|j| (c * stride + j) % config.secrets)
                .collect();
            let names: Vec<String> = secrets.iter().map(|&s| history.names[s].clone()).collect();
            let name = format!("load-{c}");
            ClassSpec {
                yaml: class_yaml(&name, &names),
                files: secrets
                    .iter()
                    .map(|&s| (history.names[s].clone(), s))
                    .collect(),
                name,
            }
        })
        .collect();
    classes.push(ClassSpec {
        name: SEED_CLASS.into(),
        yaml: seed_class_yaml(),
        files: vec![(SEED_FILE.into(), seed_secret)],
    });
    for class in &classes {
        std::fs::write(
            work.join(format!("classes/{}.yaml", class.name)),
            &class.yaml,
        )?;
    }
    let mut distinct: Vec<usize> = classes
        .iter()
        .flat_map(|c| c.files.iter().map(|f| f.1))
        .collect();
    distinct.sort_unstable();
    distinct.dedup();

    // The node.
    let socket = work.join("csi.sock");
    let child = spawn_node(config, &emulator, work, &socket)?;
    let pid = child.id();
    cleanup.node = Some(child);
    let kubelet = runtime.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !socket.exists() {
            if Instant::now() > deadline {
                bail!("the node did not create {}", socket.display());
            }
            if let Some(Some(status)) = cleanup.node.as_mut().map(|c| c.try_wait().ok().flatten()) {
                bail!("the node exited: {status}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let kubelet = Kubelet::connect(&socket, &work.join("kubelet")).await?;
        kubelet.plugin_info().await?;
        Ok(kubelet)
    })?;
    std::thread::sleep(Duration::from_millis(300));
    let memory_idle = memory(pid);

    // Publish: the first volume alone, then the rest like kubelet.
    let pods: Vec<(k8s_openapi::api::core::v1::Pod, usize)> = (0..config.volumes)
        .map(|i| {
            let class = i % classes.len();
            parse_pod(&pod_yaml(i, &classes[class].name)).map(|p| (p, class))
        })
        .collect::<Result<_, _>>()?;
    control.reset_counters();
    let publish_start = Instant::now();
    let (publish_first, publish, targets) = runtime.block_on(async {
        let began = Instant::now();
        let first = kubelet
            .publish(&pods[0].0, VOLUME, &PublishExtras::default())
            .await
            .context("publishing volume 0")?;
        let first_latency = began.elapsed();
        let permits = Arc::new(tokio::sync::Semaphore::new(
            config.publish_concurrency.max(1),
        ));
        let mut tasks = tokio::task::JoinSet::new();
        for (i, (pod, _)) in pods.iter().enumerate().skip(1) {
            let (kubelet, pod, permits) = (kubelet.clone(), pod.clone(), permits.clone());
            tasks.spawn(async move {
                let _permit = permits.acquire_owned().await;
                let began = Instant::now();
                let target = kubelet
                    .publish(&pod, VOLUME, &PublishExtras::default())
                    .await
                    .with_context(|| format!("publishing volume {i}"))?;
                anyhow::Ok((i, target, began.elapsed()))
            });
        }
        let mut targets = vec![PathBuf::new(); pods.len()];
        targets[0] = first;
        let mut latencies = Vec::new();
        while let Some(done) = tasks.join_next().await {
            let (i, target, latency) = done??;
            targets[i] = target;
            latencies.push(latency.as_nanos() as u64);
        }
        anyhow::Ok((first_latency, Latencies::new(latencies), targets))
    })?;
    let publish_wall = publish_start.elapsed();
    let publish_gets = control.count(&CounterFilter::route(Route::SecretGet));
    let publish_requests = control.count(&CounterFilter::default());
    std::thread::sleep(Duration::from_millis(300));
    let memory_published = memory(pid);

    // Every volume shows its class's files.
    let mut files = Vec::new();
    let mut problems = Vec::new();
    for (volume, (target, (_, class))) in targets.iter().zip(&pods).enumerate() {
        let mut expected: Vec<&str> = classes[*class].files.iter().map(|f| f.0.as_str()).collect();
        expected.sort_unstable();
        let mut found: Vec<String> = std::fs::read_dir(target)
            .with_context(|| format!("listing {}", target.display()))?
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .collect();
        found.sort_unstable();
        if found != expected {
            problems.push(format!(
                "{} holds {found:?}, not {expected:?}",
                target.display()
            ));
        }
        for (file, secret) in &classes[*class].files {
            files.push(FileRef {
                path: target.join(file),
                secret: *secret,
                volume,
            });
        }
    }
    let objects_mounted = files.len();

    // Baseline: the same files (first versions) on a tmpfs, same readers.
    let tmpfs = work.join("tmpfs");
    std::fs::create_dir_all(&tmpfs)?;
    rustix::mount::mount(
        "tmpfs",
        &tmpfs,
        "tmpfs",
        rustix::mount::MountFlags::empty(),
        c"size=512m,mode=0700",
    )
    .context("mounting the tmpfs baseline")?;
    let baseline_files: Vec<FileRef> = files
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let dir = tmpfs.join(format!("v{}", i / config.objects_per_class.max(1)));
            std::fs::create_dir_all(&dir)?;
            let path = dir.join(format!("f{i}"));
            std::fs::write(&path, &history.values.read().unwrap()[f.secret][0])?;
            anyhow::Ok(FileRef {
                path,
                secret: f.secret,
                volume: f.volume,
            })
        })
        .collect::<Result<_, _>>()?;
    let tmpfs_stats = read_phase(
        &baseline_files,
        &history,
        config.reads,
        config.readers,
        config.read_time,
    );
    rustix::mount::unmount(&tmpfs, rustix::mount::UnmountFlags::DETACH)?;
    for seen in &history.seen {
        seen.store(0, Ordering::Relaxed);
    }

    // Reads on secretfs while the rotator writes new versions.
    control.reset_counters();
    let rotation_start = Instant::now();
    let stop = AtomicBool::new(false);
    let (secretfs_stats, rotated) = std::thread::scope(|scope| {
        let rotation = scope.spawn(|| rotator(&control, &history, &sizes, config, &stop));
        let stats = read_phase(
            &files,
            &history,
            config.reads,
            config.readers,
            config.read_time,
        );
        stop.store(true, Ordering::Relaxed);
        (stats, rotation.join())
    });
    let (versions_written, last_rotation) = match rotated {
        Ok(result) => result?,
        Err(_) => bail!("the rotator panicked"),
    };
    let versions_seen: u64 = history
        .seen
        .iter()
        .map(|g| u64::from(g.load(Ordering::Relaxed)))
        .sum();

    // Every file reaches its latest version within a few intervals.
    let deadline = last_rotation + config.rotation_poll_interval * 3 + Duration::from_secs(5);
    let mut buf = vec![0u8; READ_BUFFER];
    let mut behind = Vec::new();
    let mut lagging = std::collections::BTreeSet::new();
    let (converged, converged_after) = loop {
        let mut at_latest = 0;
        behind.clear();
        lagging.clear();
        for file in &files {
            let read = File::open(&file.path).and_then(|mut f| f.read(&mut buf));
            let seen = read
                .as_ref()
                .ok()
                .and_then(|&n| history.generation(file.secret, &buf[..n]));
            let latest = history.latest(file.secret);
            if seen == Some(latest) {
                at_latest += 1;
                continue;
            }
            lagging.insert(file.volume);
            if behind.len() < 5 {
                behind.push(match read {
                    Ok(n) => format!(
                        "{} shows version {seen:?} ({n} bytes), not {latest}",
                        file.path.display()
                    ),
                    Err(e) => format!("{}: {e}", file.path.display()),
                });
            }
        }
        if at_latest == files.len() || Instant::now() > deadline {
            break (at_latest, last_rotation.elapsed());
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    problems.extend(behind);
    let rotation_phase = rotation_start.elapsed();
    let rotation_gets = control.count(&CounterFilter::route(Route::SecretGet));
    let rotation_requests = control.count(&CounterFilter::default());
    let memory_end = memory(pid);

    // Unpublish everything, like kubelet.
    let unpublish_errors = runtime.block_on(async {
        let permits = Arc::new(tokio::sync::Semaphore::new(
            config.publish_concurrency.max(1),
        ));
        let mut tasks = tokio::task::JoinSet::new();
        for (pod, _) in &pods {
            let (kubelet, pod, permits) = (kubelet.clone(), pod.clone(), permits.clone());
            tasks.spawn(async move {
                let _permit = permits.acquire_owned().await;
                kubelet.unpublish(&pod, VOLUME).await
            });
        }
        let mut errors = 0u64;
        while let Some(done) = tasks.join_next().await {
            if !matches!(done, Ok(Ok(()))) {
                errors += 1;
            }
        }
        errors
    });
    let left_mounted = mounts_under(work).len();
    let left_targets = targets.iter().filter(|t| t.exists()).count();
    if let Some(Some(status)) = cleanup.node.as_mut().map(|c| c.try_wait().ok().flatten()) {
        problems.push(format!("the node exited during the run: {status}"));
    }
    cleanup.stop_node();
    drop(emulator);

    Ok(Report {
        volumes: config.volumes,
        files: files.len(),
        objects_mounted,
        classes: classes.len(),
        distinct_objects: distinct.len(),
        publish_concurrency: config.publish_concurrency,
        publish_first,
        publish,
        publish_wall,
        secretfs: secretfs_stats,
        tmpfs: tmpfs_stats,
        readers: config.readers,
        read_time: config.read_time,
        rotation_poll_interval: config.rotation_poll_interval,
        rotate_every: config.rotate_every,
        versions_written,
        versions_seen,
        converged,
        volumes_behind: lagging.len(),
        converged_after,
        memory_idle,
        memory_published,
        memory_end,
        publish_gets,
        publish_requests,
        rotation_gets,
        rotation_requests,
        rotation_phase,
        unpublish_errors,
        left_mounted,
        left_targets,
        problems,
    })
}

fn main() -> ExitCode {
    let config = Config::parse();
    if !rustix::process::geteuid().is_root() || !Path::new("/dev/fuse").exists() {
        eprintln!("load-test needs root and /dev/fuse (it mounts FUSE volumes)");
        return ExitCode::from(2);
    }
    match run(&config) {
        Ok(report) => {
            println!("{report}");
            if report.failures().is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("load-test: {e:#}");
            ExitCode::FAILURE
        }
    }
}
