//! `peer-bench`: secretfs and the upstream Secrets Store CSI Driver with the
//! upstream Azure provider, measured the same way in one run
//! (`scripts/peer-bench.sh`, which runs it inside `e2e/peers/sandbox.sh`
//! with a real control plane; docs/BENCHMARKS.md has the figures).
//!
//! Each driver gets the same run, one after the other: a fresh emulator
//! (Key Vault, Entra ID and IMDS at the addresses the SDKs use), its node
//! plugin started with its chart's flags (upstream: the driver's chart with
//! `enableSecretRotation=true`, else nothing is ever refreshed; secretfs:
//! its chart, keeper included), the same SecretProviderClasses and pods in
//! the real kube-apiserver, and the kubelet stand-in publishing them over
//! the CSI socket and republishing every mounted volume every 60–90 s, as
//! kubelet does for a driver with `requiresRepublish`. Rows:
//!
//! - `publish`: NodePublishVolume latency with 25 ms added to every vault
//!   request, the seed class (1 object) and a 10-object class, one publish
//!   at a time (each followed by its unpublish);
//! - `read`: warm open + read + close of a mounted 4 KiB file, against a
//!   file on a tmpfs in the same run;
//! - `rss`: the node plugin's and its provider's (or keeper's) resident
//!   memory, idle and with 110 volumes × 10 objects × 4 KiB (plus, for
//!   upstream, what its tmpfs volumes hold);
//! - `steady` (both drivers at their default 2-minute interval, after every
//!   volume has been mounted for longer than that): vault GETs in a window
//!   of one interval for 1, 10 and 100 pods × 10 objects of one identity;
//!   the time from a vault write to the new bytes in 10 pods' files; the
//!   requests sent to a vault that answers every request with 429 +
//!   `Retry-After: 10` for 60 s, and whether pods started meanwhile (of a
//!   class the node already serves, and of a new class) start, and when.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::Parser;
use k8s_openapi::api::core::v1::Pod;
use secretfs_e2e::kubelet::{Kubelet, PublishExtras, parse_pod};
use secretfs_e2e::peers::{Cluster, NodeOptions, NodePlugin, Peer, PluginPaths, Sandbox};
use secretfs_e2e::{CounterFilter, EmulatorHandle, FaultKind, FaultSpec, Route, Seed};
use serde::Serialize;

const SEED_CLASS: &str = include_str!("../../../tests/fixtures/seed/secretproviderclass.yaml");
const SEED_POD: &str = include_str!("../../../tests/fixtures/seed/pod.yaml");
const VOLUME: &str = "secrets-store-inline";
const TENANT: &str = "9c0d2e7b-1a3f-4b6c-8d5e-7f1a2b3c4d5e";
const NODE_IDENTITY: &str = "5a1d3e0c-6f0e-4c55-9a57-3c2f1b7d9e21";
/// Objects per class (but the seed's and the rotation class's one).
const M: usize = 10;
const VALUE_BYTES: usize = 4096;
/// Both charts' default `rotationPollInterval`.
const INTERVAL: Duration = Duration::from_secs(120);
/// Kubelet resyncs a pod every 60 s plus up to 50 % jitter.
const REPUBLISH_MIN: Duration = Duration::from_secs(60);
const REPUBLISH_MAX: Duration = Duration::from_secs(90);
const CYCLE_PODS: [usize; 3] = [1, 10, 100];
const ROTATE_PODS: usize = 10;
const THROTTLE_PODS: usize = 10;
const THROTTLE_FOR: Duration = Duration::from_secs(60);
const RETRY_AFTER: u32 = 10;

#[derive(Debug, Clone, Parser)]
#[command(
    name = "peer-bench",
    about = "secretfs and the upstream driver side by side"
)]
struct Config {
    /// The `secretfs` binary.
    #[arg(long, env = "SECRETFS_BIN")]
    secretfs: PathBuf,
    /// The peers' bin directory (e2e/peers/build.sh).
    #[arg(long, env = "SECRETFS_PEERS_BIN")]
    peers_bin: PathBuf,
    /// The control plane's admin kubeconfig.
    #[arg(long, env = "SECRETFS_TEST_KUBECONFIG")]
    kubeconfig: PathBuf,
    /// Rows to measure (publish, read, rss, steady).
    #[arg(long, value_delimiter = ',', default_value = "publish,read,rss,steady")]
    rows: Vec<String>,
    /// Drivers to measure (upstream, secretfs).
    #[arg(long, value_delimiter = ',', default_value = "upstream,secretfs")]
    drivers: Vec<String>,
    /// Publishes per class in the publish row (the first is the first mount).
    #[arg(long, default_value_t = 41)]
    publishes: usize,
    /// Warm reads per file in the read row.
    #[arg(long, default_value_t = 20_000)]
    reads: usize,
    /// Vault writes in the rotation part of the steady row.
    #[arg(long, default_value_t = 3)]
    writes: usize,
    /// Where to write the results as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
}

// ------------------------------------------------------------------ results

#[derive(Debug, Default, Clone, Serialize)]
struct Latencies {
    first_ms: f64,
    p50_ms: f64,
    p99_ms: f64,
    n: usize,
}

#[derive(Debug, Default, Clone, Serialize)]
struct Reads {
    p50_us: f64,
    p99_us: f64,
    tmpfs_p50_us: f64,
    tmpfs_p99_us: f64,
}

