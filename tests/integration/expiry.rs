//! Expiry of mounted objects, end to end: the Key Vault emulator's `exp`
//! and `nbf` attributes and a certificate's `notAfter`, through the Azure
//! provider and real mounts, to Warning events on the real kube-apiserver
//! (`crate::real_kube`), the node's `secretfs_object_expiry_timestamp_seconds`
//! series and `secretfs status`.
//!
//! One vault: a secret expiring in a day, one expired an hour ago, one not
//! valid for two days, one without attributes, and a certificate living
//! three days (Key Vault's `exp` a year away: the certificate decides),
//! mounted as `cert` (the leaf) and as its certificate-backed secret.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::events::v1::Event;
use secretfs::node::driver::{Driver, DriverConfig, Persistence, VolumeStatus};
use secretfs::node::sync::Syncer;
use secretfs::provider::Provider;
use secretfs::provider::azure::AzureProvider;
use secretfs::spc::SpcDir;
use secretfs_csi::{UnpublishRequest, VolumeManager};
use secretfs_e2e::prereq::fuse_available;
use secretfs_e2e::{Emulator, EmulatorHandle, NewSecretVersion, Seed, VersionAttributesSeed};
use secretfs_fuse::ReadMode;

use crate::faults::common::{NODE_MI, azure_config, metric_in};
use crate::real_kube::RealKube;

const DAY: i64 = 86_400;
const METRIC: &str = "secretfs_object_expiry_timestamp_seconds";
const VAULT: &str = "kv-expiry";
const CLASS: &str = "expiring";
/// Every value the vault holds: none may appear in an event, a metric or
/// the status.
const VALUES: [&str; 5] = [
    "soon-value-1",
    "soon-value-2",
    "gone-value",
    "early-value",
    "plain-value",
];

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn seed(now: i64) -> String {
    format!(
        "
tenant: 9c0d2e7b-1a3f-4b6c-8d5e-7f1a2b3c4d5e
identities:
  - name: node-identity
    kind: managedIdentity
    clientId: {NODE_MI}
vaults:
  - name: {VAULT}
    access:
      - identity: node-identity
        secrets: [get, list]
        certificates: [get, list]
    secrets:
      - name: soon
        versions:
          - value: soon-value-1
            exp: {soon}
      - name: gone
        versions:
          - value: gone-value
            exp: {gone}
      - name: early
        versions:
          - value: early-value
            nbf: {early_nbf}
            exp: {early_exp}
      - name: plain
        versions:
          - value: plain-value
    certificates:
      - name: web
        versions:
          - validityDays: 3
            exp: {web_exp}
",
        soon = now + DAY,
        gone = now - 3600,
        early_nbf = now + 2 * DAY,
        early_exp = now + 30 * DAY,
        web_exp = now + 365 * DAY,
    )
}

fn class(namespace: &str) -> String {
    format!(
        "apiVersion: secrets-store.csi.x-k8s.io/v1
kind: SecretProviderClass
metadata:
  name: {CLASS}
  namespace: {namespace}
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
          objectName: soon
          objectType: secret
        - |
          objectName: gone
          objectAlias: GONE
          objectType: secret
        - |
          objectName: early
          objectType: secret
        - |
          objectName: plain
          objectType: secret
        - |
          objectName: web
          objectType: cert
        - |
          objectName: web
          objectAlias: web-bundle
          objectType: secret
"
    )
}

struct Node {
    emu: EmulatorHandle,
    driver: Arc<Driver>,
    kube: RealKube,
    kubelet: tempfile::TempDir,
    metrics: &'static secretfs::metrics::Metrics,
    /// The `now` of the seed's attributes.
    seeded_at: i64,
    classes: tempfile::TempDir,
}

impl Node {
    fn uid(pod: &str) -> String {
        format!("{pod}-0000-4000-8000-000000000000")
    }

    fn target(&self, pod: &str) -> std::path::PathBuf {
        crate::kubelet::target_path(self.kubelet.path(), &Self::uid(pod))
    }

    async fn publish(&self, pod: &str) {
        self.publish_class(pod, CLASS).await;
    }

    async fn publish_class(&self, pod: &str, class: &str) {
        self.driver
            .publish(crate::kubelet::publish_request(
                &format!("csi-{pod}"),
                &self.target(pod),
                &self.kube.namespace,
                pod,
                &Self::uid(pod),
                class,
            ))
            .await
            .unwrap();
    }

