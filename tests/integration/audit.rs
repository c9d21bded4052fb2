//! Who reads what, end to end: a class annotated `secretfs.io/audit:
//! reads`, the Key Vault emulator, the Azure provider and a real mount. A
//! reader in a cgroup of the volume's own pod (made here under
//! /sys/fs/cgroup/pids, as kubelet lays pods out with cgroupfs) and in a
//! PID namespace of its own is attributed to that pod and container; a
//! reader in another pod's cgroup, and one in no pod's cgroup, are refused
//! as unattributable. No line, metric or status holds a value.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use secretfs::node::audit::{AuditSink, Auditor, ContainerNames};
use secretfs::node::driver::{Driver, DriverConfig};
use secretfs::provider::Provider;
use secretfs::provider::azure::AzureProvider;
use secretfs::spc::SpcDir;
use secretfs_csi::{PublishRequest, UnpublishRequest, VolumeManager};
use secretfs_e2e::prereq::fuse_available;
use secretfs_e2e::{Emulator, EmulatorHandle, Seed};
use secretfs_fuse::ReadMode;

use crate::faults::common::{NODE_MI, azure_config, metric_in};

const VAULT: &str = "kv-audit";
const NAMESPACE: &str = "shop";
const POD: &str = "app";
const UID: &str = "a0d17000-0000-4000-8000-000000000001";
const OTHER_UID: &str = "a0d17000-0000-4000-8000-000000000002";
const CONTAINER: &str = "a0d1700000000000000000000000000000000000000000000000000000000001";
const OTHER_CONTAINER: &str = "a0d1700000000000000000000000000000000000000000000000000000000002";
const VALUE: &str = "audited-value-1";

const SEED: &str = "
tenant: 9c0d2e7b-1a3f-4b6c-8d5e-7f1a2b3c4d5e
identities:
  - name: node-identity
    kind: managedIdentity
    clientId: NODE_MI
vaults:
  - name: kv-audit
    access:
      - identity: node-identity
        secrets: [get, list]
    secrets:
      - name: watched
        versions:
          - value: audited-value-1
";

fn class(name: &str, audit: &str) -> String {
    format!(
        "apiVersion: secrets-store.csi.x-k8s.io/v1
kind: SecretProviderClass
metadata:
  name: {name}
  namespace: {NAMESPACE}
  annotations:
    secretfs.io/audit: {audit}
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
          objectName: watched
          objectType: secret
---
"
    )
}

/// The pod's containers, as its status would list them.
struct Names;

#[async_trait::async_trait]
impl ContainerNames for Names {
    async fn names(
        &self,
        namespace: &str,
        pod: &str,
    ) -> Result<std::collections::HashMap<String, String>, String> {
        assert_eq!((namespace, pod), (NAMESPACE, POD));
        Ok([(CONTAINER.to_owned(), "web".to_owned())].into())
    }
}

/// A cgroup of the pids hierarchy, as kubelet's cgroupfs driver names a
/// container's: kubepods/besteffort/pod<uid>/<container id> (under a
/// directory of the test's own). Removed on drop (with its parents made
/// here).
struct PodCgroup {
    dirs: Vec<PathBuf>,
}

impl PodCgroup {
    fn new(pod_uid: &str, container: &str) -> PodCgroup {
        let root = Path::new("/sys/fs/cgroup/pids");
        let mut dirs = Vec::new();
        let mut dir = root.to_owned();
        // Under a directory of this test process's own: tests run in
        // parallel, each in a process, and each removes what it made.
        for part in [
            format!("secretfs-test-{}", std::process::id()),
            "kubepods".to_owned(),
            "besteffort".to_owned(),
            format!("pod{pod_uid}"),
            container.to_owned(),
        ] {
            dir = dir.join(part);
            if !dir.exists() {
                std::fs::create_dir(&dir).unwrap();
                dirs.push(dir.clone());
            }
        }
        PodCgroup { dirs }
    }

    fn procs(&self) -> PathBuf {
        self.dirs.last().unwrap().join("cgroup.procs")
    }

