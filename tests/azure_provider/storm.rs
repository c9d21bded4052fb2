//! A 429 storm seen by a mounted volume: the per-vault bucket caps the
//! attempts, `Retry-After` spaces them, the refresh gives up within its
//! deadline and the volume keeps serving the last good value; when the storm
//! ends, the next refresh brings the new one.

use std::sync::Arc;
use std::time::{Duration, Instant};

use secretfs::provider::Provider;
use secretfs::provider::azure::AzureProvider;
use secretfs::rate::RateLimit;
use secretfs::spc::SpcDir;
use secretfs::volume::{Driver, DriverConfig};
use secretfs_csi::{ErrorCode, PublishRequest, SecretMap, VolumeContext, VolumeManager, keys};
use secretfs_e2e::prereq::fuse_available;
use secretfs_e2e::{CounterFilter, FaultKind, FaultSpec, Route};
use secretfs_fuse::ReadMode;

use crate::common::*;

const SEED_CLASS: &str = include_str!("../fixtures/seed/secretproviderclass.yaml");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_throttling_storm_keeps_the_last_good_value_within_the_budget() {
    if !fuse_available() {
        return;
    }
    let emu = start().await;
    let mut cfg = config(&emu);
    cfg.deadline = Duration::from_secs(4);
    cfg.rate_limit = RateLimit {
        requests: 3,
        per: Duration::from_secs(1),
    };
    let provider = AzureProvider::new(cfg).unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("classes")).unwrap();
    std::fs::write(dir.path().join("classes/seed.yaml"), SEED_CLASS).unwrap();
    let driver = Driver::new(
        DriverConfig {
            node_name: "node-1".into(),
            read_mode: ReadMode::Atomic,
            rotation_interval: Duration::from_secs(120),
        },
        Arc::new(SpcDir::new(dir.path().join("classes"))),
        [Arc::new(provider) as Arc<dyn Provider>],
    );
    let uid = "5707a000-0000-4000-8000-000000000429";
    let target = dir.path().join(format!(
        "kubelet/pods/{uid}/volumes/kubernetes.io~csi/secrets-store-inline/mount"
    ));
    let request = PublishRequest {
        volume_id: "csi-storm".into(),
        target_path: target.clone(),
        volume_context: VolumeContext::new(
            [
                (keys::POD_NAME, "storm"),
                (keys::POD_NAMESPACE, "default"),
                (keys::POD_UID, uid),
                (keys::SECRET_PROVIDER_CLASS, "azure-kvname"),
            ]
            .map(|(k, v)| (k.to_owned(), v.to_owned())),
        ),
        secrets: SecretMap::default(),
        mount_group: None,
        mount_flags: vec![],
    };
    driver.publish(request).await.unwrap();
    let file = target.join("SECRET_1");
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        "Sql-Passw0rd-from-kv-demo"
    );

    emu.control()
        .set_secret("kv-demo", "sql-password", "after-the-storm")
        .unwrap();
    emu.control().add_fault(
        FaultSpec::new(FaultKind::Throttle {
            retry_after: Some(1),
        })
        .vault("kv-demo"),
    );
    emu.reset_counters();
    let started = Instant::now();
    let err = driver.refresh(&target).await.unwrap_err();
    let elapsed = started.elapsed();
    assert_eq!(err.code, ErrorCode::ResourceExhausted, "{}", err.message);
    assert!(
        err.message.contains("sql-password"),
        "names the object: {}",
        err.message
    );
    assert!(
        elapsed <= Duration::from_secs(8),
        "gave up near its deadline: {elapsed:?}"
    );
    let throttled = emu.count(&CounterFilter::route(Route::SecretGet).status(429));
    assert!(throttled >= 2, "retried: {throttled}");
    assert!(
        elapsed >= Duration::from_secs(throttled.saturating_sub(1)),
        "Retry-After (1 s) spaced {throttled} attempts over {elapsed:?}"
    );
    let allowed = 3 + (3.0 * elapsed.as_secs_f64()).ceil() as u64;
    assert!(
        throttled <= allowed,
        "the bucket allows at most {allowed}, saw {throttled}"
    );
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        "Sql-Passw0rd-from-kv-demo",
        "the last good value is still served"
    );

    emu.control().clear_faults();
    driver.refresh(&target).await.unwrap();
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "after-the-storm");
    driver
        .unpublish(secretfs_csi::UnpublishRequest {
            volume_id: "csi-storm".into(),
            target_path: target,
        })
        .await
        .unwrap();
}
