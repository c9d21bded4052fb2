//! What a refresh cycle costs: vault requests for P pods × M objects of one
//! identity (P = 1, 10, 100; M = 10) against upstream's model (one GET per
//! object per pod: P × M), counted by the emulator; and the resident memory
//! of the real `secretfs node` with 110 volumes × 10 objects of 4 KiB,
//! against the same process before any volume (measured in the same run).
//!
//! Run as root: `cargo bench -p secretfs --bench rotation_cost`.

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use secretfs::cmd::demo::emulator_azure_config;
use secretfs::node::driver::{Driver, DriverConfig};
use secretfs::provider::Provider;
use secretfs::provider::azure::AzureProvider;
use secretfs::spc::SpcDir;
use secretfs_e2e::kubelet::{Kubelet, PublishExtras, parse_pod};
use secretfs_e2e::{CounterFilter, Emulator, EmulatorConfig, EmulatorHandle, Route, Seed};
use secretfs_fuse::ReadMode;

const SEED_POD: &str = include_str!("../tests/fixtures/seed/pod.yaml");
const M: usize = 10;

fn class(objects: usize) -> String {
    let mut list = String::from("array:\n");
    for i in 0..objects {
        list.push_str(&format!(
            "  - |\n    objectName: cost-{i}\n    objectType: secret\n"
        ));
    }
    let indented: Vec<String> = list.lines().map(|l| format!("      {l}")).collect();
    format!(
        "apiVersion: secrets-store.csi.x-k8s.io/v1\nkind: SecretProviderClass\nmetadata:\n  name: cost\n  namespace: default\nspec:\n  provider: azure\n  parameters:\n    keyvaultName: kv-demo\n    tenantId: 9c0d2e7b-1a3f-4b6c-8d5e-7f1a2b3c4d5e\n    useVMManagedIdentity: \"true\"\n    userAssignedIdentityID: 5a1d3e0c-6f0e-4c55-9a57-3c2f1b7d9e21\n    objects: |\n{}\n",
        indented.join("\n")
    )
}

fn pod(i: usize) -> k8s_openapi::api::core::v1::Pod {
    let mut pod = parse_pod(SEED_POD).unwrap();
    pod.metadata.uid = Some(format!("cost-{i:04}"));
    let csi = pod.spec.as_mut().unwrap().volumes.as_mut().unwrap()[0]
        .csi
        .as_mut()
        .unwrap();
    csi.volume_attributes
        .as_mut()
        .unwrap()
        .insert("secretProviderClass".into(), "cost".into());
    pod
}

async fn cycle_cost(emulator: &EmulatorHandle, work: &std::path::Path, pods: usize) -> u64 {
    let interval = Duration::from_secs(1);
    let provider = AzureProvider::new(emulator_azure_config(emulator)).unwrap();
    let driver = Arc::new(Driver::new(
        DriverConfig {
            node_name: "bench".into(),
            read_mode: ReadMode::Atomic,
            rotation_interval: interval,
        },
        Arc::new(SpcDir::new(work.join("classes"))),
        [Arc::new(provider) as Arc<dyn Provider>],
    ));
    let socket = work.join(format!("csi-{pods}.sock"));
    let listener = secretfs_csi::bind(&socket).unwrap();
    let (identity, node) =
        secretfs_csi::services("secrets-store.csi.k8s.io", "bench", "bench", driver.clone());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(secretfs_csi::serve(listener, identity, node, async {
        let _ = stopped.await;
    }));
    let kubelet = Kubelet::connect(&socket, &work.join(format!("kubelet-{pods}")))
        .await
        .unwrap();
    let mut targets = Vec::new();
    for i in 0..pods {
        targets.push(
            kubelet
                .publish(&pod(i), "secrets-store-inline", &PublishExtras::default())
                .await
                .unwrap(),
        );
    }
    // Let every cached object age past the cycle's max age, then run one
    // cycle the way the scheduler does (each volume once, cache allowed).
    tokio::time::sleep(interval).await;
    emulator.control().reset_counters();
    let refreshes = targets.iter().map(|t| driver.refresh_with(t, None));
    for result in futures::future::join_all(refreshes).await {
        result.unwrap();
    }
    let gets = emulator
        .control()
        .count(&CounterFilter::route(Route::SecretGet));
    for i in 0..pods {
        kubelet
            .unpublish(&pod(i), "secrets-store-inline")
            .await
            .unwrap();
    }
    let _ = stop.send(());
    gets
}

fn rss_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

async fn node_rss(emulator: &EmulatorHandle, work: &std::path::Path) -> (u64, u64) {
    let socket = work.join("rss.sock");
    let addr = emulator.https_addr();
    let mut child = Command::new(env!("CARGO_BIN_EXE_secretfs"))
        .arg("node")
        .arg(format!("--endpoint=unix://{}", socket.display()))
        .args(["--nodeid", "bench", "--metrics-addr=", "--admin-socket="])
        .arg("--spc-dir")
        .arg(work.join("classes"))
        .arg("--azure-ca-file")
        .arg(emulator.ca_path())
        .arg(format!("--azure-resolve=*.vault.azure.net={addr}"))
        .arg(format!("--azure-resolve=login.microsoftonline.com={addr}"))
        .arg(format!("--azure-vault-port={}", addr.port()))
        .arg(format!(
            "--azure-authority-host={}",
            emulator.authority_url()
        ))
        .arg(format!("--azure-imds-endpoint={}", emulator.imds_url()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !socket.exists() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let kubelet = Kubelet::connect(&socket, &work.join("kubelet-rss"))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let idle = rss_kb(child.id());
    for i in 0..110 {
        kubelet
            .publish(
                &pod(10_000 + i),
                "secrets-store-inline",
                &PublishExtras::default(),
            )
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let loaded = rss_kb(child.id());
    for i in 0..110 {
        let _ = kubelet
            .unpublish(&pod(10_000 + i), "secrets-store-inline")
            .await;
    }
    let _ = child.kill();
    let _ = child.wait();
    (idle, loaded)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if !rustix::process::geteuid().is_root() {
        eprintln!("rotation_cost needs root (it mounts FUSE)");
        std::process::exit(2);
    }
    let emulator = Emulator::start(EmulatorConfig::with_seed(Seed::demo()))
        .await
        .unwrap();
    let value = "x".repeat(4096);
    for i in 0..M {
        emulator
            .control()
            .set_secret("kv-demo", &format!("cost-{i}"), &value)
            .unwrap();
    }
    let work = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(work.path().join("classes")).unwrap();
    std::fs::write(work.path().join("classes/cost.yaml"), class(M)).unwrap();

    println!("vault GETs for one refresh cycle, {M} objects per pod, one identity\n");
    println!(
        "{:>5} {:>10} {:>16} {:>8}",
        "pods", "secretfs", "upstream (P×M)", "saving"
    );
    for pods in [1, 10, 100] {
        let gets = cycle_cost(&emulator, work.path(), pods).await;
        let upstream = (pods * M) as u64;
        println!(
            "{pods:>5} {gets:>10} {upstream:>16} {:>7.0}×",
            upstream as f64 / gets.max(1) as f64
        );
    }

    let (idle, loaded) = node_rss(&emulator, work.path()).await;
    println!(
        "\nsecretfs node RSS: {:.1} MiB idle, {:.1} MiB with 110 volumes × 10 objects of 4 KiB (+{:.1} MiB); target ≤ 40 MiB: {}",
        idle as f64 / 1024.0,
        loaded as f64 / 1024.0,
        (loaded.saturating_sub(idle)) as f64 / 1024.0,
        if loaded <= 40 * 1024 { "met" } else { "MISSED" }
    );
}
