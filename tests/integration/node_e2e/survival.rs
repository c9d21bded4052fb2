//! Restart survival: volumes keep working while the node plugin is stopped
//! (SIGTERM), killed (SIGKILL) and upgraded to another binary, with
//! readers looping open/read/close the whole time; without a keeper, the
//! next start repairs what died.

use std::io::Read;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use secretfs_e2e::kubelet::PublishExtras;

use super::harness::*;

const SEED_VALUE: &str = "Sql-Passw0rd-from-kv-demo";
const ROTATED: &str = "Sql-Passw0rd-after-restarts";

fn uid(i: usize) -> String {
    format!("5b5b5b5b-0000-4000-8000-{i:012}")
}

/// Readers looping open/read/close over `files` until stopped.
struct Readers {
    stop: Arc<AtomicBool>,
    reads: Arc<AtomicU64>,
    failures: Arc<AtomicU64>,
    longest_ns: Arc<AtomicU64>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Readers {
    fn start(files: Vec<PathBuf>, count: usize) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let reads = Arc::new(AtomicU64::new(0));
        let failures = Arc::new(AtomicU64::new(0));
        let longest_ns = Arc::new(AtomicU64::new(0));
        let files = Arc::new(files);
        let threads = (0..count)
            .map(|n| {
                let (stop, reads, failures, longest, files) = (
                    stop.clone(),
                    reads.clone(),
                    failures.clone(),
                    longest_ns.clone(),
                    files.clone(),
                );
                std::thread::spawn(move || {
                    let mut i = n;
                    while !stop.load(Ordering::SeqCst) {
                        let path = &files[i % files.len()];
                        i += 1;
                        let started = Instant::now();
                        // One read(2), as the value is read atomically
                        // (several reads may straddle a rotation).
                        let result = std::fs::File::open(path).and_then(|mut f| {
                            let mut buf = [0u8; 256];
                            let n = f.read(&mut buf)?;
                            Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
                        });
                        longest.fetch_max(started.elapsed().as_nanos() as u64, Ordering::SeqCst);
                        match result {
                            Ok(text) if text == SEED_VALUE || text == ROTATED => {
                                reads.fetch_add(1, Ordering::SeqCst);
                            }
                            Ok(text) => {
                                eprintln!("{path:?}: unexpected contents ({} bytes)", text.len());
                                failures.fetch_add(1, Ordering::SeqCst);
                            }
                            Err(e) => {
                                eprintln!("{path:?}: read failed: {e}");
                                failures.fetch_add(1, Ordering::SeqCst);
                            }
                        }
                    }
                })
            })
            .collect();
        Self {
            stop,
            reads,
            failures,
            longest_ns,
            threads,
        }
    }

    /// The longest open+read+close since the last call.
    fn take_longest(&self) -> Duration {
        Duration::from_nanos(self.longest_ns.swap(0, Ordering::SeqCst))
    }

    fn finish(self) -> (u64, u64) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads {
            t.join().unwrap();
        }
        (
            self.reads.load(Ordering::SeqCst),
            self.failures.load(Ordering::SeqCst),
        )
    }
}

/// The binary to upgrade to: `SECRETFS_UPGRADE_BINARY` (a real rebuild,
/// scripts/restart-survival.sh), else a copy of this build at another path.
fn upgrade_binary(dir: &std::path::Path) -> PathBuf {
    if let Some(path) = std::env::var_os("SECRETFS_UPGRADE_BINARY") {
        return path.into();
    }
    let copy = dir.join("secretfs-upgraded");
    std::fs::copy(env!("CARGO_BIN_EXE_secretfs"), &copy).unwrap();
    copy
}