    async fn unpublish(&self, pod: &str) {
        self.driver
            .unpublish(UnpublishRequest {
                volume_id: format!("csi-{pod}"),
                target_path: self.target(pod),
            })
            .await
            .unwrap();
    }

    /// A refresh that asks the vault.
    async fn refresh(&self, pod: &str) -> bool {
        self.driver
            .refresh_with(&self.target(pod), Some(Duration::ZERO))
            .await
            .unwrap()
            .changed()
    }

    /// The Warning events on `pod`: (reason, note), sorted.
    async fn events(&self, pod: &str) -> Vec<(String, String)> {
        let uid = Self::uid(pod);
        let mut out: Vec<(String, String)> =
            kube::Api::<Event>::namespaced(self.kube.client.clone(), &self.kube.namespace)
                .list(&Default::default())
                .await
                .unwrap()
                .items
                .into_iter()
                .filter(|e| e.regarding.as_ref().and_then(|r| r.uid.as_deref()) == Some(&uid))
                .filter(|e| e.type_.as_deref() == Some("Warning"))
                .map(|e| (e.reason.unwrap_or_default(), e.note.unwrap_or_default()))
                .collect();
        out.sort();
        out
    }

    /// The node's expiry series: `object/type` → value.
    fn series(&self) -> std::collections::BTreeMap<String, i64> {
        self.series_of(CLASS)
    }

    /// The node's expiry series, all of `class`: `object/type` → value.
    fn series_of(&self, class: &str) -> std::collections::BTreeMap<String, i64> {
        self.metrics
            .render()
            .lines()
            .filter(|l| l.starts_with(&format!("{METRIC}{{")))
            .map(|l| {
                let (labels, value) = l.rsplit_once(' ').unwrap();
                assert!(
                    labels.contains(&format!("namespace=\"{}\"", self.kube.namespace))
                        && labels.contains(&format!("class=\"{class}\"")),
                    "{l}"
                );
                let label = |name: &str| {
                    let start = labels.find(&format!("{name}=\"")).unwrap() + name.len() + 2;
                    labels[start..].split('"').next().unwrap().to_owned()
                };
                (
                    format!("{}/{}", label("object"), label("type")),
                    value.parse().unwrap(),
                )
            })
            .collect()
    }

    async fn status(&self, pod: &str) -> VolumeStatus {
        let target = self.target(pod).to_string_lossy().into_owned();
        self.driver
            .status()
            .await
            .into_iter()
            .find(|s| s.target == target)
            .unwrap()
    }
}

async fn start() -> Node {
    start_with(None).await
}

/// `persist`: the state directory and keeper socket of restart survival.
async fn start_with(persist: Option<(&Path, &Path)>) -> Node {
    let kube = RealKube::namespace("expiry").await;
    let seeded_at = now();
    let seed = Seed::from_yaml(&seed(seeded_at)).unwrap();
    let emu = Emulator::start(secretfs_e2e::EmulatorConfig::with_seed(seed))
        .await
        .unwrap();
    let metrics = secretfs::metrics::Metrics::isolated();
    let classes = tempfile::tempdir().unwrap();
    std::fs::write(classes.path().join("classes.yaml"), class(&kube.namespace)).unwrap();
    let driver = driver(&emu, &kube, classes.path(), metrics, persist);
    Node {
        emu,
        driver,
        kube,
        kubelet: tempfile::tempdir().unwrap(),
        metrics,
        seeded_at,
        classes,
    }
}

/// A node plugin: the Azure provider on `emu`, classes from `classes`,
/// events and statuses on `kube`, counting into `metrics`.
fn driver(
    emu: &EmulatorHandle,
    kube: &RealKube,
    classes: &Path,
    metrics: &'static secretfs::metrics::Metrics,
    persist: Option<(&Path, &Path)>,
) -> Arc<Driver> {
    let mut config = azure_config(emu);
    config.metrics = metrics;
    config.deadline = Duration::from_secs(20);
    config.request_timeout = Duration::from_secs(5);
    let driver = Driver::new(
        DriverConfig {
            node_name: "node-1".into(),
            read_mode: ReadMode::Atomic,
            rotation_interval: Duration::from_secs(120),
        },
        Arc::new(SpcDir::new(classes)),
        [Arc::new(AzureProvider::new(config).unwrap()) as Arc<dyn Provider>],
    )
    .with_metrics(metrics)
    .with_syncer(Arc::new(Syncer::new(kube.client.clone(), "node-1")));
    Arc::new(match persist {
        Some((state, keeper)) => {
            driver.with_persistence(Persistence::new(state, Some(keeper)).unwrap())
        }
        None => driver,
    })
}