#[derive(Debug, Default, Clone, Serialize)]
struct Memory {
    idle_kib: u64,
    loaded_kib: u64,
    /// Bytes the volumes' tmpfs hold (upstream only).
    tmpfs_kib: u64,
}

#[derive(Debug, Default, Clone, Serialize)]
struct Cycle {
    pods: usize,
    gets: u64,
    republishes: u64,
    challenges: u64,
}

/// A pod started while its vault throttles.
#[derive(Debug, Default, Clone, Serialize)]
struct PodStart {
    /// Seconds until NodePublishVolume succeeded (None: not within the limit).
    started_s: Option<f64>,
    /// Files in the volume when it succeeded (the class has M).
    files_at_start: usize,
    /// Seconds until the volume held all M files (None: not within 5 min).
    complete_s: Option<f64>,
}

#[derive(Debug, Default, Clone, Serialize)]
struct Throttle {
    requests: u64,
    throttled: u64,
    same_class: Vec<PodStart>,
    new_class: Vec<PodStart>,
}

#[derive(Debug, Default, Clone, Serialize)]
struct Results {
    publish_seed: Option<Latencies>,
    publish_ten: Option<Latencies>,
    read: Option<Reads>,
    memory: Option<Memory>,
    cycles: Vec<Cycle>,
    /// IMDS token requests in the cycle window.
    cycle_tokens: Option<u64>,
    /// The first mounts of the steady row (131 pods): IMDS token requests
    /// and 401 challenges they cost.
    mounts: usize,
    mount_tokens: u64,
    mount_challenges: u64,
    /// The whole run: pods created, and IMDS token requests.
    run_pods: usize,
    run_tokens: u64,
    /// Seconds from each vault write to the new bytes, per write, per pod.
    /// The first write comes after more than an interval without changes,
    /// the others 5 s after the previous one reached every pod.
    rotation_s: Vec<Vec<f64>>,
    /// With `secretfs refresh` after the write (secretfs only).
    rotation_on_demand_s: Vec<f64>,
    throttle: Option<Throttle>,
}

// --------------------------------------------------------------- the setup

fn value(vault: &str, name: &str, generation: usize) -> String {
    let mut v = format!("{vault}/{name}/{generation}:");
    while v.len() < VALUE_BYTES {
        v.push_str("0123456789abcdef");
    }
    v.truncate(VALUE_BYTES);
    v
}

/// The vaults: kv-demo (the seed example's), one per 10-object use, and
/// kv-rotate with one secret; the node's managed identity reads them all.
fn ten_vaults() -> Vec<String> {
    let mut v = vec![
        "kv-ten".to_owned(),
        "kv-read".to_owned(),
        "kv-rss".to_owned(),
    ];
    v.extend(CYCLE_PODS.iter().map(|p| format!("kv-cycle-{p}")));
    v.push("kv-throttle".to_owned());
    v
}

fn seed() -> anyhow::Result<Seed> {
    let mut yaml = format!(
        "tenant: {TENANT}
identities:
  - name: node-identity
    kind: managedIdentity
    clientId: {NODE_IDENTITY}
vaults:
  - name: kv-demo
    access: [{{identity: node-identity, secrets: [get, list]}}]
    secrets:
      - {{name: sql-password, versions: [{{value: Sql-Passw0rd-from-kv-demo}}]}}
  - name: kv-rotate
    access: [{{identity: node-identity, secrets: [get, list]}}]
    secrets:
      - {{name: value, versions: [{{value: generation-0}}]}}
"
    );
    for vault in ten_vaults() {
        writeln!(
            yaml,
            "  - name: {vault}\n    access: [{{identity: node-identity, secrets: [get, list]}}]\n    secrets:"
        )?;
        let mut names: Vec<String> = (0..M).map(|i| format!("obj-{i}")).collect();
        if vault == "kv-throttle" {
            names.extend((0..M).map(|i| format!("new-{i}")));
        }
        for name in names {
            writeln!(
                yaml,
                "      - {{name: {name}, versions: [{{value: {}}}]}}",
                value(&vault, &name, 0)
            )?;
        }
    }
    Ok(Seed::from_yaml(&yaml)?)
}

/// A class of `prefix-0..M` secrets in `vault`, read with the node's
/// managed identity (the seed class's identity mode).
fn class(name: &str, vault: &str, prefix: &str, objects: usize) -> String {
    let mut list = String::new();
    for i in 0..objects {
        let object = if objects == 1 {
            prefix.to_owned()
        } else {
            format!("{prefix}-{i}")
        };
        write!(
            list,
            "        - |\n          objectName: {object}\n          objectType: secret\n"
        )
        .unwrap();
    }
    format!(
        "apiVersion: secrets-store.csi.x-k8s.io/v1
kind: SecretProviderClass
metadata:
  name: {name}
spec:
  provider: azure
  parameters:
    keyvaultName: {vault}
    tenantId: {TENANT}
    useVMManagedIdentity: \"true\"
    userAssignedIdentityID: {NODE_IDENTITY}
    objects: |
      array:
{list}"
    )
}

fn classes() -> Vec<String> {
    let mut all = vec![SEED_CLASS.to_owned()];
    for vault in ten_vaults() {
        all.push(class(&vault, &vault, "obj", M));
    }
    all.push(class("kv-throttle-new", "kv-throttle", "new", M));
    all.push(class("kv-rotate", "kv-rotate", "value", 1));
    all
}

