//! Files never read, end to end: the Key Vault emulator, the Azure
//! provider and real mounts in both read modes, to `secretfs status`
//! (table and JSON) and `secretfs_unread_files{namespace,class}`. A file
//! not read for longer than `--unread-threshold` since it was mounted or
//! rotated is listed as mounted but unused; a read takes it off the list,
//! a rotation makes it unread again, and a restart keeps what was read.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use secretfs::node::driver::{Driver, DriverConfig, FileStatus, Persistence, UNUSED_HINT};
use secretfs::provider::Provider;
use secretfs::provider::azure::AzureProvider;
use secretfs::spc::SpcDir;
use secretfs_csi::{UnpublishRequest, VolumeManager};
use secretfs_e2e::prereq::fuse_available;
use secretfs_e2e::{Emulator, EmulatorHandle, NewSecretVersion, Seed};
use secretfs_fuse::ReadMode;

use crate::faults::common::{NODE_MI, azure_config, metric_in};

const METRIC: &str = "secretfs_unread_files";
const VAULT: &str = "kv-unread";
const CLASS: &str = "mostly-unused";
const NAMESPACE: &str = "shop";
const POD: &str = "app";
const UID: &str = "a11ce000-0000-4000-8000-000000000000";
/// Short, so the test sees files cross it.
const THRESHOLD: Duration = Duration::from_secs(2);
const VALUES: [&str; 3] = ["used-value-1", "idle-value-1", "used-value-2"];

const SEED: &str = "
tenant: 9c0d2e7b-1a3f-4b6c-8d5e-7f1a2b3c4d5e
identities:
  - name: node-identity
    kind: managedIdentity
    clientId: NODE_MI
vaults:
  - name: kv-unread
    access:
      - identity: node-identity
        secrets: [get, list]
    secrets:
      - name: used
        versions:
          - value: used-value-1
      - name: idle
        versions:
          - value: idle-value-1
";

fn class() -> String {
    format!(
        "apiVersion: secrets-store.csi.x-k8s.io/v1
kind: SecretProviderClass
metadata:
  name: {CLASS}
  namespace: {NAMESPACE}
spec:
  provider: azure
  parameters:
    useVMManagedIdentity: \"true\"
    userAssignedIdentityID: {NODE_MI}
    keyvaultName: {VAULT}
    tenantId: 9c0d2e7b-1a3f-4b6c-8d5e-7f1a2b3c4d5e
    objects: |
      array:
        - |
          objectName: used
          objectType: secret
        - |
          objectName: idle
          objectType: secret
"
    )
}

struct Node {
    emu: EmulatorHandle,
    driver: Driver,
    metrics: &'static secretfs::metrics::Metrics,
    kubelet: tempfile::TempDir,
    classes: tempfile::TempDir,
    mode: ReadMode,
}

impl Node {
    async fn start(mode: ReadMode, persist: Option<(&Path, &Path)>) -> Node {
        let seed = Seed::from_yaml(&SEED.replace("NODE_MI", NODE_MI)).unwrap();
        let emu = Emulator::start(secretfs_e2e::EmulatorConfig::with_seed(seed))
            .await
            .unwrap();
        let classes = tempfile::tempdir().unwrap();
        std::fs::write(classes.path().join("classes.yaml"), class()).unwrap();
        let metrics = secretfs::metrics::Metrics::isolated();
        let driver = driver(&emu, classes.path(), metrics, mode, persist);
        Node {
            emu,
            driver,
            metrics,
            kubelet: tempfile::tempdir().unwrap(),
            classes,
            mode,
        }
    }

    fn target(&self) -> std::path::PathBuf {
        crate::kubelet::target_path(self.kubelet.path(), UID)
    }

    async fn publish(&self) {
        self.driver
            .publish(crate::kubelet::publish_request(
                "csi-unread",
                &self.target(),
                NAMESPACE,
                POD,
                UID,
                CLASS,
            ))
            .await
            .unwrap();
    }

    async fn unpublish(&self) {
        self.driver
            .unpublish(UnpublishRequest {
                volume_id: "csi-unread".into(),
                target_path: self.target(),
            })
            .await
            .unwrap();
    }

    fn read(&self, file: &str) -> Vec<u8> {
        std::fs::read(self.target().join(file)).unwrap()
    }

