//! External providers: the socket disappears between publish and rotation
//! (the provider's DaemonSet pod is gone), or the provider hangs past the
//! deadline on a refresh. Refreshes fail with the socket named and the
//! files keep their last good bytes; a new pod's publish fails clearly and
//! mounts nothing; the provider's return heals both.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use secretfs::node::driver::{Driver, DriverConfig};
use secretfs::provider::ProviderRegistry;
use secretfs::provider::external::{ExternalConfig, ExternalRetry};
use secretfs::spc::SpcDir;
use secretfs_csi::{
    ErrorCode, PublishRequest, UnpublishRequest, VolumeContext, VolumeManager, keys,
};
use secretfs_e2e::test_provider::{Behavior, TestProvider};
use secretfs_fuse::ReadMode;
use secretfs_secrets::SecretMap;

use super::common::{assert_mentions, fuse_available, is_mounted, metric_in};

/// A driver whose only provider is `vault`, an external one with a 1 s
/// deadline, at `<dir>/vault.sock`.
struct Setup {
    driver: Driver,
    dir: tempfile::TempDir,
    kubelet: tempfile::TempDir,
    _classes: tempfile::TempDir,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let classes = tempfile::tempdir().unwrap();
    std::fs::write(
        classes.path().join("v.yaml"),
        "apiVersion: secrets-store.csi.x-k8s.io/v1\nkind: SecretProviderClass\n\
         metadata: {name: v, namespace: default}\n\
         spec: {provider: vault, parameters: {objects: foo}}\n",
    )
    .unwrap();
    let external = ExternalConfig {
        dirs: vec![dir.path().to_owned()],
        timeout: Duration::from_secs(1),
        retry: ExternalRetry {
            max_attempts: 3,
            initial_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_millis(200),
            multiplier: 1.1,
        },
        ..ExternalConfig::default()
    };
    let driver = Driver::new(
        DriverConfig {
            node_name: "node-1".into(),
            read_mode: ReadMode::Atomic,
            rotation_interval: Duration::from_secs(120),
        },
        Arc::new(SpcDir::new(classes.path())),
        ProviderRegistry::new(vec![]).with_external(external),
    )
    .with_metrics(secretfs::metrics::Metrics::isolated());
    Setup {
        driver,
        dir,
        kubelet: tempfile::tempdir().unwrap(),
        _classes: classes,
    }
}

impl Setup {
    fn socket(&self) -> PathBuf {
        self.dir.path().join("vault.sock")
    }

    fn target(&self, uid: &str) -> PathBuf {
        crate::kubelet::target_path(self.kubelet.path(), uid)
    }

    async fn publish(&self, uid: &str) -> Result<(), secretfs_csi::VolumeError> {
        self.driver
            .publish(PublishRequest {
                volume_id: format!("csi-{uid}"),
                target_path: self.target(uid),
                volume_context: VolumeContext::new(
                    [
                        (keys::POD_NAME, "pod"),
                        (keys::POD_NAMESPACE, "default"),
                        (keys::POD_UID, uid),
                        (keys::SERVICE_ACCOUNT_NAME, "default"),
                        (keys::SECRET_PROVIDER_CLASS, "v"),
                    ]
                    .map(|(k, v)| (k.to_owned(), v.to_owned())),
                ),
                secrets: SecretMap::default(),
                mount_group: None,
                mount_flags: vec![],
            })
            .await
    }

    async fn unpublish(&self, uid: &str) {
        self.driver
            .unpublish(UnpublishRequest {
                volume_id: format!("csi-{uid}"),
                target_path: self.target(uid),
            })
            .await
            .unwrap();
    }

    fn foo(&self, uid: &str) -> Vec<u8> {
        std::fs::read(self.target(uid).join("foo")).unwrap()
    }
}

