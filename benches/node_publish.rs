//! NodePublishVolume latency through the CSI socket (as kubelet sees it),
//! with 25 ms of latency injected on every Key Vault request of the
//! emulator: the seed SecretProviderClass (1 object) and a 10-object one;
//! the first mount of an identity (new credential, token, 401 challenge)
//! and later pods of the same identity. The vault round trip (25 ms) is the
//! baseline each figure is divided by.
//!
//! Run as root: `cargo bench -p secretfs --bench node_publish` (`-- --quick`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use secretfs::cmd::demo::emulator_azure_config;
use secretfs::node::driver::{Driver, DriverConfig};
use secretfs::provider::Provider;
use secretfs::provider::azure::AzureProvider;
use secretfs::spc::SpcDir;
use secretfs_e2e::kubelet::{Kubelet, PublishExtras, parse_pod};
use secretfs_e2e::{Emulator, EmulatorConfig, EmulatorHandle, FaultKind, FaultSpec, Seed};
use secretfs_fuse::ReadMode;

const SEED_CLASS: &str = include_str!("../tests/fixtures/seed/secretproviderclass.yaml");
const SEED_POD: &str = include_str!("../tests/fixtures/seed/pod.yaml");
const VAULT_LATENCY: Duration = Duration::from_millis(25);

fn ten_object_class() -> String {
    let mut objects = String::from("array:\n");
    for i in 0..10 {
        objects.push_str(&format!(
            "  - |\n    objectName: bench-{i}\n    objectType: secret\n"
        ));
    }
    let indented: Vec<String> = objects.lines().map(|l| format!("      {l}")).collect();
    format!(
        "apiVersion: secrets-store.csi.x-k8s.io/v1\nkind: SecretProviderClass\nmetadata:\n  name: ten\n  namespace: default\nspec:\n  provider: azure\n  parameters:\n    keyvaultName: kv-demo\n    tenantId: 9c0d2e7b-1a3f-4b6c-8d5e-7f1a2b3c4d5e\n    useVMManagedIdentity: \"true\"\n    userAssignedIdentityID: 5a1d3e0c-6f0e-4c55-9a57-3c2f1b7d9e21\n    objects: |\n{}\n",
        indented.join("\n")
    )
}

struct Node {
    kubelet: Kubelet,
    stop: tokio::sync::oneshot::Sender<()>,
}

async fn start_node(emulator: &EmulatorHandle, work: &std::path::Path, n: usize) -> Node {
    let classes = work.join("classes");
    let socket = work.join(format!("csi-{n}.sock"));
    let provider = AzureProvider::new(emulator_azure_config(emulator)).unwrap();
    let driver = Arc::new(Driver::new(
        DriverConfig {
            node_name: "bench".into(),
            read_mode: ReadMode::Atomic,
            rotation_interval: std::time::Duration::from_secs(120),
        },
        Arc::new(SpcDir::new(&classes)),
        [Arc::new(provider) as Arc<dyn Provider>],
    ));
    let listener = secretfs_csi::bind(&socket).unwrap();
    let (identity, node) =
        secretfs_csi::services("secrets-store.csi.k8s.io", "bench", "bench", driver);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(secretfs_csi::serve(listener, identity, node, async {
        let _ = stopped.await;
    }));
    let kubelet = Kubelet::connect(&socket, &work.join("kubelet"))
        .await
        .unwrap();
    Node { kubelet, stop }
}

fn percentile(samples: &mut [Duration], q: f64) -> f64 {
    samples.sort();
    samples[((samples.len() - 1) as f64 * q) as usize].as_secs_f64() * 1000.0
}

fn report(label: &str, mut samples: Vec<Duration>, target_ms: Option<f64>) {
    let p50 = percentile(&mut samples, 0.5);
    let p99 = percentile(&mut samples, 0.99);
    let trips = p50 / (VAULT_LATENCY.as_secs_f64() * 1000.0);
    let verdict = match target_ms {
        Some(t) if p50 <= t => format!("target p50 ≤ {t} ms: met"),
        Some(t) => format!("target p50 ≤ {t} ms: MISSED"),
        None => String::new(),
    };
    println!(
        "{label:<44} n={:<4} p50 {p50:>7.1} ms  p99 {p99:>7.1} ms  = {trips:>4.1} vault round trips  {verdict}",
        samples.len()
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if !rustix::process::geteuid().is_root() {
        eprintln!("node_publish needs root (it mounts FUSE)");
        std::process::exit(2);
    }
    let quick = std::env::args().any(|a| a == "--quick");
    let (firsts, seconds) = if quick { (5, 10) } else { (20, 50) };

    let emulator = Emulator::start(EmulatorConfig::with_seed(Seed::demo()))
        .await
        .unwrap();
    for i in 0..10 {
        emulator
            .control()
            .set_secret("kv-demo", &format!("bench-{i}"), &format!("value-{i}"))
            .unwrap();
    }
    emulator.control().add_fault(
        FaultSpec::new(FaultKind::Latency {
            millis: VAULT_LATENCY.as_millis() as u64,
        })
        .vault("kv-demo"),
    );
    let work = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(work.path().join("classes")).unwrap();
    std::fs::write(work.path().join("classes/seed.yaml"), SEED_CLASS).unwrap();
    std::fs::write(work.path().join("classes/ten.yaml"), ten_object_class()).unwrap();

    println!(
        "NodePublishVolume over the CSI socket, {VAULT_LATENCY:?} injected per Key Vault request\n"
    );
    let mut node_count = 0;
    for (class, label, target) in [
        ("azure-kvname", "seed (1 object)", 100.0),
        ("ten", "10 objects", 150.0),
    ] {
        let mut first = Vec::new();
        let mut second = Vec::new();
        for round in 0..firsts {
            // A new node process state: no credential, token or client yet.
            node_count += 1;
            let node = start_node(&emulator, work.path(), node_count).await;
            let per_round = if round == 0 { seconds } else { 1 };
            for i in 0..=per_round {
                let mut pod = parse_pod(SEED_POD).unwrap();
                pod.metadata.uid = Some(format!("{class}-{round}-{i}"));
                let csi = pod.spec.as_mut().unwrap().volumes.as_mut().unwrap()[0]
                    .csi
                    .as_mut()
                    .unwrap();
                csi.volume_attributes
                    .as_mut()
                    .unwrap()
                    .insert("secretProviderClass".into(), class.into());
                let start = Instant::now();
                node.kubelet
                    .publish(&pod, "secrets-store-inline", &PublishExtras::default())
                    .await
                    .unwrap();
                let took = start.elapsed();
                if i == 0 {
                    first.push(took)
                } else {
                    second.push(took)
                }
                node.kubelet
                    .unpublish(&pod, "secrets-store-inline")
                    .await
                    .unwrap();
            }
            let _ = node.stop.send(());
        }
        report(
            &format!("{label}, first mount of the identity"),
            first,
            None,
        );
        report(
            &format!("{label}, later pod of the same identity"),
            second,
            Some(target),
        );
    }
}