    /// The files of the volume in `secretfs status`, by path, and the
    /// table; neither may hold a value.
    async fn status(&self) -> (std::collections::BTreeMap<String, FileStatus>, String) {
        let volumes = self.driver.status().await;
        let json = serde_json::to_string(&volumes).unwrap();
        let table = secretfs::cmd::admin::render_status(&volumes);
        for value in VALUES {
            assert!(!json.contains(value) && !table.contains(value), "{table}");
        }
        assert_eq!(volumes.len(), 1);
        assert_eq!(
            volumes[0].unread_threshold_seconds,
            Some(THRESHOLD.as_secs())
        );
        // What `secretfs status --json` prints reads back the same.
        let back: Vec<secretfs::node::driver::VolumeStatus> = serde_json::from_str(&json).unwrap();
        assert_eq!(back, volumes);
        let files = volumes[0]
            .files
            .iter()
            .map(|f| (f.path.clone(), f.clone()))
            .collect();
        (files, table)
    }

    /// `secretfs_unread_files` of the class, as a scrape shows it.
    fn unread_metric(&self) -> f64 {
        self.driver.update_unread_files();
        let text = self.metrics.render();
        assert!(!VALUES.iter().any(|v| text.contains(v)));
        metric_in(
            self.metrics,
            METRIC,
            &[
                &format!("namespace=\"{NAMESPACE}\""),
                &format!("class=\"{CLASS}\""),
            ],
        )
    }
}

