//! The fault bench: the Key Vault emulator (faults injected per route), a
//! driver with the Azure provider and real mounts, and optionally a fake
//! Kubernetes API server (faults injected per resource) for classes and
//! sync. Deadlines and timeouts are short so that each fault costs a
//! second or two.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use secretfs::node::driver::{Driver, DriverConfig};
use secretfs::node::sync::Syncer;
use secretfs::provider::Provider;
use secretfs::provider::azure::{AzureProvider, AzureProviderConfig, HostOverride, RetryConfig};
use secretfs::spc::{KubeSpcs, SpcDir, SpcSource};
use secretfs_csi::{
    PublishRequest, Readiness, UnpublishRequest, VolumeContext, VolumeError, VolumeManager, keys,
};
use secretfs_e2e::fake_apiserver::{FakeApiServer, object_path};
use secretfs_e2e::{Emulator, EmulatorConfig, EmulatorHandle, Seed};
use secretfs_fuse::ReadMode;
use secretfs_secrets::SecretMap;
use serde_json::{Value, json};

pub use secretfs_e2e::prereq::fuse_available;

pub const NODE_MI: &str = "5a1d3e0c-6f0e-4c55-9a57-3c2f1b7d9e21";
pub const APP_SP: &str = "3f8e2d1c-7b6a-4c5d-9e8f-1a2b3c4d5e6f";
pub const APP_SP_SECRET: &str = "emulator-test-client-secret";

pub const VAULT: &str = "kv-demo";
/// The vault's value of `sql-password` at start.
pub const GOOD: &str = "Sql-Passw0rd-from-kv-demo";
/// What the vault holds after the tests rotate it.
pub const ROTATED: &str = "rotated-during-the-outage";

/// The Azure provider's mount deadline here.
pub const DEADLINE: Duration = Duration::from_secs(2);
/// How long the sync and a live class read may wait for the API here.
pub const KUBE_TIMEOUT: Duration = Duration::from_millis(800);

/// The seed class (managed identity, `SECRET_1`, synced to Secret
/// `sqlserver` key `dbpassword`).
pub const MI_CLASS: &str = "azure-kvname";
/// The same objects with the `app-sp` service principal from the
/// nodePublishSecretRef.
pub const SP_CLASS: &str = "azure-sp";
/// The seed class, lazy (`secretfs.io/fetch: lazy`).
pub const LAZY_CLASS: &str = "azure-lazy";

const SEED_CLASS: &str = include_str!("../../fixtures/seed/secretproviderclass.yaml");

/// The node's managed identity and the `app-sp` service principal, both
/// allowed to read `sql-password` in `kv-demo` (no keys or certificates:
/// the emulator starts at once).
const SEED: &str = "
tenant: 9c0d2e7b-1a3f-4b6c-8d5e-7f1a2b3c4d5e
identities:
  - name: node-identity
    kind: managedIdentity
    clientId: 5a1d3e0c-6f0e-4c55-9a57-3c2f1b7d9e21
  - name: app-sp
    clientId: 3f8e2d1c-7b6a-4c5d-9e8f-1a2b3c4d5e6f
    clientSecret: emulator-test-client-secret
vaults:
  - name: kv-demo
    access:
      - identity: node-identity
        secrets: [get, list]
      - identity: app-sp
        secrets: [get, list]
    secrets:
      - name: sql-password
        versions:
          - value: Sql-Passw0rd-from-kv-demo
";

/// The emulator with [`SEED`], its tokens living `token_lifetime` (default
/// an hour).
pub async fn emulator(token_lifetime: Option<Duration>) -> EmulatorHandle {
    let mut config = EmulatorConfig::with_seed(Seed::from_yaml(SEED).expect("seed"));
    if let Some(lifetime) = token_lifetime {
        config.token_lifetime = lifetime;
    }
    Emulator::start(config).await.expect("emulator starts")
}

/// A provider configuration reaching `emu`, with a 2 s deadline, 1 s per
/// attempt, at most 4 attempts, short backoffs and `Retry-After` up to 1 s.
pub fn azure_config(emu: &EmulatorHandle) -> AzureProviderConfig {
    let addr = emu.https_addr();
    AzureProviderConfig {
        extra_ca_pem: Some(emu.ca_pem().to_owned()),
        resolve: vec![
            HostOverride::new("*.vault.azure.net", addr),
            HostOverride::new("login.microsoftonline.com", addr),
        ],
        vault_port: Some(addr.port()),
        authority_host: Some(emu.authority_url()),
        imds_url: emu.imds_url(),
        nmi_url: emu.imds_url(),
        deadline: DEADLINE,
        request_timeout: Duration::from_secs(1),
        connect_timeout: Duration::from_secs(1),
        retry: RetryConfig {
            max_attempts: 4,
            initial_backoff: Duration::from_millis(20),
            max_backoff: Duration::from_millis(100),
            max_retry_after: Duration::from_secs(1),
        },
        ..Default::default()
    }
}

