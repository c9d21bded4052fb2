//! The load test: the real `secretfs node` under load. Starts the Key Vault
//! emulator (the demo seed plus extra secrets) and the node binary with a
//! short rotation interval, publishes many volumes through the kubelet
//! stand-in (a few at a time, like kubelet), then reader threads open, read
//! (one `read(2)` into a large buffer) and close files across all volumes
//! while a rotator writes new secret versions every few seconds.
//!
//! Every read must return exactly one value its secret has had (no errors,
//! no torn or unknown bytes, never an older version after a newer one);
//! after the last rotation every file must reach its latest value; after
//! unpublishing nothing may stay mounted. The [`Report`] holds publish and
//! read latencies, the same readers over the same number of files on a tmpfs
//! (measured in the same run, with the same pacing) and the ratios, the
//! node's resident memory, and the vault requests against the
//! one-request-per-object-per-volume model.
//!
//! Needs root and /dev/fuse. The `load-test` binary (`src/bin/load-test.rs`,
//! run with the full parameters on a release build by
//! `scripts/load-test.sh`) parses a [`Config`] and prints the report;
//! `tests/integration/load_smoke.rs` of the root crate runs a tiny version
//! in CI ([`Config::smoke`]).
//!
//! - `config.rs`: the parameters; `report.rs`: what a run measured and how
//!   it prints;
//! - `model.rs`: the secrets and every value each has had, classes, pods;
//! - `node.rs`: the node's process and the cleanup; `reads.rs`: the
//!   readers and the rotator;
//! - `phases.rs`: the phases of [`run`], one function each.

mod config;
mod model;
mod node;
mod phases;
mod reads;
mod report;

use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::bail;

pub use config::{Config, parse_duration};
use model::memory;
use node::{Cleanup, node_log_tail};
pub use report::{Latencies, Memory, ReadStats, Report};

use crate::{CounterFilter, Emulator, EmulatorConfig, Route, Seed};

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

    let (history, sizes) = phases::write_secrets(config, &control)?;
    let (classes, distinct_objects) = phases::write_classes(config, &history, work)?;

    let (kubelet, pid) = phases::start_node(config, runtime, &emulator, work, cleanup)?;
    std::thread::sleep(Duration::from_millis(300));
    let memory_idle = memory(pid);

    let pods = phases::pods(config, &classes)?;
    control.reset_counters();
    let publish_start = Instant::now();
    let (publish_first, publish, targets) = phases::publish(config, runtime, &kubelet, &pods)?;
    let publish_wall = publish_start.elapsed();
    let publish_gets = control.count(&CounterFilter::route(Route::SecretGet));
    let publish_requests = control.count(&CounterFilter::default());
    std::thread::sleep(Duration::from_millis(300));
    let memory_published = memory(pid);

    let (files, mut problems) = phases::list_files(&targets, &pods, &classes)?;
    let objects_mounted = files.len();

    let tmpfs_stats = phases::tmpfs_baseline(config, work, &files, &history)?;

    control.reset_counters();
    let rotation_start = Instant::now();
    let rotated = phases::read_while_rotating(config, &control, &history, &sizes, &files)?;

    let converged = phases::converge(config, &files, &history, rotated.last_rotation);
    problems.extend(converged.behind);
    let rotation_phase = rotation_start.elapsed();
    let rotation_gets = control.count(&CounterFilter::route(Route::SecretGet));
    let rotation_requests = control.count(&CounterFilter::default());
    let memory_end = memory(pid);

    let unpublish_errors = phases::unpublish(config, runtime, &kubelet, &pods);
    let left_mounted = model::mounts_under(work).len();
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
        distinct_objects,
        publish_concurrency: config.publish_concurrency,
        publish_first,
        publish,
        publish_wall,
        secretfs: rotated.stats,
        tmpfs: tmpfs_stats,
        readers: config.readers,
        read_time: config.read_time,
        rotation_poll_interval: config.rotation_poll_interval,
        rotate_every: config.rotate_every,
        versions_written: rotated.versions_written,
        versions_seen: rotated.versions_seen,
        converged: converged.files,
        volumes_behind: converged.volumes_behind,
        converged_after: converged.after,
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
