//! A driver whose providers are sockets in temporary directories, and the
//! test provider on one of them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use secretfs::node::driver::{Driver, DriverConfig};
use secretfs::node::sync::Syncer;
use secretfs::provider::external::{ExternalConfig, ExternalRetry};
use secretfs::provider::{Provider, ProviderRegistry};
use secretfs::spc::SpcDir;
use secretfs_csi::{
    PublishRequest, UnpublishRequest, VolumeContext, VolumeError, VolumeManager, keys,
};
use secretfs_e2e::test_provider::TestProvider;
use secretfs_fuse::ReadMode;
use secretfs_secrets::SecretMap;

pub use secretfs_e2e::prereq::fuse_available;

/// Short timings: a 1 s deadline, 50 ms backoff.
pub fn config(dirs: Vec<PathBuf>) -> ExternalConfig {
    ExternalConfig {
        dirs,
        timeout: Duration::from_secs(1),
        retry: ExternalRetry {
            max_attempts: 3,
            initial_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_millis(200),
            multiplier: 1.1,
        },
        ..ExternalConfig::default()
    }
}

pub fn class(name: &str, provider: &str, parameters: &[(&str, &str)]) -> String {
    let params: BTreeMap<&str, &str> = parameters.iter().copied().collect();
    format!(
        "apiVersion: secrets-store.csi.x-k8s.io/v1\nkind: SecretProviderClass\nmetadata:\n  name: {name}\n  namespace: default\nspec:\n  provider: {provider}\n  parameters: {}\n---\n",
        serde_json::to_string(&params).unwrap()
    )
}

pub struct Setup {
    pub driver: Arc<Driver>,
    /// `--provider-volume` and one additional directory.
    pub dirs: [tempfile::TempDir; 2],
    pub kubelet: tempfile::TempDir,
    _classes: tempfile::TempDir,
}

/// A driver with `builtins`, external providers in two directories, and
/// `manifests` as its classes; `tune` adjusts the external config.
pub fn setup_with(
    builtins: Vec<Arc<dyn Provider>>,
    manifests: &str,
    tune: impl FnOnce(&mut ExternalConfig),
) -> Setup {
    setup_full(builtins, manifests, tune, None)
}

/// [`setup_with`], the driver mirroring volumes to Kubernetes through `syncer`.
pub fn setup_full(
    builtins: Vec<Arc<dyn Provider>>,
    manifests: &str,
    tune: impl FnOnce(&mut ExternalConfig),
    syncer: Option<Arc<Syncer>>,
) -> Setup {
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let classes = tempfile::tempdir().unwrap();
    std::fs::write(classes.path().join("classes.yaml"), manifests).unwrap();
    let mut external = config(dirs.iter().map(|d| d.path().to_owned()).collect());
    tune(&mut external);
    let driver = Driver::new(
        DriverConfig {
            node_name: "node-1".into(),
            read_mode: ReadMode::Atomic,
            rotation_interval: std::time::Duration::from_secs(120),
        },
        Arc::new(SpcDir::new(classes.path())),
        ProviderRegistry::new(builtins).with_external(external),
    );
    let driver = Arc::new(match syncer {
        Some(syncer) => driver.with_syncer(syncer),
        None => driver,
    });
    Setup {
        driver,
        dirs,
        kubelet: tempfile::tempdir().unwrap(),
        _classes: classes,
    }
}

/// The test provider as `vault` in the additional directory, and class
/// `v` using it.
pub async fn with_test_provider(tune: impl FnOnce(&mut ExternalConfig)) -> (Setup, TestProvider) {
    with_test_provider_synced(tune, None).await
}

/// [`with_test_provider`], syncing through `syncer` when given.
pub async fn with_test_provider_synced(
    tune: impl FnOnce(&mut ExternalConfig),
    syncer: Option<Arc<Syncer>>,
) -> (Setup, TestProvider) {
    let s = setup_full(
        vec![],
        &class("v", "vault", &[("roleName", "app"), ("objects", "foo")]),
        tune,
        syncer,
    );
    let provider = TestProvider::start(&s.dirs[1].path().join("vault.sock"))
        .await
        .unwrap();
    (s, provider)
}

impl Setup {
    pub fn target(&self, uid: &str) -> PathBuf {
        crate::kubelet::target_path(self.kubelet.path(), uid)
    }

    pub fn request(&self, uid: &str, class: &str) -> PublishRequest {
        PublishRequest {
            volume_id: format!("csi-{uid}"),
            target_path: self.target(uid),
            volume_context: VolumeContext::new(
                [
                    (keys::POD_NAME, "pod"),
                    (keys::POD_NAMESPACE, "default"),
                    (keys::POD_UID, uid),
                    (keys::SERVICE_ACCOUNT_NAME, "default"),
                    (keys::EPHEMERAL, "true"),
                    (keys::SECRET_PROVIDER_CLASS, class),
                    (keys::SERVICE_ACCOUNT_TOKENS, r#"{"vault":{"token":"jwt-for-test","expirationTimestamp":"2099-01-01T00:00:00Z"}}"#),
                ]
                .map(|(k, v)| (k.to_owned(), v.to_owned())),
            ),
            secrets: SecretMap::new([("username".to_owned(), "u1".to_owned())]),
            mount_group: None,
            mount_flags: vec![],
        }
    }

    pub async fn publish(&self, uid: &str, class: &str) -> Result<(), VolumeError> {
        self.driver.publish(self.request(uid, class)).await
    }

    pub async fn unpublish(&self, uid: &str) {
        self.driver
            .unpublish(UnpublishRequest {
                volume_id: format!("csi-{uid}"),
                target_path: self.target(uid),
            })
            .await
            .unwrap();
    }
}

pub fn is_mounted(target: &Path) -> bool {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
    mounts
        .lines()
        .any(|l| l.split(' ').nth(1) == Some(target.to_str().unwrap()))
}

/// Every file under `root`: relative path → (mode bits, bytes).
pub fn tree(root: &Path) -> BTreeMap<String, (u32, Vec<u8>)> {
    use std::os::unix::fs::PermissionsExt;
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let entry = entry.unwrap();
            let meta = std::fs::metadata(entry.path()).unwrap();
            if meta.is_dir() {
                stack.push(entry.path());
            } else {
                let rel = entry
                    .path()
                    .strip_prefix(root)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                out.insert(
                    rel,
                    (
                        meta.permissions().mode() & 0o777,
                        std::fs::read(entry.path()).unwrap(),
                    ),
                );
            }
        }
    }
    out
}