/// The three classes, as manifests.
fn manifests() -> String {
    let seed: Value = serde_yaml::from_str(SEED_CLASS).unwrap();
    let mut sp = seed.clone();
    sp["metadata"]["name"] = json!(SP_CLASS);
    let params = sp["spec"]["parameters"].as_object_mut().unwrap();
    params.insert("useVMManagedIdentity".into(), json!("false"));
    params.remove("userAssignedIdentityID");
    let mut lazy = seed.clone();
    lazy["metadata"]["name"] = json!(LAZY_CLASS);
    lazy["spec"]["parameters"]["secretfs.io/fetch"] = json!("lazy");
    [seed, sp, lazy]
        .iter()
        .map(|c| serde_yaml::to_string(c).unwrap())
        .collect::<Vec<_>>()
        .join("---\n")
}

/// The classes as the API server serves them (v1).
fn api_classes() -> Vec<Value> {
    secretfs::spc::parse_manifests(Path::new("classes.yaml"), &manifests())
        .unwrap()
        .into_iter()
        .map(|c| {
            let mut v = serde_json::to_value(c).unwrap();
            v["apiVersion"] = json!("secrets-store.csi.x-k8s.io/v1");
            v
        })
        .collect()
}

/// Where classes come from, and whether volumes are synced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kube {
    /// Classes from a directory, no sync.
    None,
    /// Classes from a directory; pod statuses and Secrets synced to the
    /// fake API server.
    Sync,
    /// Classes from the fake API server's watch cache, and sync.
    Cluster,
}

/// A driver over real mounts, the emulator behind it, and the fake API
/// server when asked for.
pub struct Env {
    pub emu: EmulatorHandle,
    pub driver: Arc<Driver>,
    pub api: Option<FakeApiServer>,
    pub kubelet: tempfile::TempDir,
    _classes: tempfile::TempDir,
}

impl Env {
    /// The emulator, the provider (`tune` adjusts its configuration) and
    /// the driver.
    pub async fn start(kube: Kube, tune: impl FnOnce(&mut AzureProviderConfig)) -> Env {
        Self::start_with(emulator(None).await, kube, tune).await
    }

