//! The vault's budget, seen by mounted volumes of the real provider: the
//! per-vault token bucket, a 429 `Retry-After` pausing the whole vault (every
//! object, every volume) while the last good values are served, and
//! on-demand refreshes that skip the interval but neither the bucket nor the
//! shared cache: N volumes × M objects of one identity cost M GETs.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use secretfs::node::driver::{Driver, DriverConfig};
use secretfs::node::rotation::{self, RotationConfig};
use secretfs::provider::Provider;
use secretfs::provider::azure::AzureProvider;
use secretfs::provider::azure::rate::RateLimit;
use secretfs::spc::SpcDir;
use secretfs_csi::{PublishRequest, UnpublishRequest, VolumeContext, VolumeManager, keys};
use secretfs_e2e::prereq::fuse_available;
use secretfs_e2e::{CounterFilter, EmulatorHandle, FaultKind, FaultSpec, Route};
use secretfs_fuse::ReadMode;
use secretfs_secrets::SecretMap;

use crate::azure_provider::common::*;

const VAULT: &str = "kv-demo";

/// Secrets `<prefix>0`… in the vault, a class `name` of them read with the
/// node's managed identity, and a driver whose provider has `rate`.
struct Bed {
    driver: Arc<Driver>,
    dir: tempfile::TempDir,
    class: String,
    names: Vec<String>,
}

impl Bed {
    fn new(emu: &EmulatorHandle, class: &str, prefix: &str, count: usize, rate: RateLimit) -> Bed {
        let names: Vec<String> = (0..count).map(|i| format!("{prefix}{i}")).collect();
        for name in &names {
            emu.control()
                .set_secret(VAULT, name, &format!("{name}-v1"))
                .unwrap();
        }
        let mut cfg = config(emu);
        cfg.deadline = Duration::from_secs(20);
        cfg.rate_limit = rate;
        let provider = AzureProvider::new(cfg).unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("classes")).unwrap();
        let bed = Bed {
            driver: Arc::new(Driver::new(
                DriverConfig {
                    node_name: "node-1".into(),
                    read_mode: ReadMode::Atomic,
                    rotation_interval: Duration::from_secs(120),
                },
                Arc::new(SpcDir::new(dir.path().join("classes"))),
                [Arc::new(provider) as Arc<dyn Provider>],
            )),
            dir,
            class: class.to_owned(),
            names,
        };
        bed.write_class(None);
        bed
    }

    fn write_class(&self, requested_at: Option<&str>) {
        let entries: Vec<String> = self
            .names
            .iter()
            .map(|n| object(n, "secret", &[]))
            .collect();
        let objects = objects(&entries.iter().map(String::as_str).collect::<Vec<_>>());
        let parameters = serde_json::json!({
            "keyvaultName": VAULT,
            "tenantId": TENANT,
            "useVMManagedIdentity": "true",
            "userAssignedIdentityID": NODE_MI,
            "objects": objects,
        });
        let annotations = requested_at
            .map(|at| format!("  annotations: {{\"secretfs.io/refresh-requested-at\": {at:?}}}\n"))
            .unwrap_or_default();
        let manifest = format!(
            "apiVersion: secrets-store.csi.x-k8s.io/v1\nkind: SecretProviderClass\nmetadata:\n  name: {}\n  namespace: default\n{annotations}spec:\n  provider: azure\n  parameters: {parameters}\n",
            self.class
        );
        std::fs::write(self.dir.path().join("classes/class.yaml"), manifest).unwrap();
    }

    fn target(&self, pod: usize) -> PathBuf {
        self.dir.path().join(format!(
            "kubelet/pods/5707a000-0000-4000-8000-{pod:012}/volumes/kubernetes.io~csi/secrets/mount"
        ))
    }

    async fn publish(&self, pods: usize) {
        for pod in 0..pods {
            let uid = format!("5707a000-0000-4000-8000-{pod:012}");
            let request = PublishRequest {
                volume_id: format!("csi-{pod}"),
                target_path: self.target(pod),
                volume_context: VolumeContext::new(
                    [
                        (keys::POD_NAME, format!("pod-{pod}").as_str()),
                        (keys::POD_NAMESPACE, "default"),
                        (keys::POD_UID, uid.as_str()),
                        (keys::SECRET_PROVIDER_CLASS, self.class.as_str()),
                    ]
                    .map(|(k, v)| (k.to_owned(), v.to_owned())),
                ),
                secrets: SecretMap::default(),
                mount_group: None,
                mount_flags: vec![],
            };
            self.driver.publish(request).await.unwrap();
        }
    }

    /// Whether every file of `pods` volumes shows `<name>-<version>`.
    fn all_show(&self, pods: usize, version: &str) -> bool {
        (0..pods).all(|pod| {
            self.names.iter().all(|name| {
                std::fs::read_to_string(self.target(pod).join(name)).unwrap()
                    == format!("{name}-{version}")
            })
        })
    }

    fn set_all(&self, emu: &EmulatorHandle, version: &str) {
        for name in &self.names {
            emu.control()
                .set_secret(VAULT, name, &format!("{name}-{version}"))
                .unwrap();
        }
    }

    async fn unpublish(&self, pods: usize) {
        for pod in 0..pods {
            self.driver
                .unpublish(UnpublishRequest {
                    volume_id: format!("csi-{pod}"),
                    target_path: self.target(pod),
                })
                .await
                .unwrap();
        }
    }
}

