//! Lazy volumes (`secretfs.io/fetch: lazy`) over the Azure provider and the
//! Key Vault emulator: a file's first access fetches only its own object,
//! and a missing object fails only its own file.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use secretfs::node::driver::{Driver, DriverConfig};
use secretfs::provider::Provider;
use secretfs::provider::azure::{AzureProvider, AzureProviderConfig, HostOverride};
use secretfs::spc::SpcDir;
use secretfs_csi::{PublishRequest, UnpublishRequest, VolumeContext, VolumeManager, keys};
use secretfs_e2e::{CounterFilter, Emulator, EmulatorConfig, EmulatorHandle, Route, Seed};
use secretfs_fuse::ReadMode;
use secretfs_secrets::SecretMap;

use super::fake::{class, fuse_available};

const NODE_MI: &str = "5a1d3e0c-6f0e-4c55-9a57-3c2f1b7d9e21";
const TENANT: &str = "9c0d2e7b-1a3f-4b6c-8d5e-7f1a2b3c4d5e";

/// Vault `kv-lazy` with `s0` … `s9`, readable by the node's managed identity.
fn seed() -> Seed {
    let secrets: String = (0..10)
        .map(|i| format!("      - name: s{i}\n        versions:\n          - value: value-{i}\n"))
        .collect();
    Seed::from_yaml(&format!(
        "tenant: {TENANT}
identities:
  - name: node-identity
    kind: managedIdentity
    clientId: {NODE_MI}
vaults:
  - name: kv-lazy
    access:
      - identity: node-identity
        secrets: [get, list]
    secrets:
{secrets}"
    ))
    .unwrap()
}

/// A lazy class on `kv-lazy` with `objects` (`(name, optional)`).
fn lazy_class(name: &str, objects: &[(&str, bool)]) -> String {
    let array: String = objects
        .iter()
        .map(|(object, optional)| {
            format!("  - |\n    objectName: {object}\n    objectType: secret\n    optional: {optional}\n")
        })
        .collect();
    let objects = format!("array:\n{array}");
    class(
        name,
        "azure",
        &[
            ("secretfs.io/fetch", "lazy"),
            ("useVMManagedIdentity", "true"),
            ("userAssignedIdentityID", NODE_MI),
            ("keyvaultName", "kv-lazy"),
            ("tenantId", TENANT),
            ("objects", &objects),
        ],
    )
}

struct Env {
    emu: EmulatorHandle,
    driver: Arc<Driver>,
    kubelet: tempfile::TempDir,
    _classes: tempfile::TempDir,
}

impl Env {
    async fn start(classes: &[String]) -> Env {
        let emu = Emulator::start(EmulatorConfig::with_seed(seed()))
            .await
            .unwrap();
        let addr = emu.https_addr();
        let provider = AzureProvider::new(AzureProviderConfig {
            extra_ca_pem: Some(emu.ca_pem().to_owned()),
            resolve: vec![
                HostOverride::new("*.vault.azure.net", addr),
                HostOverride::new("login.microsoftonline.com", addr),
            ],
            vault_port: Some(addr.port()),
            authority_host: Some(emu.authority_url()),
            imds_url: emu.imds_url(),
            deadline: Duration::from_secs(5),
            ..Default::default()
        })
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("classes.yaml"), classes.concat()).unwrap();
        let driver = Driver::new(
            DriverConfig {
                node_name: "node-1".into(),
                read_mode: ReadMode::Atomic,
                rotation_interval: Duration::from_secs(120),
            },
            Arc::new(SpcDir::new(dir.path())),
            [Arc::new(provider) as Arc<dyn Provider>],
        );
        Env {
            emu,
            driver: Arc::new(driver),
            kubelet: tempfile::tempdir().unwrap(),
            _classes: dir,
        }
    }

    /// Vault GETs of secrets, not counting the SDK's 401 challenges.
    fn gets(&self) -> u64 {
        let all = self.emu.count(&CounterFilter::route(Route::SecretGet));
        all - self
            .emu
            .count(&CounterFilter::route(Route::SecretGet).status(401))
    }

    fn gets_of(&self, object: &str) -> u64 {
        self.emu
            .count(&CounterFilter::route(Route::SecretGet).object(object))
            - self.emu.count(
                &CounterFilter::route(Route::SecretGet)
                    .object(object)
                    .status(401),
            )
    }

    async fn publish(&self, uid: &str, class: &str) -> std::path::PathBuf {
        let target = crate::kubelet::target_path(self.kubelet.path(), uid);
        let request = PublishRequest {
            volume_id: format!("csi-{uid}"),
            target_path: target.clone(),
            volume_context: VolumeContext::new(
                [
                    (keys::POD_NAME, "pod"),
                    (keys::POD_NAMESPACE, "default"),
                    (keys::POD_UID, uid),
                    (keys::SERVICE_ACCOUNT_NAME, "default"),
                    (keys::SECRET_PROVIDER_CLASS, class),
                ]
                .map(|(k, v)| (k.to_owned(), v.to_owned())),
            ),
            secrets: SecretMap::default(),
            mount_group: None,
            mount_flags: vec![],
        };
        self.driver.publish(request).await.unwrap();
        target
    }

    async fn unpublish(&self, uid: &str, target: &Path) {
        self.driver
            .unpublish(UnpublishRequest {
                volume_id: format!("csi-{uid}"),
                target_path: target.to_owned(),
            })
            .await
            .unwrap();
    }
}