// ------------------------------------------------------------ a driver run

/// A tiny PRNG (xorshift) for kubelet's jitter.
#[derive(Debug)]
struct Rng(u64);

impl Rng {
    fn new() -> Rng {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1);
        Rng(seed | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    /// Uniform in [lo, hi).
    fn between(&mut self, lo: Duration, hi: Duration) -> Duration {
        let span = (hi - lo).as_millis() as u64;
        lo + Duration::from_millis(self.next() % span.max(1))
    }
}

/// pod uid → (pod, class, next republish).
type Schedule = HashMap<String, (Pod, String, Instant)>;

/// Kubelet's periodic republish of every mounted volume (`requiresRepublish`).
#[derive(Clone)]
struct Republisher {
    entries: Arc<Mutex<Schedule>>,
    /// Republishes sent, per class.
    sent: Arc<Mutex<BTreeMap<String, u64>>>,
}

impl Republisher {
    fn start(kubelet: Kubelet) -> Republisher {
        let r = Republisher {
            entries: Arc::default(),
            sent: Arc::default(),
        };
        let me = r.clone();
        tokio::spawn(async move {
            let mut rng = Rng::new();
            loop {
                tokio::time::sleep(Duration::from_millis(200)).await;
                let now = Instant::now();
                let due: Vec<(Pod, String)> = {
                    let mut entries = me.entries.lock().unwrap();
                    entries
                        .values_mut()
                        .filter(|(_, _, at)| *at <= now)
                        .map(|(pod, class, at)| {
                            *at = now + rng.between(REPUBLISH_MIN, REPUBLISH_MAX);
                            (pod.clone(), class.clone())
                        })
                        .collect()
                };
                for (pod, class) in due {
                    *me.sent.lock().unwrap().entry(class).or_default() += 1;
                    let kubelet = kubelet.clone();
                    tokio::spawn(async move {
                        let _ = kubelet
                            .publish(&pod, VOLUME, &PublishExtras::default())
                            .await;
                    });
                }
            }
        });
        r
    }

    fn add(&self, pod: &Pod, class: &str) {
        let mut rng = Rng::new();
        let first = Instant::now() + rng.between(REPUBLISH_MIN, REPUBLISH_MAX);
        self.entries.lock().unwrap().insert(
            pod.metadata.uid.clone().unwrap_or_default(),
            (pod.clone(), class.to_owned(), first),
        );
    }

    fn remove(&self, pod: &Pod) {
        self.entries
            .lock()
            .unwrap()
            .remove(pod.metadata.uid.as_deref().unwrap_or_default());
    }

    fn sent(&self, class: &str) -> u64 {
        self.sent.lock().unwrap().get(class).copied().unwrap_or(0)
    }
}

struct Run {
    peer: Peer,
    config: Config,
    emulator: EmulatorHandle,
    plugin: NodePlugin,
    kubelet: Kubelet,
    cluster: Cluster,
    namespace: String,
    node: String,
    work: PathBuf,
    republisher: Republisher,
    seq: AtomicUsize,
}

fn pod_of(class: &str) -> Pod {
    let mut pod = parse_pod(SEED_POD).unwrap();
    pod.spec.as_mut().unwrap().volumes.as_mut().unwrap()[0]
        .csi
        .as_mut()
        .unwrap()
        .volume_attributes
        .as_mut()
        .unwrap()
        .insert("secretProviderClass".into(), class.into());
    pod
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The `p` quantile (0..=1) of sorted values.
fn quantile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(|a, b| a.total_cmp(b));
    v
}

impl Run {
    async fn start(peer: Peer, config: &Config, sandbox: &Sandbox) -> anyhow::Result<Run> {
        let tag = match peer {
            Peer::Secretfs => "secretfs",
            _ => "upstream",
        };
        let suffix = format!(
            "{:06x}",
            (std::process::id() as u64 ^ Rng::new().next()) & 0xffffff
        );
        let work = std::env::temp_dir().join(format!("peer-bench-{tag}-{suffix}"));
        std::fs::create_dir_all(&work)?;
        let ca = work.join("emulator-ca.pem");
        let emulator = sandbox.emulator(seed()?, &ca).await?;
        let cluster = Cluster::connect(&config.kubeconfig).await?;
        let node = format!("bench-{tag}-{suffix}");
        let namespace = format!("bench-{tag}-{suffix}");
        cluster.ensure_node(&node).await?;
        cluster.namespace(&namespace).await?;
        for class in classes() {
            cluster.apply(&namespace, &class).await?;
        }
        let paths = PluginPaths {
            peers_bin: config.peers_bin.clone(),
            secretfs: config.secretfs.clone(),
            kubeconfig: config.kubeconfig.clone(),
            ca,
            dir: work.join("node"),
        };
        let options = NodeOptions {
            node: node.clone(),
            rotation: Some(INTERVAL),
            sync_secrets: false,
            metrics_port: 8095,
            provider_cache_max_age: None,
        };
        let plugin = NodePlugin::start(peer, &paths, &options).await?;
        let kubelet = Kubelet::connect(&plugin.csi_socket, &work.join("kubelet")).await?;
        let republisher = Republisher::start(kubelet.clone());
        Ok(Run {
            peer,
            config: config.clone(),
            emulator,
            plugin,
            kubelet,
            cluster,
            namespace,
            node,
            work,
            republisher,
            seq: AtomicUsize::new(0),
        })
    }