fn gets(emu: &EmulatorHandle) -> u64 {
    emu.count(&CounterFilter::route(Route::SecretGet))
}

async fn wait_for(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Five volumes × three objects, one identity: an on-demand refresh (the
/// class annotation, then `secretfs refresh` over the admin socket) costs
/// three GETs, not fifteen, even when the volumes are refreshed one after
/// another, and still waits for the bucket (one request per 400 ms here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_on_demand_refresh_costs_one_get_per_object_within_the_bucket() {
    if !fuse_available() {
        return;
    }
    const PODS: usize = 5;
    let emu = start().await;
    let rate = RateLimit {
        requests: 1,
        per: Duration::from_millis(400),
    };
    let bed = Bed::new(&emu, "on-demand", "od", 3, rate);
    bed.publish(PODS).await;
    assert!(bed.all_show(PODS, "v1"));
    // One refresh at a time: the volumes cannot share a fetch in flight,
    // only what was fetched since the request.
    let scheduler = rotation::spawn(
        bed.driver.clone(),
        RotationConfig {
            interval: Duration::from_secs(3600),
            concurrency: 1,
            tick: Duration::from_millis(50),
            request_check: Duration::from_millis(100),
            ..RotationConfig::default()
        },
    );
    // The scheduler sees the class once without a request; the bucket
    // refills (one token).
    tokio::time::sleep(Duration::from_millis(500)).await;

    bed.set_all(&emu, "v2");
    emu.reset_counters();
    let requested = Instant::now();
    bed.write_class(Some("2026-11-26T16:40:00Z"));
    wait_for("every volume refreshed", Duration::from_secs(10), || {
        bed.all_show(PODS, "v2")
    })
    .await;
    let took = requested.elapsed();
    assert_eq!(
        emu.count(&CounterFilter::route(Route::SecretGet).status(200)),
        3,
        "one GET per object for {PODS} volumes: {:?}",
        emu.counters(&CounterFilter::default())
    );
    assert_eq!(gets(&emu), 3);
    // Three GETs through a bucket of one per 400 ms: the last one waits
    // for two refills (without the bucket this takes a few ms).
    assert!(
        took >= Duration::from_millis(750),
        "the bucket applies: {took:?}"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(gets(&emu), 3, "and nothing more afterwards");
    scheduler.abort();

    // `secretfs refresh` of every volume: the same.
    let socket = bed.dir.path().join("admin.sock");
    let admin = {
        let (socket, driver) = (socket.clone(), bed.driver.clone());
        tokio::spawn(async move {
            secretfs::node::admin::serve(&socket, driver, std::future::pending())
                .await
                .unwrap();
        })
    };
    wait_for("the admin socket", Duration::from_secs(5), || {
        socket.exists()
    })
    .await;
    bed.set_all(&emu, "v3");
    tokio::time::sleep(Duration::from_millis(400)).await;
    emu.reset_counters();
    let requested = Instant::now();
    let results = secretfs::cmd::admin::refresh(&socket, None).await.unwrap();
    let took = requested.elapsed();
    assert_eq!(results.len(), PODS);
    for r in &results {
        assert_eq!((r.replaced, r.error.as_deref()), (3, None), "{r:?}");
    }
    assert!(bed.all_show(PODS, "v3"));
    assert_eq!(
        gets(&emu),
        3,
        "{:?}",
        emu.counters(&CounterFilter::default())
    );
    assert!(
        took >= Duration::from_millis(750),
        "the bucket applies: {took:?}"
    );
    admin.abort();
    bed.unpublish(PODS).await;
}

/// Samples the emulator's GET counter every few milliseconds: (when, GETs,
/// 429s).
fn sample_gets(
    emu: &EmulatorHandle,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<Vec<(Instant, u64, u64)>> {
    let control = emu.control().clone();
    std::thread::spawn(move || {
        let mut samples = Vec::new();
        while !stop.load(Ordering::SeqCst) {
            let all = control.count(&CounterFilter::route(Route::SecretGet));
            let throttled = control.count(&CounterFilter::route(Route::SecretGet).status(429));
            samples.push((Instant::now(), all, throttled));
            std::thread::sleep(Duration::from_millis(5));
        }
        samples
    })
}

fn read_all(bed: &Bed, pods: usize) -> Vec<String> {
    (0..pods)
        .flat_map(|pod| {
            bed.names
                .iter()
                .map(move |name| std::fs::read_to_string(bed.target(pod).join(name)).unwrap())
        })
        .collect()
}

/// Three volumes × ten objects; the vault answers one GET with 429 and
/// `Retry-After: 2`. No request of this node reaches the vault for those
/// 2 s (the bucket alone, 4/s, would have sent the waiting objects every
/// 250 ms), the volumes serve their last good values meanwhile, and
/// afterwards requests resume at the bucket's rate, not in a burst.
/// More objects than the provider fetches at once (20 > 8), six volumes
/// refreshed together for one request, a slow vault: each volume judges
/// every object by one cutoff, taken when it started, so objects waiting
/// their turn behind the concurrency bound still take what another volume
/// fetched since the request. 20 GETs, not one more. (A relative age
/// checked at each object's turn turned some of them away.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_on_demand_refresh_of_many_objects_fetches_each_once() {
    if !fuse_available() {
        return;
    }
    const PODS: usize = 6;
    const OBJECTS: usize = 20;
    let emu = start().await;
    let bed = Bed::new(&emu, "many", "mo", OBJECTS, RateLimit::default());
    bed.publish(PODS).await;
    assert!(bed.all_show(PODS, "v1"));

    bed.set_all(&emu, "v2");
    emu.control()
        .add_fault(FaultSpec::new(FaultKind::Latency { millis: 40 }).vault(VAULT));
    emu.reset_counters();
    let requested_at = Instant::now();
    let refreshes: Vec<_> = (0..PODS)
        .map(|pod| {
            let (driver, target) = (bed.driver.clone(), bed.target(pod));
            tokio::spawn(async move {
                // Staggered starts: later volumes find some objects stored,
                // some under way and some not asked for yet.
                tokio::time::sleep(Duration::from_millis(15 * pod as u64)).await;
                driver.refresh_since(&target, requested_at).await
            })
        })
        .collect();
    for refresh in refreshes {
        refresh.await.unwrap().unwrap();
    }
    assert!(bed.all_show(PODS, "v2"));
    assert_eq!(
        gets(&emu),
        OBJECTS as u64,
        "one GET per object for {PODS} volumes: {:?}",
        emu.counters(&CounterFilter::default())
    );
    bed.unpublish(PODS).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_after_pauses_the_whole_vault_while_the_last_good_values_are_served() {
    if !fuse_available() {
        return;
    }
    const PODS: usize = 3;
    let emu = start().await;
    let rate = RateLimit {
        requests: 4,
        per: Duration::from_secs(1),
    };
    let bed = Bed::new(&emu, "storm", "st", 10, rate);
    bed.publish(PODS).await;
    let good = read_all(&bed, PODS);
    assert!(bed.all_show(PODS, "v1"));

    bed.set_all(&emu, "v2");
    emu.control().add_fault(
        FaultSpec::new(FaultKind::Throttle {
            retry_after: Some(2),
        })
        .vault(VAULT)
        .object("st0")
        .times(1),
    );
    // A full bucket (4 tokens) to start with.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    emu.reset_counters();
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = sample_gets(&emu, stop.clone());
    let requested_at = Instant::now();
    let refreshes: Vec<_> = (0..PODS)
        .map(|pod| {
            let (driver, target) = (bed.driver.clone(), bed.target(pod));
            tokio::spawn(async move { driver.refresh_since(&target, requested_at).await })
        })
        .collect();

    // Wait for the 429, then read the files during the Retry-After.
    let throttled_at = loop {
        if emu.count(&CounterFilter::route(Route::SecretGet).status(429)) > 0 {
            break Instant::now();
        }
        assert!(requested_at.elapsed() < Duration::from_secs(5), "no 429");
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    while throttled_at.elapsed() < Duration::from_millis(1800) {
        assert_eq!(read_all(&bed, PODS), good, "the last good values meanwhile");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for refresh in refreshes {
        let outcome = refresh.await.unwrap().unwrap();
        assert_eq!(outcome.replaced, 10);
    }
    let done = requested_at.elapsed();
    stop.store(true, Ordering::SeqCst);
    let samples = sampler.join().unwrap();
    assert!(bed.all_show(PODS, "v2"));

    // The window: from shortly after the 429 was counted (requests already
    // on the wire may still land) to the end of its Retry-After.
    let first_429 = samples
        .iter()
        .find(|(_, _, throttled)| *throttled > 0)
        .expect("the sampler saw the 429")
        .0;
    let in_window = |at: Instant| {
        at >= first_429 + Duration::from_millis(150)
            && at <= first_429 + Duration::from_millis(1850)
    };
    let window: Vec<u64> = samples
        .iter()
        .filter(|(at, _, _)| in_window(*at))
        .map(|(_, all, _)| *all)
        .collect();
    assert!(window.len() > 100, "sampled the window: {}", window.len());
    assert_eq!(
        window.first(),
        window.last(),
        "no request reached the vault during Retry-After: {:?}",
        samples
            .iter()
            .map(|(at, all, t)| (
                at.saturating_duration_since(requested_at).as_millis(),
                all,
                t
            ))
            .collect::<Vec<_>>()
    );
    let before_window = samples
        .iter()
        .rfind(|(at, _, _)| *at < first_429 + Duration::from_millis(150))
        .unwrap()
        .1;
    assert!(
        (2..=8).contains(&before_window),
        "the bucket's burst went out before the 429: {before_window}"
    );
    // Each object once (the 429 retried once), whatever the number of
    // volumes.
    assert_eq!(
        emu.count(&CounterFilter::route(Route::SecretGet).status(200)),
        10
    );
    assert_eq!(gets(&emu), 11);
    // After the pause: one token, then 4/s for the rest (no burst of the
    // tokens of the pause): at least 2 s + (remaining − 1) / 4 s.
    let remaining = 11 - before_window;
    let least = first_429.saturating_duration_since(requested_at)
        + Duration::from_secs(2)
        + Duration::from_millis(250 * (remaining - 1));
    assert!(
        done + Duration::from_millis(100) >= least,
        "resumed at the bucket's rate: done in {done:?}, expected at least {least:?}"
    );
    bed.unpublish(PODS).await;
}