fn assert_no_value(what: &str, text: &str) {
    for value in VALUES {
        assert!(!text.contains(value), "{what} holds a value: {text}");
    }
}

/// The certificate's `notAfter`: about three days from `at`.
fn assert_three_days_from(at: i64, not_after: i64) {
    assert!(
        (at + 3 * DAY - 600..=at + 3 * DAY + 600).contains(&not_after),
        "notAfter {not_after} is not three days after {at}"
    );
}

#[tokio::test]
async fn expiring_expired_and_not_yet_valid_objects_warn_each_pod_once_per_version() {
    if !fuse_available() {
        return;
    }
    let node = start().await;
    let started = node.seeded_at;
    let soon_exp = started + DAY;

    node.publish("app-a").await;
    node.publish("app-b").await;
    assert_eq!(
        std::fs::read_to_string(node.target("app-a").join("soon")).unwrap(),
        "soon-value-1"
    );

    // Five warnings on each pod: none for the object without attributes.
    for pod in ["app-a", "app-b"] {
        let events = node.events(pod).await;
        let reasons: Vec<&str> = events.iter().map(|(r, _)| r.as_str()).collect();
        assert_eq!(
            reasons,
            [
                "SecretExpired",
                "SecretExpiringSoon",
                "SecretExpiringSoon",
                "SecretExpiringSoon",
                "SecretNotYetValid"
            ],
            "{events:#?}"
        );
        let note = |needle: &str| {
            events
                .iter()
                .find(|(_, n)| n.contains(needle))
                .unwrap_or_else(|| panic!("no event about {needle}: {events:#?}"))
                .1
                .clone()
        };
        let soon = note("secret/soon (file soon, version ");
        assert!(
            soon.contains(") expires at ")
                && (soon.contains("(in 23h 59m, Key Vault exp)")
                    || soon.contains("(in 1d 0h, Key Vault exp)")),
            "{soon}"
        );
        assert!(note("secret/gone (file GONE, version ").contains("ago, Key Vault exp)"));
        assert!(note("secret/early (file early, version ").contains("Key Vault nbf)"));
        // The certificate's notAfter decides, not Key Vault's exp a year
        // away: as a cert (the leaf) and as its certificate-backed secret.
        assert!(
            note("cert/web (file web, version ").contains("certificate notAfter (leaf))"),
            "{events:#?}"
        );
        assert!(
            note("secret/web (file web-bundle, version ").contains("certificate notAfter (leaf))"),
            "{events:#?}"
        );
        assert!(!events.iter().any(|(_, n)| n.contains("secret/plain")));
        for (_, n) in &events {
            assert_no_value("an event", n);
        }
    }

    // One series per object, shared by both volumes; none without an expiry.
    let series = node.series();
    assert_eq!(
        series.keys().map(String::as_str).collect::<Vec<_>>(),
        [
            "GONE/secret",
            "early/secret",
            "soon/secret",
            "web-bundle/secret",
            "web/cert"
        ],
        "{series:?}"
    );
    assert_eq!(series["soon/secret"], soon_exp);
    assert_three_days_from(started, series["web/cert"]);
    assert_eq!(series["web/cert"], series["web-bundle/secret"]);
    assert_no_value("the metrics", &node.metrics.render());

    // `secretfs status`: each file's expiry and what decided it.
    let status = node.status("app-a").await;
    let file = |path: &str| {
        status
            .files
            .iter()
            .find(|f| f.path == path)
            .unwrap_or_else(|| panic!("no file {path}"))
            .clone()
    };
    let soon = file("soon").expiry.unwrap();
    assert_eq!(
        (soon.expires_at, soon.expires_by.as_deref()),
        (Some(soon_exp), Some("Key Vault exp"))
    );
    let early = file("early").expiry.unwrap();
    assert_eq!(early.valid_from_by.as_deref(), Some("Key Vault nbf"));
    assert!(early.valid_from.unwrap() > now() + DAY);
    let web = file("web").expiry.unwrap();
    assert_eq!(
        web.expires_by.as_deref(),
        Some("certificate notAfter (leaf)")
    );
    assert_eq!(file("plain").expiry, None);
    let table = secretfs::cmd::admin::render_status(std::slice::from_ref(&status));
    assert!(
        table.contains("EXPIRED at ") && table.contains("NOT VALID until "),
        "{table}"
    );
    assert!(table.contains("(certificate notAfter (leaf))"), "{table}");
    assert_no_value("the status", &serde_json::to_string(&status).unwrap());
    assert_no_value("the status table", &table);

    // A refresh with nothing new warns no one again.
    assert!(!node.refresh("app-a").await);
    assert_eq!(node.events("app-a").await.len(), 5);

    // A new version of `soon`, valid two days: a's refresh warns a of it
    // (a new version), b is not refreshed and keeps the old one, so the
    // series keeps the soonest.
    let new_exp = now() + 2 * DAY;
    let version = node
        .emu
        .control()
        .add_secret_version(
            VAULT,
            "soon",
            NewSecretVersion {
                value: "soon-value-2".into(),
                content_type: None,
                attributes: VersionAttributesSeed {
                    exp: Some(new_exp),
                    ..Default::default()
                },
            },
        )
        .unwrap();
    assert!(node.refresh("app-a").await);
    let events = node.events("app-a").await;
    assert_eq!(events.len(), 6, "{events:#?}");
    assert!(
        events
            .iter()
            .any(|(reason, note)| reason == "SecretExpiringSoon"
                && note.contains(&format!("secret/soon (file soon, version {version})"))),
        "{events:#?}"
    );
    assert_eq!(node.events("app-b").await.len(), 5);
    assert_eq!(node.series()["soon/secret"], soon_exp);
    assert!(node.refresh("app-b").await);
    assert_eq!(node.events("app-b").await.len(), 6);
    assert_eq!(node.series()["soon/secret"], new_exp);

    // The series stay while a volume shows them, and go with the last.
    node.unpublish("app-a").await;
    assert_eq!(node.series().len(), 5);
    assert_eq!(
        metric_in(node.metrics, METRIC, &["object=\"soon\""]),
        new_exp as f64
    );
    node.unpublish("app-b").await;
    assert!(node.series().is_empty(), "{:?}", node.series());
    node.kube.delete().await;
}