    pub async fn start_with(
        emu: EmulatorHandle,
        kube: Kube,
        tune: impl FnOnce(&mut AzureProviderConfig),
    ) -> Env {
        // Counts of its own: what a test asserts is what its driver and
        // provider did, whatever else runs in the process.
        let metrics = secretfs::metrics::Metrics::isolated();
        let mut config = azure_config(&emu);
        config.metrics = metrics;
        tune(&mut config);
        let provider = AzureProvider::new(config).expect("provider");
        let classes_dir = tempfile::tempdir().unwrap();
        std::fs::write(classes_dir.path().join("classes.yaml"), manifests()).unwrap();
        let api = match kube {
            Kube::None => None,
            Kube::Sync | Kube::Cluster => {
                let api = FakeApiServer::start().await.unwrap();
                if kube == Kube::Cluster {
                    for class in api_classes() {
                        api.put("secretproviderclasses", class);
                    }
                }
                Some(api)
            }
        };
        let client = api.as_ref().map(|api| {
            let config = kube::Config::new(api.url().parse().unwrap());
            kube::Client::try_from(config).unwrap()
        });
        let classes: Arc<dyn SpcSource> = match (&client, kube) {
            (Some(client), Kube::Cluster) => {
                let spcs = KubeSpcs::start(client.clone()).with_timeout(KUBE_TIMEOUT);
                for _ in 0..200 {
                    if spcs.readiness().await == Readiness::Ready {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                assert_eq!(spcs.readiness().await, Readiness::Ready, "the watch listed");
                Arc::new(spcs)
            }
            _ => Arc::new(SpcDir::new(classes_dir.path())),
        };
        let mut driver = Driver::new(
            DriverConfig {
                node_name: "node-1".into(),
                read_mode: ReadMode::Atomic,
                rotation_interval: Duration::from_secs(120),
            },
            classes,
            [Arc::new(provider) as Arc<dyn Provider>],
        )
        .with_metrics(metrics);
        if let Some(client) = client {
            driver = driver.with_syncer(Arc::new(
                Syncer::new(client, "node-1").with_timeout(KUBE_TIMEOUT),
            ));
        }
        Env {
            emu,
            driver: Arc::new(driver),
            api,
            kubelet: tempfile::tempdir().unwrap(),
            _classes: classes_dir,
        }
    }

    /// The sum of this environment's samples of metric `name` whose
    /// labels include every one of `labels` (`key="value"`).
    pub fn metric(&self, name: &str, labels: &[&str]) -> f64 {
        metric_in(self.driver.metrics(), name, labels)
    }

    pub fn api(&self) -> &FakeApiServer {
        self.api.as_ref().expect("started with a fake API server")
    }

    pub fn target(&self, uid: &str) -> PathBuf {
        crate::kubelet::target_path(self.kubelet.path(), uid)
    }

    pub fn request(&self, uid: &str, class: &str) -> PublishRequest {
        let secrets = if class == SP_CLASS {
            SecretMap::new([
                ("clientid".to_owned(), APP_SP.to_owned()),
                ("clientsecret".to_owned(), APP_SP_SECRET.to_owned()),
            ])
        } else {
            SecretMap::default()
        };
        PublishRequest {
            volume_id: format!("csi-{uid}"),
            target_path: self.target(uid),
            volume_context: VolumeContext::new(
                [
                    (keys::POD_NAME, format!("pod-{uid}").as_str()),
                    (keys::POD_NAMESPACE, "default"),
                    (keys::POD_UID, uid),
                    (keys::SERVICE_ACCOUNT_NAME, "default"),
                    (keys::SECRET_PROVIDER_CLASS, class),
                ]
                .map(|(k, v)| (k.to_owned(), v.to_owned())),
            ),
            secrets,
            mount_group: None,
            mount_flags: vec![],
        }
    }

    /// Publishes pod `uid`'s volume of `class` (the pod exists in the API
    /// server, owned by a ReplicaSet, when there is one).
    pub async fn publish(&self, uid: &str, class: &str) -> Result<(), VolumeError> {
        if let Some(api) = &self.api {
            api.put(
                "pods",
                json!({"apiVersion": "v1", "kind": "Pod",
                       "metadata": {"name": format!("pod-{uid}"), "namespace": "default", "uid": uid,
                                    "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                                                         "name": "app-5d8c", "uid": "rs-uid", "controller": true}]}}),
            );
        }
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

    /// `SECRET_1` of pod `uid`, read through the mount.
    pub fn secret_file(&self, uid: &str) -> String {
        std::fs::read_to_string(self.target(uid).join("SECRET_1")).unwrap()
    }

    /// `dbpassword` of the synced Secret `sqlserver`, decoded.
    pub fn synced_secret(&self) -> Option<String> {
        use base64::Engine;
        let secret = self
            .api()
            .get(&object_path("v1", "secrets", "default", "sqlserver"))?;
        let encoded = secret["data"]["dbpassword"].as_str()?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .unwrap();
        Some(String::from_utf8(bytes).unwrap())
    }

    /// Applies of the Secret `sqlserver` that reached the API server.
    pub fn secret_writes(&self) -> usize {
        let path = object_path("v1", "secrets", "default", "sqlserver");
        self.api()
            .requests()
            .iter()
            .filter(|r| r.method == "PATCH" && r.path == path && !r.faulted)
            .count()
    }

    /// Whether the volume of `uid` is marked synced (`secretfs status`).
    pub async fn synced(&self, uid: &str) -> bool {
        self.status(uid).await.synced
    }

    pub async fn status(&self, uid: &str) -> secretfs::node::driver::VolumeStatus {
        let target = self.target(uid).to_string_lossy().into_owned();
        self.driver
            .status()
            .await
            .into_iter()
            .find(|s| s.target == target)
            .expect("the volume is published")
    }

    /// Invariant of a failed publish: nothing mounted, no target directory
    /// left (kubelet retries from scratch), no volume recorded.
    pub async fn assert_no_half_made_mount(&self, uid: &str) {
        let target = self.target(uid);
        assert!(!is_mounted(&target), "nothing may be mounted at {target:?}");
        assert!(
            !target.exists() || std::fs::read_dir(&target).unwrap().next().is_none(),
            "no target directory with content is left at {target:?}"
        );
        assert!(
            !self.driver.published().await.contains(&target),
            "no volume is recorded at {target:?}"
        );
    }
}

pub fn is_mounted(target: &Path) -> bool {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
    mounts
        .lines()
        .any(|l| l.split(' ').nth(1) == Some(target.to_str().unwrap()))
}

/// The sum of the samples in `metrics` of metric `name` whose labels
/// include every one of `labels` (`key="value"`).
pub fn metric_in(metrics: &secretfs::metrics::Metrics, name: &str, labels: &[&str]) -> f64 {
    metrics
        .render()
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (metric, rest) = match series.split_once('{') {
                Some((m, rest)) => (m, rest),
                None => (series, ""),
            };
            (metric == name && labels.iter().all(|want| rest.contains(want)))
                .then(|| value.parse::<f64>().ok())
                .flatten()
        })
        .sum()
}

/// Asserts `message` contains every needle.
pub fn assert_mentions(message: &str, needles: &[&str]) {
    for needle in needles {
        assert!(
            message.contains(needle),
            "expected {needle:?} in: {message}"
        );
    }
}

/// Reads `path` off the runtime (a lazy load blocks the reader until the
/// provider answers).
pub async fn read_blocking(path: PathBuf) -> std::io::Result<Vec<u8>> {
    tokio::task::spawn_blocking(move || std::fs::read(path))
        .await
        .unwrap()
}