fn driver(
    emu: &EmulatorHandle,
    classes: &Path,
    metrics: &'static secretfs::metrics::Metrics,
    mode: ReadMode,
    persist: Option<(&Path, &Path)>,
) -> Driver {
    let mut config = azure_config(emu);
    config.metrics = metrics;
    config.deadline = Duration::from_secs(20);
    config.request_timeout = Duration::from_secs(5);
    let driver = Driver::new(
        DriverConfig {
            node_name: "node-1".into(),
            read_mode: mode,
            rotation_interval: Duration::from_secs(120),
        },
        Arc::new(SpcDir::new(classes)),
        [Arc::new(AzureProvider::new(config).unwrap()) as Arc<dyn Provider>],
    )
    .with_metrics(metrics)
    .with_unread_threshold(THRESHOLD);
    match persist {
        Some((state, keeper)) => {
            driver.with_persistence(Persistence::new(state, Some(keeper)).unwrap())
        }
        None => driver,
    }
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

async fn a_never_read_file_is_listed_after_the_threshold_until_it_is_read(mode: ReadMode) {
    if !fuse_available() {
        return;
    }
    let node = Node::start(mode, None).await;
    let published_at = unix_ms();
    node.publish().await;

    // Just mounted: nothing read, nothing unused yet.
    let (files, table) = node.status().await;
    for f in files.values() {
        assert_eq!(f.first_read_ms, None, "{f:?}");
        assert!(!f.unused, "{f:?}");
        let since = f.shown_since_ms.unwrap();
        assert!(since + 1000 >= published_at && since <= unix_ms(), "{f:?}");
    }
    assert!(table.contains("not read yet"), "{table}");
    assert!(!table.contains(UNUSED_HINT), "{table}");
    assert_eq!(node.unread_metric(), 0.0);

    let before = unix_ms();
    assert_eq!(node.read("used"), b"used-value-1");
    let after = unix_ms();
    tokio::time::sleep(THRESHOLD + Duration::from_millis(500)).await;

    let (files, table) = node.status().await;
    let first = files["used"].first_read_ms.expect("used was read");
    assert!(
        before <= first && first <= after,
        "{first} not in {before}..{after}"
    );
    assert!(!files["used"].unused);
    assert_eq!(files["idle"].first_read_ms, None);
    assert!(files["idle"].unused, "{:?}", files["idle"]);
    assert!(
        table.contains(&format!(
            "(mounted but unused: consider removing from the class):\n  class {CLASS}  file idle  pod {NAMESPACE}/{POD}\n"
        )),
        "{table}"
    );
    assert!(table.contains("never read since"), "{table}");
    assert_eq!(node.unread_metric(), 1.0);

    // Reading it takes it off the list; reading again changes nothing.
    assert_eq!(node.read("idle"), b"idle-value-1");
    assert_eq!(node.read("idle"), b"idle-value-1");
    let (files, table) = node.status().await;
    assert!(!files["idle"].unused && files["idle"].first_read_ms.is_some());
    assert!(!table.contains(UNUSED_HINT), "{table}");
    assert_eq!(node.unread_metric(), 0.0);

    // A rotation of `used` makes it unread again, from the rotation.
    node.emu
        .control()
        .add_secret_version(
            VAULT,
            "used",
            NewSecretVersion {
                value: "used-value-2".into(),
                content_type: None,
                attributes: Default::default(),
            },
        )
        .unwrap();
    let rotated_at = unix_ms();
    assert!(
        node.driver
            .refresh_with(&node.target(), Some(Duration::ZERO))
            .await
            .unwrap()
            .changed()
    );
    let (files, _) = node.status().await;
    assert_eq!(files["used"].first_read_ms, None, "{:?}", files["used"]);
    assert!(files["used"].shown_since_ms.unwrap() + 1000 >= rotated_at);
    assert!(files["idle"].first_read_ms.is_some(), "idle did not change");
    tokio::time::sleep(THRESHOLD + Duration::from_millis(500)).await;
    let (files, _) = node.status().await;
    assert!(files["used"].unused);
    assert_eq!(node.unread_metric(), 1.0);
    assert_eq!(node.read("used"), b"used-value-2");
    assert_eq!(node.unread_metric(), 0.0);

    // The class's series goes with its last volume.
    node.unpublish().await;
    node.driver.update_unread_files();
    assert!(
        !node.metrics.render().contains(&format!("{METRIC}{{")),
        "{}",
        node.metrics.render()
    );
    let _ = node.mode;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn page_cache_a_never_read_file_is_listed_after_the_threshold_until_it_is_read() {
    a_never_read_file_is_listed_after_the_threshold_until_it_is_read(ReadMode::PageCache).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn atomic_a_never_read_file_is_listed_after_the_threshold_until_it_is_read() {
    a_never_read_file_is_listed_after_the_threshold_until_it_is_read(ReadMode::Atomic).await;
}

/// A node plugin restarted (handed over, taken over with the keeper) keeps
/// which files were read and since when the others are shown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_keeps_first_reads_and_unread_files() {
    if !fuse_available() {
        return;
    }
    let scratch = tempfile::tempdir().unwrap();
    let state = scratch.path().join("state");
    let keeper_socket = scratch.path().join("keeper.sock");
    let keeper = secretfs::node::keeper::KeeperServer::bind(&keeper_socket).unwrap();
    let stop_keeper = keeper.stopper();
    let keeper_thread = std::thread::spawn(move || keeper.serve());
    let mut node = Node::start(ReadMode::PageCache, Some((&state, &keeper_socket))).await;
    node.publish().await;
    assert_eq!(node.read("used"), b"used-value-1");
    let (before, _) = node.status().await;
    assert!(before["used"].first_read_ms.is_some());

    assert_eq!(node.driver.hand_over(Duration::from_secs(2)).await, 1);
    let metrics = secretfs::metrics::Metrics::isolated();
    node.driver = driver(
        &node.emu,
        node.classes.path(),
        metrics,
        node.mode,
        Some((&state, &keeper_socket)),
    );
    node.metrics = metrics;
    let report = node.driver.restore().await;
    assert_eq!(report.adopted, 1, "{report:?}");
    let (after, _) = node.status().await;
    for path in ["used", "idle"] {
        assert_eq!(
            after[path].first_read_ms, before[path].first_read_ms,
            "{path}"
        );
        assert_eq!(
            after[path].shown_since_ms, before[path].shown_since_ms,
            "{path}"
        );
    }
    // The new process sees the first read of the file not read before.
    tokio::time::sleep(THRESHOLD + Duration::from_millis(500)).await;
    assert_eq!(node.unread_metric(), 1.0);
    assert_eq!(node.read("idle"), b"idle-value-1");
    assert_eq!(node.unread_metric(), 0.0);
    assert_eq!(node.read("used"), b"used-value-1");
    let (files, _) = node.status().await;
    assert_eq!(files["used"].first_read_ms, before["used"].first_read_ms);

    node.unpublish().await;
    stop_keeper.stop();
    let _ = keeper_thread.join();
}