    async fn new_pod(&self, class: &str) -> anyhow::Result<Pod> {
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        self.cluster
            .create_pod(
                &self.namespace,
                &pod_of(class),
                &format!("{class}-{n:04}"),
                &self.node,
            )
            .await
    }

    async fn publish(&self, pod: &Pod) -> anyhow::Result<Duration> {
        let start = Instant::now();
        self.kubelet
            .publish(pod, VOLUME, &PublishExtras::default())
            .await
            .with_context(|| format!("{}: publish", self.peer.label()))?;
        Ok(start.elapsed())
    }

    /// Publishes and keeps the volume republished like kubelet does.
    async fn mount(&self, class: &str) -> anyhow::Result<Pod> {
        let pod = self.new_pod(class).await?;
        self.publish(&pod).await?;
        self.republisher.add(&pod, class);
        Ok(pod)
    }

    async fn unmount(&self, pod: &Pod) -> anyhow::Result<()> {
        self.republisher.remove(pod);
        self.kubelet.unpublish(pod, VOLUME).await?;
        let name = pod.metadata.name.clone().unwrap_or_default();
        let _ = self.cluster.delete_pod(&self.namespace, &name).await;
        Ok(())
    }

    fn target(&self, pod: &Pod) -> PathBuf {
        self.kubelet.target_path(pod, VOLUME)
    }

    fn count(&self, filter: &CounterFilter) -> u64 {
        self.emulator.control().count(filter)
    }

    fn log(&self, what: &str) {
        eprintln!(
            "peer-bench: {} {}: {what}",
            chrono_now(),
            match self.peer {
                Peer::Secretfs => "secretfs",
                _ => "upstream",
            }
        );
    }
}

fn chrono_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    format!(
        "{:02}:{:02}:{:02}",
        secs / 3600 % 24,
        secs / 60 % 60,
        secs % 60
    )
}

// ----------------------------------------------------------------- the rows

async fn publish_row(run: &Run, class: &str, vault: &str) -> anyhow::Result<Latencies> {
    let fault = run
        .emulator
        .control()
        .add_fault(FaultSpec::new(FaultKind::Latency { millis: 25 }).vault(vault));
    let mut times = Vec::new();
    for _ in 0..run.config.publishes {
        let pod = run.new_pod(class).await?;
        times.push(ms(run.publish(&pod).await?));
        run.unmount(&pod).await?;
    }
    run.emulator.control().remove_fault(fault);
    let first = times[0];
    let later = sorted(times[1..].to_vec());
    Ok(Latencies {
        first_ms: first,
        p50_ms: quantile(&later, 0.5),
        p99_ms: quantile(&later, 0.99),
        n: later.len(),
    })
}

/// open + one read(2) into 128 KiB + close, `n` times; microseconds.
fn read_loop(path: &Path, n: usize) -> anyhow::Result<Vec<f64>> {
    let mut buf = vec![0u8; 128 * 1024];
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let start = Instant::now();
        let mut f = std::fs::File::open(path)?;
        let got = f.read(&mut buf)?;
        drop(f);
        out.push(start.elapsed().as_secs_f64() * 1e6);
        if got != VALUE_BYTES {
            bail!("read {got} bytes of {}", path.display());
        }
    }
    Ok(sorted(out))
}

async fn read_row(run: &Run) -> anyhow::Result<Reads> {
    let pod = run.mount("kv-read").await?;
    let file = run.target(&pod).join("obj-0");
    let tmpfs = run.work.join("tmpfs");
    std::fs::create_dir_all(&tmpfs)?;
    let status = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "tmpfs"])
        .arg(&tmpfs)
        .status()?;
    if !status.success() {
        bail!("mount -t tmpfs failed");
    }
    let baseline = tmpfs.join("obj-0");
    std::fs::write(&baseline, std::fs::read(&file)?)?;
    let n = run.config.reads;
    let (file2, baseline2) = (file.clone(), baseline.clone());
    let (ours, base) = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
        // Warm both, then alternate in blocks so drift hits both alike.
        read_loop(&file2, 1000)?;
        read_loop(&baseline2, 1000)?;
        let mut a = Vec::new();
        let mut b = Vec::new();
        for _ in 0..10 {
            a.extend(read_loop(&file2, n / 10)?);
            b.extend(read_loop(&baseline2, n / 10)?);
        }
        Ok((sorted(a), sorted(b)))
    })
    .await??;
    let _ = std::process::Command::new("umount").arg(&tmpfs).status();
    run.unmount(&pod).await?;
    Ok(Reads {
        p50_us: quantile(&ours, 0.5),
        p99_us: quantile(&ours, 0.99),
        tmpfs_p50_us: quantile(&base, 0.5),
        tmpfs_p99_us: quantile(&base, 0.99),
    })
}

/// KiB used by the tmpfs mounted at `dir`, 0 if it is no tmpfs.
fn tmpfs_used_kib(dir: &Path) -> u64 {
    match rustix::fs::statfs(dir) {
        Ok(s) if s.f_type == 0x0102_1994 => {
            (s.f_blocks.saturating_sub(s.f_bfree)) * s.f_bsize as u64 / 1024
        }
        _ => 0,
    }
}

