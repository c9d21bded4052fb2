//! The fetch concurrency bound: a mount fetches its objects at the same
//! time, at most `concurrency` (default 8) vault requests at once. The
//! emulator's gauge counts data-plane requests being served; injected
//! latency keeps each one in flight long enough to overlap.

use std::time::{Duration, Instant};

use secretfs::provider::azure::{AzureProvider, AzureProviderConfig};
use secretfs_e2e::{CounterFilter, FaultKind, FaultSpec, Route};

use crate::azure_provider::common::*;

const VAULT: &str = "kv-conformance";
const OBJECTS: usize = 20;
const LATENCY_MS: u64 = 150;

async fn mount_twenty(tune: impl FnOnce(&mut AzureProviderConfig)) -> (u64, Duration) {
    let emu = start().await;
    let mut entries = Vec::new();
    for i in 0..OBJECTS {
        let name = format!("parallel-{i:02}");
        emu.set_secret(VAULT, &name, &format!("value-{i}")).unwrap();
        entries.push(object(&name, "secret", &[]));
    }
    emu.add_fault(
        FaultSpec::new(FaultKind::Latency { millis: LATENCY_MS })
            .route(Route::SecretGet)
            .vault(VAULT),
    );
    let mut config = config(&emu);
    tune(&mut config);
    let provider = AzureProvider::new(config).expect("provider");
    let entries: Vec<&str> = entries.iter().map(String::as_str).collect();
    let request = sp_request(VAULT, &objects(&entries));
    emu.reset_counters();
    let started = Instant::now();
    let r = mount_ok(&provider, &request).await;
    let took = started.elapsed();
    assert_eq!(r.files.len(), OBJECTS);
    for i in 0..OBJECTS {
        assert_eq!(
            file_text(&r, &format!("parallel-{i:02}")),
            format!("value-{i}")
        );
    }
    assert_eq!(
        emu.count(&CounterFilter::route(Route::SecretGet).status(200)),
        OBJECTS as u64,
        "one GET per object"
    );
    (emu.peak_in_flight(), took)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_objects_are_fetched_eight_at_a_time_by_default() {
    let (peak, took) =
        mount_twenty(|config| assert_eq!(config.concurrency, 8, "the default")).await;
    assert_eq!(peak, 8, "at most 8 vault requests in flight, and 8 reached");
    // The first request runs alone (it learns the challenge), then waves
    // of 8: at least 1 + ⌈19 / 8⌉ = 4 latencies, far below 20 sequential.
    assert!(
        took >= Duration::from_millis(4 * LATENCY_MS),
        "{took:?}: more than 8 at once?"
    );
    assert!(
        took < Duration::from_millis(12 * LATENCY_MS),
        "{took:?}: not concurrent?"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_smaller_configured_bound_is_kept_too() {
    let (peak, _) = mount_twenty(|config| config.concurrency = 3).await;
    assert_eq!(peak, 3);
}