/// A restart (hand-over to the keeper, a new process taking the volume
/// over) keeps the node's series at once and posts no warning again: the
/// state record holds each file's validity and the warnings given.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_keeps_the_series_and_does_not_warn_again() {
    if !fuse_available() {
        return;
    }
    let scratch = tempfile::tempdir().unwrap();
    let state = scratch.path().join("state");
    let keeper_socket = scratch.path().join("keeper.sock");
    let keeper = secretfs::node::keeper::KeeperServer::bind(&keeper_socket).unwrap();
    let stop_keeper = keeper.stopper();
    let keeper_thread = std::thread::spawn(move || keeper.serve());
    let mut node = start_with(Some((&state, &keeper_socket))).await;

    node.publish("app-a").await;
    assert_eq!(node.events("app-a").await.len(), 5);
    let series = node.series();
    assert_eq!(series.len(), 5, "{series:?}");

    assert_eq!(node.driver.hand_over(Duration::from_secs(2)).await, 1);
    let metrics = secretfs::metrics::Metrics::isolated();
    // The old process goes as the new one comes.
    node.driver = driver(
        &node.emu,
        &node.kube,
        node.classes.path(),
        metrics,
        Some((&state, &keeper_socket)),
    );
    node.metrics = metrics;
    let report = node.driver.restore().await;
    assert_eq!(report.adopted, 1, "{report:?}");
    assert_eq!(node.series(), series, "before any refresh");
    let status = node.status("app-a").await;
    assert!(
        status
            .files
            .iter()
            .any(|f| f.path == "GONE" && f.expiry.is_some()),
        "{status:?}"
    );

    assert!(!node.refresh("app-a").await);
    assert_eq!(node.events("app-a").await.len(), 5, "no warning twice");
    assert_eq!(node.series(), series);

    node.unpublish("app-a").await;
    assert!(node.series().is_empty());
    assert_eq!(std::fs::read_dir(&state).unwrap().count(), 0);
    stop_keeper.stop();
    let _ = keeper_thread.join();
    node.kube.delete().await;
}