async fn read(path: std::path::PathBuf) -> std::io::Result<Vec<u8>> {
    tokio::task::spawn_blocking(move || std::fs::read(path))
        .await
        .unwrap()
}

fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reading_one_file_of_ten_costs_one_vault_get() {
    if !fuse_available() {
        return;
    }
    let objects: Vec<String> = (0..10).map(|i| format!("s{i}")).collect();
    let listed: Vec<(&str, bool)> = objects.iter().map(|o| (o.as_str(), false)).collect();
    let env = Env::start(&[lazy_class("ten", &listed)]).await;
    let target = env.publish("t1", "ten").await;
    assert_eq!(env.gets(), 0, "a lazy mount asks the vault nothing");
    assert_eq!(names(&target), objects, "every file is listed");
    assert_eq!(env.gets(), 0, "listing asks the vault nothing");

    assert_eq!(read(target.join("s3")).await.unwrap(), b"value-3");
    assert_eq!(env.gets(), 1, "one file read, one vault GET");
    assert_eq!(env.gets_of("s3"), 1, "and it is the file's own object");

    assert_eq!(read(target.join("s7")).await.unwrap(), b"value-7");
    assert_eq!(read(target.join("s3")).await.unwrap(), b"value-3");
    assert_eq!(
        env.gets(),
        2,
        "a second file costs its own GET, a reread none"
    );

    // After the interval's unload, a reload comes from the shared cache.
    env.driver.refresh(&target).await.unwrap();
    assert_eq!(read(target.join("s3")).await.unwrap(), b"value-3");
    assert_eq!(env.gets(), 2, "reloaded from the node's cache");
    env.unpublish("t1", &target).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_object_fails_only_its_own_file() {
    if !fuse_available() {
        return;
    }
    let env = Env::start(&[lazy_class(
        "mixed",
        &[
            ("s0", false),
            ("absent", false),
            ("maybe", true),
            ("s1", false),
        ],
    )])
    .await;
    let target = env.publish("m1", "mixed").await;
    // Listing happens before anything is fetched: the optional object is
    // listed whether or not the vault has it (docs/SEMANTICS.md).
    assert_eq!(names(&target), ["absent", "maybe", "s0", "s1"]);

    // A required object missing from the vault: EIO for its file alone.
    let err = read(target.join("absent")).await.unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    assert_eq!(read(target.join("s0")).await.unwrap(), b"value-0");
    assert_eq!(read(target.join("s1")).await.unwrap(), b"value-1");

    // An optional object missing from the vault: ENOENT, not EIO, for
    // stat and read alike.
    let err = read(target.join("maybe")).await.unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ENOENT), "{err}");
    let meta = tokio::task::spawn_blocking({
        let path = target.join("maybe");
        move || std::fs::metadata(path)
    })
    .await
    .unwrap()
    .unwrap_err();
    assert_eq!(meta.raw_os_error(), Some(libc::ENOENT), "{meta}");
    assert_eq!(env.gets_of("s0"), 1);
    assert_eq!(env.gets_of("s1"), 1);

    // Once the optional object exists, the next access loads it.
    env.emu
        .control()
        .set_secret("kv-lazy", "maybe", "now-here")
        .unwrap();
    assert_eq!(read(target.join("maybe")).await.unwrap(), b"now-here");
    env.unpublish("m1", &target).await;
}