fn refresh_errors(s: &Setup) -> f64 {
    metric_in(
        s.driver.metrics(),
        "rotation_reconcile_error_total",
        &[r#"provider="vault""#, r#"error_type="transient""#],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_socket_removed_between_publish_and_rotation() {
    if !fuse_available() {
        return;
    }
    let s = setup();
    let provider = TestProvider::start(&s.socket()).await.unwrap();
    s.publish("e1").await.unwrap();
    assert_eq!(s.foo("e1"), b"secret");
    let held = std::fs::File::open(s.target("e1").join("foo")).unwrap();

    // The provider's pod goes away, and its socket with it.
    provider.stop().await;
    assert!(!s.socket().exists());
    let socket = s.socket().display().to_string();

    let before = refresh_errors(&s);
    let started = Instant::now();
    let err = s.driver.refresh(&s.target("e1")).await.unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(err.code, ErrorCode::Unavailable, "{}", err.message);
    assert_eq!(err.error_type, "GRPCProviderError");
    assert_mentions(
        &err.message,
        &["provider \"vault\"", &socket, "is the provider running?"],
    );
    assert_eq!(refresh_errors(&s), before + 1.0);
    assert_eq!(s.foo("e1"), b"secret", "the last good bytes");
    let mut buf = [0u8; 16];
    let n = std::os::unix::fs::FileExt::read_at(&held, &mut buf, 0).unwrap();
    assert_eq!(&buf[..n], b"secret");

    // A new pod: the socket is looked up anew and is not there.
    let err = s.publish("e2").await.unwrap_err();
    assert_eq!(err.code, ErrorCode::InvalidArgument, "{}", err.message);
    assert_eq!(err.error_type, "FailedToLookupProviderGRPCClient");
    assert_mentions(
        &err.message,
        &[
            "provider \"vault\"",
            "no provider socket exists at",
            &socket,
        ],
    );
    assert!(!is_mounted(&s.target("e2")));
    assert!(!s.target("e2").exists());

    // The provider comes back (a new pod, a new socket): both heal.
    let provider = TestProvider::start(&s.socket()).await.unwrap();
    provider.set_file("foo", b"after the restart", "v2");
    s.driver.refresh(&s.target("e1")).await.unwrap();
    assert_eq!(s.foo("e1"), b"after the restart");
    let mut buf = [0u8; 32];
    let n = std::os::unix::fs::FileExt::read_at(&held, &mut buf, 0).unwrap();
    assert_eq!(&buf[..n], b"after the restart");
    s.publish("e2").await.unwrap();
    assert_eq!(s.foo("e2"), b"after the restart");
    drop(held);
    s.unpublish("e1").await;
    s.unpublish("e2").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_hanging_past_the_deadline_on_refresh() {
    if !fuse_available() {
        return;
    }
    let s = setup();
    let provider = TestProvider::start(&s.socket()).await.unwrap();
    s.publish("h1").await.unwrap();
    provider.set_file("foo", b"never seen", "v2");
    provider.set_behavior(Behavior::Slow(Duration::from_secs(10)));

    let before = refresh_errors(&s);
    let started = Instant::now();
    let err = s.driver.refresh(&s.target("h1")).await.unwrap_err();
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(900) && elapsed < Duration::from_secs(4),
        "gave up at the 1 s deadline: {elapsed:?}"
    );
    assert_eq!(err.code, ErrorCode::Unavailable, "{}", err.message);
    assert_mentions(
        &err.message,
        &[
            "did not answer Mount within 1s",
            &s.socket().display().to_string(),
            "--provider-timeout",
        ],
    );
    assert_eq!(refresh_errors(&s), before + 1.0);
    assert_eq!(s.foo("h1"), b"secret", "the last good bytes");

    provider.set_behavior(Behavior::Ok);
    provider.set_file("foo", b"answered again", "v3");
    s.driver.refresh(&s.target("h1")).await.unwrap();
    assert_eq!(s.foo("h1"), b"answered again");
    s.unpublish("h1").await;
}