fn version_of(binary: &std::path::Path) -> String {
    let out = std::process::Command::new(binary)
        .arg("--version")
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_volumes_survive_sigterm_sigkill_and_an_upgrade_with_no_failed_read() {
    if !fuse_available() {
        return;
    }
    const VOLUMES: usize = 50;
    const READERS: usize = 8;
    let mut env = Env::start_surviving(true).await;
    let mut pods = Vec::new();
    let mut files = Vec::new();
    for i in 0..VOLUMES {
        let pod = pod(&uid(i), None, None, None);
        let target = env
            .kubelet
            .publish(&pod, VOLUME, &PublishExtras::default())
            .await
            .unwrap();
        files.push(target.join("SECRET_1"));
        pods.push(pod);
    }
    let held = std::fs::File::open(&files[0]).unwrap();
    let readers = Readers::start(files.clone(), READERS);
    let settle = Duration::from_millis(400);
    tokio::time::sleep(settle).await;
    let before = readers.take_longest();

    let mut stalls = Vec::new();
    let started = Instant::now();
    env.restart(Stop::Term, None).await;
    stalls.push(("SIGTERM + restart", started.elapsed(), {
        tokio::time::sleep(settle).await;
        readers.take_longest()
    }));
    let started = Instant::now();
    env.restart(Stop::Kill, None).await;
    stalls.push(("SIGKILL + restart", started.elapsed(), {
        tokio::time::sleep(settle).await;
        readers.take_longest()
    }));
    let scratch = tempfile::tempdir().unwrap();
    let upgraded = upgrade_binary(scratch.path());
    let started = Instant::now();
    env.restart(Stop::Term, Some(&upgraded)).await;
    stalls.push(("upgrade to a rebuilt binary", started.elapsed(), {
        tokio::time::sleep(settle).await;
        readers.take_longest()
    }));

    // The new process serves rotation for the volumes it took over.
    env.emulator
        .control()
        .set_secret("kv-demo", "sql-password", ROTATED)
        .unwrap();
    let (ok, out) = env.admin(&["refresh"]);
    assert!(ok, "{out}");
    assert_eq!(out.matches("1 replaced").count(), VOLUMES, "{out}");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (reads, failures) = readers.finish();
    // In the default page-cache mode a descriptor keeps the version it
    // opened, across the three takeovers too; a new open reads the rotated
    // value (docs/SEMANTICS.md).
    let mut buf = [0u8; 64];
    let n = std::os::unix::fs::FileExt::read_at(&held, &mut buf, 0).unwrap();
    assert_eq!(
        &buf[..n],
        SEED_VALUE.as_bytes(),
        "a descriptor opened first"
    );
    assert_eq!(std::fs::read_to_string(&files[0]).unwrap(), ROTATED);
    drop(held);

    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    println!(
        "restart survival: {VOLUMES} volumes, {READERS} readers, {reads} reads, {failures} failed, kernel {}, upgrade to {:?} ({})",
        kernel.trim(),
        upgraded.file_name().unwrap_or_default(),
        version_of(&upgraded)
    );
    println!("  steady state: longest read {before:?}");
    for (step, took, longest) in &stalls {
        println!("  {step}: node back in {took:?}, longest read {longest:?}");
    }
    assert_eq!(failures, 0, "no read failed");
    assert!(reads > 1000, "readers kept reading: {reads}");
    let (ok, status) = env.admin(&["status", "--json"]);
    assert!(ok, "{status}");
    let volumes: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(volumes.as_array().unwrap().len(), VOLUMES);
    let metrics = env.http_get("/metrics").1;
    assert!(
        metrics.contains(&format!(
            "secretfs_restored_volumes_total{{outcome=\"adopted\"}} {VOLUMES}"
        )),
        "{metrics}"
    );

    for pod in &pods {
        env.kubelet.unpublish(pod, VOLUME).await.unwrap();
    }
    assert_eq!(
        std::fs::read_dir(&env.state_dir).unwrap().count(),
        0,
        "unpublish removes the records"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_keeper_a_crash_is_repaired_and_the_next_publish_mounts_again() {
    if !fuse_available() {
        return;
    }
    let mut env = Env::start_surviving(false).await;
    let pods: Vec<_> = (0..2)
        .map(|i| pod(&uid(100 + i), None, None, None))
        .collect();
    let mut targets = Vec::new();
    for pod in &pods {
        targets.push(
            env.kubelet
                .publish(pod, VOLUME, &PublishExtras::default())
                .await
                .unwrap(),
        );
    }
    assert_eq!(std::fs::read_dir(&env.state_dir).unwrap().count(), 2);
    env.restart(Stop::Kill, None).await;

    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
    for target in &targets {
        assert!(
            !mounts.contains(target.to_str().unwrap()),
            "the dead mount at {target:?} was removed"
        );
    }
    assert_eq!(std::fs::read_dir(&env.state_dir).unwrap().count(), 0);
    let metrics = env.http_get("/metrics").1;
    assert!(
        metrics.contains("secretfs_restored_volumes_total{outcome=\"lost\"} 2"),
        "{metrics}"
    );
    // Kubelet's next republish mounts a fresh volume.
    let target = env
        .kubelet
        .publish(&pods[0], VOLUME, &PublishExtras::default())
        .await
        .unwrap();
    assert_eq!(
        std::fs::read_to_string(target.join("SECRET_1")).unwrap(),
        SEED_VALUE
    );
    for pod in &pods {
        env.kubelet.unpublish(pod, VOLUME).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_keeper_gets_every_volume_again() {
    if !fuse_available() {
        return;
    }
    let mut env = Env::start_surviving(true).await;
    let pods: Vec<_> = (0..3)
        .map(|i| pod(&uid(200 + i), None, None, None))
        .collect();
    let mut files = Vec::new();
    for pod in &pods {
        let target = env
            .kubelet
            .publish(pod, VOLUME, &PublishExtras::default())
            .await
            .unwrap();
        files.push(target.join("SECRET_1"));
    }
    // The keeper dies and comes back empty; the node still holds every
    // connection, so nothing breaks, and it hands them over again.
    env.restart_keeper().await;
    for file in &files {
        assert_eq!(std::fs::read_to_string(file).unwrap(), SEED_VALUE);
    }
    tokio::time::sleep(Duration::from_millis(2500)).await;
    // Now a crash of the node: the new keeper must have everything.
    env.restart(Stop::Kill, None).await;
    for file in &files {
        assert_eq!(std::fs::read_to_string(file).unwrap(), SEED_VALUE);
    }
    let metrics = env.http_get("/metrics").1;
    assert!(
        metrics.contains("secretfs_restored_volumes_total{outcome=\"adopted\"} 3"),
        "{metrics}"
    );
    for pod in &pods {
        env.kubelet.unpublish(pod, VOLUME).await.unwrap();
    }
}
