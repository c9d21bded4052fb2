//! Parallel fetch of a 10-object plan vs a sequential baseline, against the
//! emulator with 25 ms of latency injected into every vault request, with a
//! warm token and warm clients (the steady state of rotation and republish).
//!
//! ```sh
//! cargo bench -p secretfs --bench azure_fetch
//! ```
//!
//! Prints the median wall time of each mode over `ROUNDS` mounts, the ratio,
//! and the parallel time in round trips (target: ≤ 3 round trips, ≥ 3×
//! faster than sequential).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use secretfs::provider::azure::{AzureProvider, AzureProviderConfig, HostOverride};
use secretfs::provider::{FileMode, MountRequest, PodRef, Provider};
use secretfs_e2e::{Emulator, EmulatorConfig, EmulatorHandle, FaultKind, FaultSpec, Seed};
use secretfs_secrets::SecretMap;

const LATENCY_MS: u64 = 25;
const OBJECTS: usize = 10;
const ROUNDS: usize = 15;
const VAULT: &str = "kv-demo";

fn provider(emu: &EmulatorHandle, concurrency: usize) -> AzureProvider {
    let addr = emu.https_addr();
    AzureProvider::new(AzureProviderConfig {
        extra_ca_pem: Some(emu.ca_pem().to_owned()),
        resolve: vec![
            HostOverride::new("*.vault.azure.net", addr),
            HostOverride::new("login.microsoftonline.com", addr),
        ],
        vault_port: Some(addr.port()),
        authority_host: Some(emu.authority_url()),
        imds_url: emu.imds_url(),
        concurrency,
        ..Default::default()
    })
    .expect("provider")
}

fn request() -> MountRequest {
    let mut objects = String::from("array:\n");
    for i in 0..OBJECTS {
        objects.push_str(&format!(
            "  - |\n    objectName: bench-{i}\n    objectType: secret\n"
        ));
    }
    let parameters: BTreeMap<String, String> = [
        ("keyvaultName", VAULT),
        ("tenantID", "9c0d2e7b-1a3f-4b6c-8d5e-7f1a2b3c4d5e"),
        ("objects", objects.as_str()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    MountRequest {
        parameters,
        pod: PodRef {
            name: "bench".into(),
            namespace: "default".into(),
            uid: "0".into(),
            service_account: "default".into(),
        },
        service_account_tokens: None,
        secrets: SecretMap::new([
            (
                "clientid".to_owned(),
                "3f8e2d1c-7b6a-4c5d-9e8f-1a2b3c4d5e6f".to_owned(),
            ),
            (
                "clientsecret".to_owned(),
                "emulator-test-client-secret".to_owned(),
            ),
        ]),
        default_mode: FileMode::DEFAULT,
        current: Vec::new(),
        node_name: "bench-node".into(),
        max_age: std::time::Duration::ZERO,
        fresh_since: None,
    }
}

async fn median_mount(provider: &AzureProvider, request: &MountRequest) -> Duration {
    // Warm: token, challenge, connections.
    let warm = provider.mount(request).await.expect("warm-up mount");
    assert_eq!(warm.files.len(), OBJECTS);
    let mut times = Vec::with_capacity(ROUNDS);
    for _ in 0..ROUNDS {
        let start = Instant::now();
        let r = provider.mount(request).await.expect("mount");
        times.push(start.elapsed());
        assert_eq!(r.files.len(), OBJECTS);
    }
    times.sort();
    times[times.len() / 2]
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let emu = Emulator::start(EmulatorConfig::with_seed(Seed::demo()))
            .await
            .expect("emulator");
        for i in 0..OBJECTS {
            emu.set_secret(VAULT, &format!("bench-{i}"), &format!("value-{i}"))
                .expect("seed secret");
        }
        emu.add_fault(
            FaultSpec::new(FaultKind::Latency {
                millis: LATENCY_MS,
            })
            .vault(VAULT),
        );
        let request = request();
        let sequential = median_mount(&provider(&emu, 1), &request).await;
        let parallel = median_mount(&provider(&emu, 8), &request).await;
        let ratio = sequential.as_secs_f64() / parallel.as_secs_f64();
        let round_trips = parallel.as_secs_f64() / (LATENCY_MS as f64 / 1000.0);
        println!(
            "azure_fetch: {OBJECTS} secrets, {LATENCY_MS} ms injected per vault request, warm token, median of {ROUNDS} mounts"
        );
        println!("  sequential (concurrency 1): {sequential:>10.1?}");
        println!("  parallel   (concurrency 8): {parallel:>10.1?}");
        println!("  speed-up: {ratio:.2}x; parallel = {round_trips:.2} round trips of {LATENCY_MS} ms");
    });
}