    /// Reads `file` with `cat`, from this cgroup, in a PID namespace of its
    /// own; what it printed.
    fn read(&self, file: &Path) -> Vec<u8> {
        let script = format!(
            "echo 0 > '{}' && exec cat '{}'",
            self.procs().display(),
            file.display()
        );
        let out = std::process::Command::new("unshare")
            .args(["--pid", "--fork", "sh", "-c", &script])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }
}

impl Drop for PodCgroup {
    fn drop(&mut self) {
        for dir in self.dirs.iter().rev() {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

fn driver(
    emu: &EmulatorHandle,
    classes: &Path,
    metrics: &'static secretfs::metrics::Metrics,
    log: Arc<Mutex<Vec<u8>>>,
    persist: Option<(&Path, &Path)>,
) -> Driver {
    let mut config = azure_config(emu);
    config.metrics = metrics;
    config.deadline = Duration::from_secs(20);
    config.request_timeout = Duration::from_secs(5);
    let auditor = Auditor::new(
        AuditSink::Memory(log),
        Some(Arc::new(Names)),
        "/proc",
        metrics,
        tokio::runtime::Handle::current(),
    );
    let driver = Driver::new(
        DriverConfig {
            node_name: "node-1".into(),
            read_mode: ReadMode::PageCache,
            rotation_interval: Duration::from_secs(120),
        },
        Arc::new(SpcDir::new(classes)),
        [Arc::new(AzureProvider::new(config).unwrap()) as Arc<dyn Provider>],
    )
    .with_metrics(metrics)
    .with_auditor(auditor);
    match persist {
        Some((state, keeper)) => driver.with_persistence(
            secretfs::node::driver::Persistence::new(state, Some(keeper)).unwrap(),
        ),
        None => driver,
    }
}

fn request(target: &Path, class: &str) -> PublishRequest {
    crate::kubelet::publish_request(&format!("csi-{class}"), target, NAMESPACE, POD, UID, class)
}

/// The audit lines so far, parsed.
fn lines(log: &Mutex<Vec<u8>>) -> Vec<serde_json::Value> {
    let text = String::from_utf8(log.lock().unwrap().clone()).unwrap();
    assert!(!text.contains(VALUE), "a value in the audit log: {text}");
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Waits until `n` lines are written (an attributed line waits for the
/// container's name).
async fn wait_for(log: &Mutex<Vec<u8>>, n: usize) -> Vec<serde_json::Value> {
    for _ in 0..100 {
        let got = lines(log);
        if got.len() >= n {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("fewer than {n} audit lines: {:?}", lines(log));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_are_attributed_to_the_volumes_pod_and_others_are_refused() {
    if !fuse_available() {
        return;
    }
    let seed = Seed::from_yaml(&SEED.replace("NODE_MI", NODE_MI)).unwrap();
    let emu = Emulator::start(secretfs_e2e::EmulatorConfig::with_seed(seed))
        .await
        .unwrap();
    let classes = tempfile::tempdir().unwrap();
    std::fs::write(
        classes.path().join("classes.yaml"),
        class("audited", "reads") + &class("misspelt", "everything"),
    )
    .unwrap();
    let metrics = secretfs::metrics::Metrics::isolated();
    let log = Arc::new(Mutex::new(Vec::new()));
    let driver = driver(&emu, classes.path(), metrics, log.clone(), None);
    let kubelet = tempfile::tempdir().unwrap();
    let target = crate::kubelet::target_path(kubelet.path(), UID);

    // A value other than `reads` is refused, naming the annotation.
    let refused = driver
        .publish(request(&target, "misspelt"))
        .await
        .unwrap_err();
    assert!(
        refused.message.contains("secretfs.io/audit") && refused.message.contains("use reads"),
        "{}",
        refused.message
    );

    driver.publish(request(&target, "audited")).await.unwrap();
    let file = target.join("watched");

    // The pod's container, in a PID namespace of its own, twice: one line.
    let ours = PodCgroup::new(UID, CONTAINER);
    assert_eq!(ours.read(&file), VALUE.as_bytes());
    assert_eq!(ours.read(&file), VALUE.as_bytes());
    let got = wait_for(&log, 2).await;
    let attributed: Vec<_> = got.iter().filter(|l| l["attributed"] == true).collect();
    assert_eq!(attributed.len(), 2, "two processes, one line each: {got:?}");
    let line = attributed[0];
    assert_eq!(line["stream"], "secretfs-audit");
    assert_eq!(line["namespace"], NAMESPACE);
    assert_eq!(line["pod"], POD);
    assert_eq!(line["pod_uid"], UID);
    assert_eq!(line["class"], "audited");
    assert_eq!(line["container_id"], CONTAINER);
    assert_eq!(line["container"], "web");
    assert_eq!(line["file"], "watched");
    assert_eq!(line["object"], "secret/watched");
    assert_eq!(line["uid"], 0);
    assert!(line["exe"].as_str().unwrap().ends_with("/cat"), "{line}");
    assert!(
        line["pid"].as_u64().unwrap() > 1,
        "the host's pid, not the namespace's: {line}"
    );
    assert!(!line["version"].as_str().unwrap().is_empty(), "{line}");
    assert_ne!(attributed[0]["pid"], attributed[1]["pid"]);

    // Another pod's container reading through this mount: refused, never
    // named as this volume's pod.
    let theirs = PodCgroup::new(OTHER_UID, OTHER_CONTAINER);
    assert_eq!(theirs.read(&file), VALUE.as_bytes());
    // And a process of no pod (this test's own).
    assert_eq!(std::fs::read(&file).unwrap(), VALUE.as_bytes());
    let got = wait_for(&log, 4).await;
    let refused: Vec<_> = got.iter().filter(|l| l["attributed"] == false).collect();
    assert_eq!(refused.len(), 2, "{got:?}");
    let other = refused
        .iter()
        .find(|l| l["reason_code"] == "other-pod")
        .unwrap();
    assert!(
        other["reason"].as_str().unwrap().contains(OTHER_UID),
        "{other}"
    );
    assert_eq!(other.get("pod"), None, "no pod is named: {other}");
    assert_eq!(other["volume"]["pod_uid"], UID);
    let host = refused
        .iter()
        .find(|l| l["reason_code"] == "no-pod-cgroup")
        .unwrap();
    assert_eq!(host["pid"], std::process::id());

    // Metrics and status.
    let text = metrics.render();
    assert!(!text.contains(VALUE));
    assert_eq!(
        metric_in(
            metrics,
            "secretfs_audited_reads_total",
            &["namespace=\"shop\"", "pod=\"app\"", "file=\"watched\""],
        ),
        2.0
    );
    assert_eq!(
        metric_in(
            metrics,
            "secretfs_audit_unattributed_reads_total",
            &["reason=\"other-pod\""]
        ),
        1.0
    );
    assert_eq!(metric_in(metrics, "secretfs_audit_can_attribute", &[]), 1.0);
    let status = driver.status().await;
    let audit = status[0].audit.clone().expect("an audited volume");
    assert!(audit.can_attribute, "{audit:?}");
    let table = secretfs::cmd::admin::render_status(&status);
    assert!(
        table.contains("reads audited (secretfs.io/audit: reads)"),
        "{table}"
    );
    assert!(!table.contains(VALUE));

    driver
        .unpublish(UnpublishRequest {
            volume_id: "csi-audited".into(),
            target_path: target.clone(),
        })
        .await
        .unwrap();
    // Inner cgroups first: the second made only its own pod's.
    drop(theirs);
    drop(ours);
}

/// A node plugin restarted (handed over, taken over with the keeper) keeps
/// auditing the volume: the kernel still sends its opens, and the new
/// process reports them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_keeps_auditing() {
    if !fuse_available() {
        return;
    }
    let seed = Seed::from_yaml(&SEED.replace("NODE_MI", NODE_MI)).unwrap();
    let emu = Emulator::start(secretfs_e2e::EmulatorConfig::with_seed(seed))
        .await
        .unwrap();
    let classes = tempfile::tempdir().unwrap();
    std::fs::write(
        classes.path().join("classes.yaml"),
        class("audited", "reads"),
    )
    .unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let state = scratch.path().join("state");
    let keeper_socket = scratch.path().join("keeper.sock");
    let keeper = secretfs::node::keeper::KeeperServer::bind(&keeper_socket).unwrap();
    let stop_keeper = keeper.stopper();
    let keeper_thread = std::thread::spawn(move || keeper.serve());
    let persist = Some((state.as_path(), keeper_socket.as_path()));

    let log = Arc::new(Mutex::new(Vec::new()));
    let before = driver(
        &emu,
        classes.path(),
        secretfs::metrics::Metrics::isolated(),
        log.clone(),
        persist,
    );
    let kubelet = tempfile::tempdir().unwrap();
    let target = crate::kubelet::target_path(kubelet.path(), UID);
    before.publish(request(&target, "audited")).await.unwrap();
    let file = target.join("watched");
    let ours = PodCgroup::new(UID, CONTAINER);
    assert_eq!(ours.read(&file), VALUE.as_bytes());
    assert_eq!(wait_for(&log, 1).await[0]["attributed"], true);
    assert_eq!(before.hand_over(Duration::from_secs(2)).await, 1);

    let log = Arc::new(Mutex::new(Vec::new()));
    let after = driver(
        &emu,
        classes.path(),
        secretfs::metrics::Metrics::isolated(),
        log.clone(),
        persist,
    );
    let report = after.restore().await;
    assert_eq!(report.adopted, 1, "{report:?}");
    assert!(after.status().await[0].audit.is_some());
    assert_eq!(ours.read(&file), VALUE.as_bytes());
    let got = wait_for(&log, 1).await;
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0]["attributed"], true, "{got:?}");
    assert_eq!(got[0]["pod_uid"], UID);
    assert_eq!(got[0]["container"], "web");

    after
        .unpublish(UnpublishRequest {
            volume_id: "csi-audited".into(),
            target_path: target.clone(),
        })
        .await
        .unwrap();
    stop_keeper.stop();
    let _ = keeper_thread.join();
    drop(ours);
}

/// The container names the driver reads for audit lines: from the pod's
/// status on a real API server (init and ephemeral containers included),
/// keyed by the id without its runtime prefix.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn container_names_come_from_the_pods_status() {
    use kube::api::{Patch, PatchParams};
    let kube = crate::real_kube::RealKube::namespace("audit").await;
    kube.create_pod(
        "apiVersion: v1
kind: Pod
metadata: {}
spec:
  initContainers:
    - name: setup
      image: registry.example/setup:1
  containers:
    - name: web
      image: registry.example/web:1
    - name: sidecar
      image: registry.example/sidecar:1
",
        "audited",
    )
    .await;
    let status = serde_json::json!({
        "status": {
            "initContainerStatuses": [{
                "name": "setup", "image": "registry.example/setup:1", "imageID": "",
                "ready": false, "restartCount": 0,
                "containerID": format!("cri-o://{OTHER_CONTAINER}"),
            }],
            "containerStatuses": [
                {
                    "name": "web", "image": "registry.example/web:1", "imageID": "",
                    "ready": true, "restartCount": 0,
                    "containerID": format!("containerd://{CONTAINER}"),
                },
                {
                    "name": "sidecar", "image": "registry.example/sidecar:1", "imageID": "",
                    "ready": false, "restartCount": 0,
                },
            ],
        }
    });
    kube.pods()
        .patch_status("audited", &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap();
    let names = secretfs::node::audit::KubeContainerNames(kube.client.clone())
        .names(&kube.namespace, "audited")
        .await
        .unwrap();
    assert_eq!(
        names,
        [
            (CONTAINER.to_owned(), "web".to_owned()),
            (OTHER_CONTAINER.to_owned(), "setup".to_owned()),
        ]
        .into()
    );
    // A pod that does not exist: an error, not an empty answer.
    assert!(
        secretfs::node::audit::KubeContainerNames(kube.client.clone())
            .names(&kube.namespace, "absent")
            .await
            .is_err()
    );
    kube.delete().await;
}