/// Each version of a history has the validity of its own version, keys
/// have theirs, and cached answers keep them: what the provider returns,
/// without Kubernetes.
#[tokio::test]
async fn history_slots_and_keys_report_their_own_versions_validity() {
    use crate::azure_provider::common::{config, mount_ok, object, objects, request};
    let at = now();
    let seed = format!(
        "
tenant: 9c0d2e7b-1a3f-4b6c-8d5e-7f1a2b3c4d5e
identities:
  - name: node-identity
    kind: managedIdentity
    clientId: {NODE_MI}
vaults:
  - name: {VAULT}
    access:
      - identity: node-identity
        secrets: [get, list]
        keys: [get, list]
    secrets:
      - name: rotating
        versions:
          - value: old-value
            exp: {old}
          - value: new-value
            nbf: {new_nbf}
            exp: {new}
    keys:
      - name: signing
        versions:
          - kty: EC
            exp: {key}
",
        old = at + 10 * DAY,
        new_nbf = at - DAY,
        new = at + 20 * DAY,
        key = at + 5 * DAY,
    );
    let emu = Emulator::start(secretfs_e2e::EmulatorConfig::with_seed(
        Seed::from_yaml(&seed).unwrap(),
    ))
    .await
    .unwrap();
    let provider = AzureProvider::new(config(&emu)).unwrap();
    let request = request(
        VAULT,
        &[
            ("useVMManagedIdentity", "true"),
            ("userAssignedIdentityID", NODE_MI),
        ],
        &objects(&[
            &object(
                "rotating",
                "secret",
                &[("objectAlias", "db"), ("objectVersionHistory", "2")],
            ),
            &object("signing", "key", &[]),
        ]),
    );
    let mut request = request;
    for round in ["fetched", "cached"] {
        let response = mount_ok(&provider, &request).await;
        let validity = &response.validity;
        assert_eq!(
            validity.keys().map(String::as_str).collect::<Vec<_>>(),
            ["db/0", "db/1", "signing"],
            "{round}"
        );
        // Slot 0 is the newest version.
        let newest = &validity["db/0"];
        assert_eq!(
            (
                newest.not_before,
                newest.expires,
                newest.certificate.as_ref()
            ),
            (Some(at - DAY), Some(at + 20 * DAY), None),
            "{round}"
        );
        assert_eq!(validity["db/1"].expires, Some(at + 10 * DAY), "{round}");
        assert_ne!(newest.version, validity["db/1"].version);
        let versions: Vec<&str> = response
            .versions
            .iter()
            .map(|v| v.version.as_str())
            .collect();
        assert!(versions.contains(&newest.version.as_str()), "{round}");
        assert_eq!(validity["signing"].expires, Some(at + 5 * DAY), "{round}");
        // The second round is answered from the shared cache.
        request.max_age = Duration::from_secs(600);
    }
}

/// A lazy class on the same vault: `soon` (expiring in a day) and `plain`.
fn lazy_class(namespace: &str) -> String {
    format!(
        "apiVersion: secrets-store.csi.x-k8s.io/v1
kind: SecretProviderClass
metadata:
  name: {LAZY_CLASS}
  namespace: {namespace}
spec:
  provider: azure
  parameters:
    secretfs.io/fetch: lazy
    useVMManagedIdentity: \"true\"
    userAssignedIdentityID: {NODE_MI}
    keyvaultName: {VAULT}
    tenantId: 9c0d2e7b-1a3f-4b6c-8d5e-7f1a2b3c4d5e
    objects: |
      array:
        - |
          objectName: soon
          objectType: secret
        - |
          objectName: plain
          objectType: secret
"
    )
}

const LAZY_CLASS: &str = "expiring-lazy";