async fn rss_row(run: &Run, idle: u64) -> anyhow::Result<Memory> {
    let mut pods = Vec::new();
    for _ in 0..110 {
        pods.push(run.mount("kv-rss").await?);
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    let loaded = run.plugin.rss_kib();
    let tmpfs: u64 = pods.iter().map(|p| tmpfs_used_kib(&run.target(p))).sum();
    for pod in &pods {
        run.unmount(pod).await?;
    }
    Ok(Memory {
        idle_kib: idle,
        loaded_kib: loaded,
        tmpfs_kib: tmpfs,
    })
}

/// Kubelet's retry of a failed mount: 0.5 s, doubling, at most 2 m 2 s;
/// each attempt bounded by kubelet's 2-minute CSI timeout. Seconds until
/// the volume is published, or None after `limit`.
async fn start_pod(run: &Run, pod: &Pod, limit: Duration) -> Option<f64> {
    let start = Instant::now();
    let mut backoff = Duration::from_millis(500);
    loop {
        let attempt = tokio::time::timeout(
            Duration::from_secs(120),
            run.kubelet.publish(pod, VOLUME, &PublishExtras::default()),
        )
        .await;
        if matches!(attempt, Ok(Ok(_))) {
            return Some(start.elapsed().as_secs_f64());
        }
        if start.elapsed() + backoff > limit {
            return None;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(122));
    }
}

async fn read_value(path: &Path) -> Option<Vec<u8>> {
    tokio::fs::read(path).await.ok()
}

/// Waits until every file holds `want`; seconds from `since`, per file.
async fn wait_for_value(
    files: &[PathBuf],
    want: &[u8],
    since: Instant,
    limit: Duration,
) -> Vec<f64> {
    let mut seen: Vec<Option<f64>> = vec![None; files.len()];
    while seen.iter().any(Option::is_none) && since.elapsed() < limit {
        for (i, f) in files.iter().enumerate() {
            if seen[i].is_none() && read_value(f).await.as_deref() == Some(want) {
                seen[i] = Some(since.elapsed().as_secs_f64());
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    seen.into_iter()
        .map(|s| s.unwrap_or(f64::INFINITY))
        .collect()
}

async fn steady_row(run: &Run, results: &mut Results) -> anyhow::Result<()> {
    run.log("steady: mounting 1 + 10 + 100 + 10 + 10 pods");
    let tokens_at_start = run.count(&CounterFilter::route(Route::ImdsToken));
    let challenges_at_start = run.count(&CounterFilter::default().identity("").status(401));
    let mut cycle_pods = BTreeMap::new();
    for p in CYCLE_PODS {
        let class = format!("kv-cycle-{p}");
        let mut pods = Vec::new();
        for _ in 0..p {
            pods.push(run.mount(&class).await?);
        }
        cycle_pods.insert(p, pods);
    }
    let mut rotate_pods = Vec::new();
    for _ in 0..ROTATE_PODS {
        rotate_pods.push(run.mount("kv-rotate").await?);
    }
    let mut throttle_pods = Vec::new();
    for _ in 0..THROTTLE_PODS {
        throttle_pods.push(run.mount("kv-throttle").await?);
    }
    let mounted = Instant::now();
    results.mounts = CYCLE_PODS.iter().sum::<usize>() + ROTATE_PODS + THROTTLE_PODS;
    results.mount_tokens = run.count(&CounterFilter::route(Route::ImdsToken)) - tokens_at_start;
    results.mount_challenges =
        run.count(&CounterFilter::default().identity("").status(401)) - challenges_at_start;
    // Every volume has been mounted longer than the interval: upstream's
    // republishes call the provider from now on, secretfs has refreshed each
    // volume once.
    let ready = mounted + INTERVAL + Duration::from_secs(15);
    run.log("steady: waiting one interval (2 m 15 s)");
    tokio::time::sleep_until(ready.into()).await;
    run.plugin_alive()?;

    // The cycle window: one interval.
    let gets = |p: usize| {
        run.count(
            &CounterFilter::route(Route::SecretGet)
                .vault(&format!("kv-cycle-{p}"))
                .status(200),
        )
    };
    let challenges = |p: usize| {
        run.count(
            &CounterFilter::default()
                .vault(&format!("kv-cycle-{p}"))
                .identity("")
                .status(401),
        )
    };
    let before: Vec<(u64, u64, u64)> = CYCLE_PODS
        .iter()
        .map(|&p| {
            (
                gets(p),
                challenges(p),
                run.republisher.sent(&format!("kv-cycle-{p}")),
            )
        })
        .collect();
    let tokens_before = run.count(&CounterFilter::route(Route::ImdsToken));
    let window_end = ready + INTERVAL;

    // Rotation: `writes` vault writes, each once every pod has the last.
    run.log("steady: rotation writes and the throttle window");
    let rotate_files: Vec<PathBuf> = rotate_pods
        .iter()
        .map(|p| run.target(p).join("value"))
        .collect();
    let rotation = async {
        let mut out = Vec::new();
        for generation in 1..=run.config.writes {
            tokio::time::sleep(Duration::from_secs(5)).await;
            let v = format!("generation-{generation}");
            run.emulator
                .control()
                .set_secret("kv-rotate", "value", &v)?;
            let at = Instant::now();
            out.push(
                wait_for_value(&rotate_files, v.as_bytes(), at, Duration::from_secs(300)).await,
            );
        }
        let mut on_demand = Vec::new();
        if let Some(admin) = &run.plugin.admin_socket {
            // `secretfs refresh` refreshes every volume: not inside the
            // cycle window.
            tokio::time::sleep_until(window_end.into()).await;
            tokio::time::sleep(Duration::from_secs(5)).await;
            let v = "generation-on-demand";
            run.emulator.control().set_secret("kv-rotate", "value", v)?;
            let at = Instant::now();
            let status = tokio::process::Command::new(&run.config.secretfs)
                .arg("refresh")
                .arg(format!("--admin-socket={}", admin.display()))
                .stdout(std::process::Stdio::null())
                .status()
                .await?;
            if !status.success() {
                bail!("secretfs refresh failed");
            }
            on_demand =
                wait_for_value(&rotate_files, v.as_bytes(), at, Duration::from_secs(60)).await;
        }
        anyhow::Ok((out, on_demand))
    };

    // Throttling: 60 s of 429 + Retry-After on kv-throttle; pods start
    // 5 s in: 3 of the class the node already serves, 2 of a new class.
    let throttle = async {
        tokio::time::sleep(Duration::from_secs(10)).await;
        let all = CounterFilter::default().vault("kv-throttle");
        let requests_before = run.count(&all);
        let throttled_before = run.count(&all.clone().status(429));
        let fault = run.emulator.control().add_fault(
            FaultSpec::new(FaultKind::Throttle {
                retry_after: Some(RETRY_AFTER),
            })
            .vault("kv-throttle"),
        );
        let fault_start = Instant::now();
        let starts = async {
            tokio::time::sleep(Duration::from_secs(5)).await;
            let mut pods = Vec::new();
            for class in [
                "kv-throttle",
                "kv-throttle",
                "kv-throttle",
                "kv-throttle-new",
                "kv-throttle-new",
            ] {
                pods.push((class, run.new_pod(class).await?));
            }
            let limit = Duration::from_secs(240);
            let started = futures::future::join_all(pods.iter().map(|(class, p)| async move {
                let started = start_pod(run, p, limit).await;
                if started.is_some() {
                    // Kubelet republishes a running pod's volume from now on.
                    run.republisher.add(p, class);
                }
                let target = run.target(p);
                let count = || {
                    secretfs_e2e::peers::read_volume(&target)
                        .map(|f| f.len())
                        .unwrap_or(0)
                };
                let files_at_start = count();
                let mut complete_s = None;
                if let Some(s) = started {
                    let since = Instant::now() - Duration::from_secs_f64(s);
                    while since.elapsed() < Duration::from_secs(300) {
                        if count() == M {
                            complete_s = Some(since.elapsed().as_secs_f64());
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
                PodStart {
                    started_s: started,
                    files_at_start,
                    complete_s,
                }
            }))
            .await;
            anyhow::Ok((pods, started))
        };
        let window = async {
            tokio::time::sleep_until((fault_start + THROTTLE_FOR).into()).await;
            run.emulator.control().remove_fault(fault);
            (
                run.count(&all) - requests_before,
                run.count(&all.clone().status(429)) - throttled_before,
            )
        };
        let (started, (requests, throttled)) = tokio::join!(starts, window);
        let (pods, started) = started?;
        let mut t = Throttle {
            requests,
            throttled,
            ..Throttle::default()
        };
        for ((class, _), s) in pods.iter().zip(started) {
            if *class == "kv-throttle" {
                t.same_class.push(s);
            } else {
                t.new_class.push(s);
            }
        }
        anyhow::Ok((t, pods))
    };

    let cycle = async {
        tokio::time::sleep_until(window_end.into()).await;
        let cycles: Vec<Cycle> = CYCLE_PODS
            .iter()
            .zip(&before)
            .map(|(&p, &(g, c, r))| Cycle {
                pods: p,
                gets: gets(p) - g,
                challenges: challenges(p) - c,
                republishes: run.republisher.sent(&format!("kv-cycle-{p}")) - r,
            })
            .collect();
        (
            cycles,
            run.count(&CounterFilter::route(Route::ImdsToken)) - tokens_before,
        )
    };

    let (rotation, throttle, (cycles, tokens)) = tokio::join!(rotation, throttle, cycle);
    let (rotation, on_demand) = rotation?;
    let (throttle, new_pods) = throttle?;
    results.cycles = cycles;
    results.cycle_tokens = Some(tokens);
    results.rotation_s = rotation;
    results.rotation_on_demand_s = on_demand;
    results.throttle = Some(throttle);
    run.plugin_alive()?;

    run.log("steady: unmounting");
    let all_pods = cycle_pods
        .values()
        .flatten()
        .chain(&rotate_pods)
        .chain(&throttle_pods)
        .chain(new_pods.iter().map(|(_, p)| p));
    for pod in all_pods {
        let _ = run.unmount(pod).await;
    }
    Ok(())
}

impl Run {
    fn plugin_alive(&self) -> anyhow::Result<()> {
        // check_alive needs &mut; the daemons are only read here.
        for d in &self.plugin.daemons {
            if !Path::new(&format!("/proc/{}", d.pid())).exists() {
                bail!("{} is gone; end of its log:\n{}", d.name, d.log_tail(40));
            }
        }
        Ok(())
    }
}

async fn run_driver(peer: Peer, config: &Config, sandbox: &Sandbox) -> anyhow::Result<Results> {
    let mut run = Run::start(peer, config, sandbox).await?;
    run.log("started");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let idle = run.plugin.rss_kib();
    let mut results = Results::default();
    let rows = &config.rows;
    if rows.iter().any(|r| r == "publish") {
        run.log("publish: seed class");
        results.publish_seed = Some(publish_row(&run, "azure-kvname", "kv-demo").await?);
        run.log("publish: 10 objects");
        results.publish_ten = Some(publish_row(&run, "kv-ten", "kv-ten").await?);
    }
    if rows.iter().any(|r| r == "read") {
        run.log("read");
        results.read = Some(read_row(&run).await?);
    }
    if rows.iter().any(|r| r == "rss") {
        run.log("rss: 110 volumes");
        results.memory = Some(rss_row(&run, idle).await?);
    }
    if rows.iter().any(|r| r == "steady") {
        steady_row(&run, &mut results).await?;
    }
    run.plugin.check_alive()?;
    results.run_pods = run.seq.load(Ordering::Relaxed);
    results.run_tokens = run.count(&CounterFilter::route(Route::ImdsToken));
    run.log("done");
    let _ = std::fs::remove_dir_all(&run.work);
    Ok(results)
}

// ------------------------------------------------------------------ output

fn fmt_ms(v: f64) -> String {
    if v.is_nan() {
        "–".into()
    } else {
        format!("{v:.1} ms")
    }
}

fn ratio(upstream: f64, ours: f64) -> String {
    if upstream.is_finite() && ours.is_finite() && ours > 0.0 {
        format!("{:.2}", upstream / ours)
    } else {
        "–".into()
    }
}

fn secs(v: &[f64]) -> (f64, f64) {
    let s = sorted(v.to_vec());
    (quantile(&s, 0.5), s.last().copied().unwrap_or(f64::NAN))
}

fn started(v: &[PodStart]) -> String {
    let n = v.iter().filter(|s| s.started_s.is_some()).count();
    let worst = |f: fn(&PodStart) -> Option<f64>| v.iter().filter_map(f).fold(0.0, f64::max);
    let mut text = if n == 0 {
        format!("0/{} started", v.len())
    } else {
        format!(
            "{n}/{} started, the last after {:.1} s",
            v.len(),
            worst(|p| p.started_s)
        )
    };
    let empty = v
        .iter()
        .filter(|p| p.started_s.is_some() && p.files_at_start < M)
        .count();
    if empty > 0 {
        let least = v.iter().map(|p| p.files_at_start).min().unwrap_or(0);
        write!(text, "; {empty} of them with {least} of {M} files").unwrap();
        let complete = v.iter().filter(|p| p.complete_s.is_some()).count();
        if complete == v.len() {
            write!(text, ", all {M} after {:.0} s", worst(|p| p.complete_s)).unwrap();
        } else {
            write!(text, ", {complete} complete within 5 min").unwrap();
        }
    }
    text
}

fn table(results: &BTreeMap<&str, Results>) -> String {
    let empty = Results::default();
    let s = results.get("secretfs").unwrap_or(&empty);
    let u = results.get("upstream").unwrap_or(&empty);
    let mut out = String::new();
    let mut row = |figure: &str, sv: String, uv: String, r: String| {
        writeln!(out, "| {figure} | {sv} | {uv} | {r} |").unwrap();
    };
    for (sc, uc) in s.cycles.iter().zip(&u.cycles) {
        row(
            &format!(
                "vault GETs in one 2-min interval, {} pod(s) × {M} objects (republishes sent)",
                sc.pods
            ),
            format!("{} ({})", sc.gets, sc.republishes),
            format!("{} ({})", uc.gets, uc.republishes),
            ratio(uc.gets as f64, sc.gets as f64),
        );
    }
    for (sc, uc) in s.cycles.iter().zip(&u.cycles) {
        row(
            &format!(
                "unauthenticated requests (401 challenges) in that interval, {} pod(s)",
                sc.pods
            ),
            sc.challenges.to_string(),
            uc.challenges.to_string(),
            ratio(uc.challenges as f64, sc.challenges as f64),
        );
    }
    if s.run_pods > 0 && u.run_pods > 0 {
        row(
            "IMDS token requests in the whole run (pods mounted)",
            format!("{} ({})", s.run_tokens, s.run_pods),
            format!("{} ({})", u.run_tokens, u.run_pods),
            "–".into(),
        );
    }
    if let (Some(st), Some(ut)) = (s.cycle_tokens, u.cycle_tokens) {
        row(
            "IMDS token requests in that interval, all pods",
            st.to_string(),
            ut.to_string(),
            "–".into(),
        );
    }
    if s.mounts > 0 && u.mounts > 0 {
        row(
            &format!(
                "{} first mounts (one identity): IMDS token requests / 401 challenges",
                s.mounts
            ),
            format!("{} / {}", s.mount_tokens, s.mount_challenges),
            format!("{} / {}", u.mount_tokens, u.mount_challenges),
            "–".into(),
        );
    }
    for (name, sl, ul) in [
        ("seed class", &s.publish_seed, &u.publish_seed),
        ("10 objects", &s.publish_ten, &u.publish_ten),
    ] {
        if let (Some(sl), Some(ul)) = (sl, ul) {
            row(
                &format!("NodePublishVolume, {name}, 25 ms vault latency: first mount"),
                fmt_ms(sl.first_ms),
                fmt_ms(ul.first_ms),
                ratio(ul.first_ms, sl.first_ms),
            );
            row(
                &format!("NodePublishVolume, {name}: later pods p50 (n = {})", sl.n),
                fmt_ms(sl.p50_ms),
                fmt_ms(ul.p50_ms),
                ratio(ul.p50_ms, sl.p50_ms),
            );
            row(
                &format!("NodePublishVolume, {name}: later pods p99"),
                fmt_ms(sl.p99_ms),
                fmt_ms(ul.p99_ms),
                ratio(ul.p99_ms, sl.p99_ms),
            );
        }
    }
    if let (Some(sm), Some(um)) = (&s.memory, &u.memory) {
        let mib = |k: u64| format!("{:.1} MiB", k as f64 / 1024.0);
        row(
            "RSS, node plugin + provider (secretfs: + keeper), idle",
            mib(sm.idle_kib),
            mib(um.idle_kib),
            ratio(um.idle_kib as f64, sm.idle_kib as f64),
        );
        row(
            "RSS at 110 volumes × 10 objects × 4 KiB",
            mib(sm.loaded_kib),
            mib(um.loaded_kib),
            ratio(um.loaded_kib as f64, sm.loaded_kib as f64),
        );
        row(
            "RSS + the volumes' tmpfs pages",
            mib(sm.loaded_kib + sm.tmpfs_kib),
            mib(um.loaded_kib + um.tmpfs_kib),
            ratio(
                (um.loaded_kib + um.tmpfs_kib) as f64,
                (sm.loaded_kib + sm.tmpfs_kib) as f64,
            ),
        );
    }
    if !s.rotation_s.is_empty() && !u.rotation_s.is_empty() {
        let first = |r: &Results| r.rotation_s[0].clone();
        let later = |r: &Results| r.rotation_s[1..].concat();
        for (what, sv, uv) in [
            (
                "after more than 2 min without a change".to_owned(),
                first(s),
                first(u),
            ),
            (
                format!(
                    "{} more writes, each 5 s after the last reached every pod",
                    s.rotation_s.len() - 1
                ),
                later(s),
                later(u),
            ),
        ] {
            if sv.is_empty() || uv.is_empty() {
                continue;
            }
            let (sp, sm) = secs(&sv);
            let (up, um) = secs(&uv);
            row(
                &format!("vault write → new bytes in {ROTATE_PODS} pods' files, p50 / max: {what}"),
                format!("{sp:.1} s / {sm:.1} s"),
                format!("{up:.1} s / {um:.1} s"),
                ratio(up, sp),
            );
        }
        if !s.rotation_on_demand_s.is_empty() {
            let (op, om) = secs(&s.rotation_on_demand_s);
            row(
                "… with `secretfs refresh` after the write (no upstream equivalent since v1.6)",
                format!("{op:.2} s / {om:.2} s"),
                "–".into(),
                "–".into(),
            );
        }
    }
    if let (Some(st), Some(ut)) = (&s.throttle, &u.throttle) {
        row(
            &format!(
                "requests to a vault answering 429 + Retry-After: {RETRY_AFTER} for 60 s (429s)"
            ),
            format!("{} ({})", st.requests, st.throttled),
            format!("{} ({})", ut.requests, ut.throttled),
            ratio(ut.requests as f64, st.requests as f64),
        );
        row(
            "… pods started in it, class already mounted",
            started(&st.same_class),
            started(&ut.same_class),
            "–".into(),
        );
        row(
            "… pods started in it, new class",
            started(&st.new_class),
            started(&ut.new_class),
            "–".into(),
        );
    }
    if let (Some(sr), Some(ur)) = (&s.read, &u.read) {
        row(
            "warm open+read+close of a 4 KiB file, p50 (tmpfs in the same run)",
            format!("{:.1} µs ({:.1})", sr.p50_us, sr.tmpfs_p50_us),
            format!("{:.1} µs ({:.1})", ur.p50_us, ur.tmpfs_p50_us),
            ratio(ur.p50_us, sr.p50_us),
        );
        row(
            "… p99",
            format!("{:.1} µs ({:.1})", sr.p99_us, sr.tmpfs_p99_us),
            format!("{:.1} µs ({:.1})", ur.p99_us, ur.tmpfs_p99_us),
            ratio(ur.p99_us, sr.p99_us),
        );
    }
    out
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    let sandbox = Sandbox::require()?;
    let mut results = BTreeMap::new();
    for driver in &config.drivers {
        let peer = match driver.as_str() {
            "upstream" => Peer::Upstream,
            "secretfs" => Peer::Secretfs,
            other => bail!("--drivers: {other:?} is neither upstream nor secretfs"),
        };
        let name = if peer == Peer::Secretfs {
            "secretfs"
        } else {
            "upstream"
        };
        results.insert(name, run_driver(peer, &config, &sandbox).await?);
    }
    if let Some(path) = &config.json {
        std::fs::write(path, serde_json::to_string_pretty(&results)?)?;
    }
    println!("\n| figure | secretfs | upstream | upstream ÷ secretfs |\n|---|---|---|---|");
    print!("{}", table(&results));
    Ok(())
}