/// Waits (up to 20 s) until `pod` has `n` Warning events.
async fn wait_for_events(node: &Node, pod: &str, n: usize) -> Vec<(String, String)> {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let events = node.events(pod).await;
        if events.len() >= n || std::time::Instant::now() > deadline {
            return events;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A lazy volume reports nothing before its files load; once `soon` loads,
/// its validity warns the pod (through the rotation scheduler, not waiting
/// for a refresh), sets the series and shows in the status; a refresh
/// drops the bytes but keeps the validity, and a reload of the same
/// version warns no one again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lazy_volume_reports_the_expiry_of_the_objects_it_loaded() {
    if !fuse_available() {
        return;
    }
    let node = start().await;
    std::fs::write(
        node.classes.path().join("lazy.yaml"),
        lazy_class(&node.kube.namespace),
    )
    .unwrap();
    let soon_exp = node.seeded_at + DAY;
    let scheduler = secretfs::node::rotation::spawn(node.driver.clone(), Default::default());

    node.publish_class("lazy-a", LAZY_CLASS).await;
    // Nothing loaded: nothing known.
    assert!(node.series_of(LAZY_CLASS).is_empty());
    assert!(node.status("lazy-a").await.files.is_empty());
    assert!(node.events("lazy-a").await.is_empty());

    let read = |path: &str| {
        let path = node.target("lazy-a").join(path);
        tokio::task::spawn_blocking(move || std::fs::read_to_string(path))
    };
    assert_eq!(read("soon").await.unwrap().unwrap(), "soon-value-1");

    // The load warns the pod at once: no refresh, no status call.
    let events = wait_for_events(&node, "lazy-a", 1).await;
    assert_eq!(events.len(), 1, "{events:#?}");
    let (reason, note) = &events[0];
    assert_eq!(reason, "SecretExpiringSoon");
    assert!(
        note.contains("secret/soon (file soon, version ")
            && note.contains(") expires at ")
            && note.contains("Key Vault exp)"),
        "{note}"
    );
    assert_no_value("an event", note);
    assert_eq!(
        node.series_of(LAZY_CLASS),
        [("soon/secret".to_owned(), soon_exp)].into()
    );
    assert_no_value("the metrics", &node.metrics.render());

    let status = node.status("lazy-a").await;
    assert_eq!(
        status
            .files
            .iter()
            .map(|f| f.path.as_str())
            .collect::<Vec<_>>(),
        ["soon"],
        "only the loaded file: {status:?}"
    );
    let soon = status.files[0].expiry.clone().unwrap();
    assert_eq!(
        (soon.expires_at, soon.expires_by.as_deref()),
        (Some(soon_exp), Some("Key Vault exp"))
    );
    assert!(!status.files[0].version.is_empty());
    assert_no_value("the status", &serde_json::to_string(&status).unwrap());

    // `plain` has no attributes: loaded, listed, no expiry, no series.
    assert_eq!(read("plain").await.unwrap().unwrap(), "plain-value");
    let status = node.status("lazy-a").await;
    let plain = status.files.iter().find(|f| f.path == "plain").unwrap();
    assert_eq!(plain.expiry, None);
    assert_eq!(node.series_of(LAZY_CLASS).len(), 1);

    // A refresh drops the bytes: the last known validity stays.
    assert!(!node.refresh("lazy-a").await);
    let status = node.status("lazy-a").await;
    let soon = status.files.iter().find(|f| f.path == "soon").unwrap();
    assert_eq!(soon.bytes, 0, "{status:?}");
    assert_eq!(soon.expiry.as_ref().unwrap().expires_at, Some(soon_exp));
    assert_eq!(node.series_of(LAZY_CLASS)["soon/secret"], soon_exp);

    // The same version loads again: no second warning.
    assert_eq!(read("soon").await.unwrap().unwrap(), "soon-value-1");
    node.status("lazy-a").await;
    assert_eq!(node.events("lazy-a").await.len(), 1);

    node.unpublish("lazy-a").await;
    assert!(node.series_of(LAZY_CLASS).is_empty());
    scheduler.abort();
    node.kube.delete().await;
}

/// An external provider (the test provider, over the provider protocol)
/// serving a PEM bundle (key and certificate) valid for a day: the
/// certificate's `notAfter` warns the pod, sets the series and shows in the
/// status, named as the leaf; a file that is no certificate has no expiry.
/// A new certificate (a new version) warns again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_external_providers_pem_certificate_reports_its_expiry() {
    use secretfs_e2e::{CertificateMaterial, KeySpec};
    if !fuse_available() {
        return;
    }
    const EXTERNAL_CLASS: &str = "external-cert";
    let kube = RealKube::namespace("expiry-ext").await;
    let sockets = tempfile::tempdir().unwrap();
    let provider =
        secretfs_e2e::test_provider::TestProvider::start(&sockets.path().join("vault.sock"))
            .await
            .unwrap();
    let short = CertificateMaterial::self_signed_for_days(
        "CN=short.example",
        &["short.example".to_owned()],
        KeySpec::Rsa { bits: 2048 },
        1,
    )
    .unwrap();
    let bundle = short.pem_bundle();
    provider.set_file("tls.pem", bundle.as_bytes(), "c1");
    provider.set_file("password", b"not-a-certificate-value", "p1");

    let classes = tempfile::tempdir().unwrap();
    std::fs::write(
        classes.path().join("classes.yaml"),
        format!(
            "apiVersion: secrets-store.csi.x-k8s.io/v1
kind: SecretProviderClass
metadata:
  name: {EXTERNAL_CLASS}
  namespace: {namespace}
spec:
  provider: vault
  parameters:
    roleName: app
",
            namespace = kube.namespace
        ),
    )
    .unwrap();
    let metrics = secretfs::metrics::Metrics::isolated();
    let external = secretfs::provider::external::ExternalConfig {
        dirs: vec![sockets.path().to_owned()],
        ..Default::default()
    };
    let driver = Driver::new(
        DriverConfig {
            node_name: "node-1".into(),
            read_mode: ReadMode::Atomic,
            rotation_interval: Duration::from_secs(120),
        },
        Arc::new(SpcDir::new(classes.path())),
        secretfs::provider::ProviderRegistry::new(vec![]).with_external(external),
    )
    .with_metrics(metrics)
    .with_syncer(Arc::new(Syncer::new(kube.client.clone(), "node-1")));
    // The node's helpers (events, series, status) work on any driver.
    let emu = Emulator::start(secretfs_e2e::EmulatorConfig::with_seed(
        Seed::from_yaml(&seed(now())).unwrap(),
    ))
    .await
    .unwrap();
    let node = Node {
        emu,
        driver: Arc::new(driver),
        kube,
        kubelet: tempfile::tempdir().unwrap(),
        metrics,
        seeded_at: now(),
        classes,
    };

    node.publish_class("ext-a", EXTERNAL_CLASS).await;
    let events = node.events("ext-a").await;
    assert_eq!(events.len(), 1, "{events:#?}");
    let (reason, note) = &events[0];
    assert_eq!(reason, "SecretExpiringSoon");
    assert!(
        note.contains("(file tls.pem, version c1) expires at ")
            && note.contains("certificate notAfter (leaf))"),
        "{note}"
    );
    assert!(!note.contains("password"), "{note}");

    assert_eq!(
        node.series_of(EXTERNAL_CLASS),
        [("tls.pem/file".to_owned(), short.not_after)].into()
    );
    let status = node.status("ext-a").await;
    let file = |path: &str| status.files.iter().find(|f| f.path == path).unwrap();
    let expiry = file("tls.pem").expiry.clone().unwrap();
    assert_eq!(
        (expiry.expires_at, expiry.expires_by.as_deref()),
        (Some(short.not_after), Some("certificate notAfter (leaf)"))
    );
    assert_eq!(
        (expiry.valid_from, expiry.valid_from_by.as_deref()),
        (Some(short.not_before), Some("certificate notBefore (leaf)"))
    );
    assert_eq!(file("password").expiry, None);

    // Nothing of the bundle or the other file anywhere.
    let rendered = [
        serde_json::to_string(&status).unwrap(),
        secretfs::cmd::admin::render_status(std::slice::from_ref(&status)),
        node.metrics.render(),
        events.iter().map(|(_, n)| n.as_str()).collect(),
    ];
    let key_line = bundle.lines().nth(1).expect("the key's first base64 line");
    for text in &rendered {
        assert!(!text.contains("not-a-certificate-value"), "{text}");
        assert!(!text.contains(key_line), "{text}");
    }

    // The same certificate again: no second warning. A new one (a new
    // version) living two days: warned of, and the series follows.
    assert!(!node.refresh("ext-a").await);
    assert_eq!(node.events("ext-a").await.len(), 1);
    let renewed = CertificateMaterial::self_signed_for_days(
        "CN=short.example",
        &["short.example".to_owned()],
        KeySpec::Rsa { bits: 2048 },
        2,
    )
    .unwrap();
    provider.set_file("tls.pem", renewed.pem_bundle().as_bytes(), "c2");
    assert!(node.refresh("ext-a").await);
    let events = node.events("ext-a").await;
    assert_eq!(events.len(), 2, "{events:#?}");
    assert!(
        events
            .iter()
            .any(|(_, n)| n.contains("(file tls.pem, version c2) expires at ")),
        "{events:#?}"
    );
    assert_eq!(
        node.series_of(EXTERNAL_CLASS)["tls.pem/file"],
        renewed.not_after
    );

    node.unpublish("ext-a").await;
    assert!(node.series_of(EXTERNAL_CLASS).is_empty());
    node.kube.delete().await;
}
