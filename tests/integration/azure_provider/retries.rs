//! Throttling, server errors, resets and slow vaults: retries (visible in
//! the emulator's counters), Retry-After, and the deadline.

use std::time::{Duration, Instant};

use secretfs::provider::ErrorKind;
use secretfs::provider::azure::AzureProvider;
use secretfs_e2e::{CounterFilter, FaultKind, FaultSpec, Route};

use crate::azure_provider::common::*;

const VAULT: &str = "kv-conformance";

fn rotating() -> String {
    objects(&[&object("rotating", "secret", &[])])
}

#[tokio::test]
async fn throttling_with_retry_after_is_retried_after_the_given_time() {
    let emu = start().await;
    let provider = provider(&emu);
    emu.add_fault(
        FaultSpec::new(FaultKind::Throttle {
            retry_after: Some(1),
        })
        .times(2)
        .vault(VAULT)
        .route(Route::SecretGet),
    );
    let start = Instant::now();
    let r = mount_ok(&provider, &sp_request(VAULT, &rotating())).await;
    assert_eq!(file_text(&r, "rotating"), "fifth-value");
    assert_eq!(
        emu.count(&CounterFilter::route(Route::SecretGet).status(429)),
        2
    );
    assert_eq!(
        emu.count(
            &CounterFilter::route(Route::SecretGet)
                .identity(APP_SP)
                .status(200)
        ),
        1
    );
    // Two waits of Retry-After: 1 (a lower bound; our own backoff is 50 ms).
    assert!(
        start.elapsed() >= Duration::from_millis(1900),
        "{:?}",
        start.elapsed()
    );
}

#[tokio::test]
async fn throttling_without_retry_after_backs_off_and_succeeds() {
    let emu = start().await;
    let provider = provider(&emu);
    emu.add_fault(
        FaultSpec::new(FaultKind::Throttle { retry_after: None })
            .times(3)
            .vault(VAULT)
            .route(Route::SecretGet),
    );
    let r = mount_ok(&provider, &sp_request(VAULT, &rotating())).await;
    assert_eq!(file_text(&r, "rotating"), "fifth-value");
    assert_eq!(
        emu.count(&CounterFilter::route(Route::SecretGet).status(429)),
        3
    );
}

#[tokio::test]
async fn persistent_throttling_gives_up_after_the_attempts_naming_the_object() {
    let emu = start().await;
    let provider = provider(&emu);
    emu.add_fault(
        FaultSpec::new(FaultKind::Throttle { retry_after: None })
            .vault(VAULT)
            .route(Route::SecretGet),
    );
    let errors = mount_objects_err(&provider, &sp_request(VAULT, &rotating())).await;
    assert_eq!(errors.len(), 1);
    let e = &errors[0];
    assert_eq!(e.kind, ErrorKind::Throttled);
    assert_eq!(e.object, "secret/rotating");
    assert!(
        e.message.contains("429 Throttled") && e.message.contains("gave up after 5 attempts"),
        "{}",
        e.message
    );
    // max_attempts = 5 in the test configuration.
    assert_eq!(
        emu.count(&CounterFilter::route(Route::SecretGet).status(429)),
        5
    );
}

#[tokio::test]
async fn server_errors_and_resets_are_retried() {
    let emu = start().await;
    let provider = provider(&emu);
    emu.add_fault(
        FaultSpec::new(FaultKind::ServerError { status: 503 })
            .times(2)
            .vault(VAULT)
            .route(Route::SecretGet),
    );
    let r = mount_ok(&provider, &sp_request(VAULT, &rotating())).await;
    assert_eq!(file_text(&r, "rotating"), "fifth-value");
    assert_eq!(
        emu.count(&CounterFilter::route(Route::SecretGet).status(503)),
        2
    );

    emu.add_fault(
        FaultSpec::new(FaultKind::ConnectionReset)
            .times(1)
            .vault(VAULT)
            .route(Route::SecretGet),
    );
    let r = mount_ok(&provider, &sp_request(VAULT, &rotating())).await;
    assert_eq!(file_text(&r, "rotating"), "fifth-value");
    assert_eq!(
        emu.count(&CounterFilter::route(Route::SecretGet).status(0)),
        1
    );

    // A token endpoint outage is retried too.
    let fresh = AzureProvider::new(config(&emu)).unwrap();
    emu.add_fault(
        FaultSpec::new(FaultKind::ServerError { status: 500 })
            .times(1)
            .route(Route::EntraToken),
    );
    mount_ok(&fresh, &sp_request(VAULT, &rotating())).await;
}

#[tokio::test]
async fn a_slow_vault_fails_within_the_deadline_naming_the_object() {
    let emu = start().await;
    let mut config = config(&emu);
    config.deadline = Duration::from_secs(3);
    config.request_timeout = Duration::from_secs(2);
    let provider = AzureProvider::new(config).unwrap();
    emu.add_fault(
        FaultSpec::new(FaultKind::Latency { millis: 60_000 })
            .vault(VAULT)
            .route(Route::SecretGet),
    );
    let start = Instant::now();
    let errors = mount_objects_err(&provider, &sp_request(VAULT, &rotating())).await;
    let elapsed = start.elapsed();
    // Generous: the deadline is 3 s.
    assert!(elapsed < Duration::from_secs(15), "{elapsed:?}");
    assert_eq!(errors.len(), 1);
    let e = &errors[0];
    assert_eq!(e.kind, ErrorKind::Transient);
    assert_eq!(e.object, "secret/rotating");
    assert!(
        e.message.contains("objectName:rotating")
            && e.message.contains("no answer within")
            && e.message.contains("3s mount deadline"),
        "{}",
        e.message
    );
}

#[tokio::test]
async fn every_failing_object_is_reported_together() {
    let emu = start().await;
    let provider = provider(&emu);
    let request = sp_request(
        VAULT,
        &objects(&[
            &object("rotating", "secret", &[]),
            &object("missing-one", "secret", &[]),
            &object("missing-key", "key", &[]),
            &object(
                "missing-cert",
                "cert",
                &[("objectVersion", &"a".repeat(32))],
            ),
        ]),
    );
    let errors = mount_objects_err(&provider, &request).await;
    let objects: Vec<&str> = errors.iter().map(|e| e.object.as_str()).collect();
    assert_eq!(
        objects,
        ["secret/missing-one", "key/missing-key", "cert/missing-cert"]
    );
    assert!(errors.iter().all(|e| e.kind == ErrorKind::NotFound));
    assert!(
        errors[0].message.contains("404 SecretNotFound")
            && errors[0].message.contains("vault kv-conformance")
            && errors[0].message.contains("check objectName"),
        "{}",
        errors[0].message
    );
    assert!(
        errors[1].message.contains("KeyNotFound"),
        "{}",
        errors[1].message
    );
    assert!(
        errors[2]
            .message
            .contains(&format!("objectVersion:{}", "a".repeat(32))),
        "{}",
        errors[2].message
    );
    let err = secretfs::provider::Provider::mount(&provider, &request)
        .await
        .unwrap_err();
    assert!(err.to_string().starts_with("3 objects failed: "), "{err}");
}

#[tokio::test]
async fn token_endpoints_are_retried_too() {
    let emu = start().await;
    // Entra throttles once (with Retry-After), IMDS fails once.
    emu.add_fault(
        FaultSpec::new(FaultKind::Throttle {
            retry_after: Some(1),
        })
        .times(1)
        .route(Route::EntraToken),
    );
    emu.add_fault(
        FaultSpec::new(FaultKind::ServerError { status: 503 })
            .times(1)
            .route(Route::ImdsToken),
    );
    let provider = provider(&emu);
    mount_ok(&provider, &sp_request(VAULT, &rotating())).await;
    assert_eq!(
        emu.count(&CounterFilter::route(Route::EntraToken).status(429)),
        1
    );
    assert_eq!(
        emu.count(&CounterFilter::route(Route::EntraToken).status(200)),
        1
    );
    let mi = request(
        "kv-demo",
        &[
            ("useVMManagedIdentity", "true"),
            ("userAssignedIdentityID", NODE_MI),
        ],
        &objects(&[&object("sql-password", "secret", &[])]),
    );
    mount_ok(&provider, &mi).await;
    assert_eq!(
        emu.count(&CounterFilter::route(Route::ImdsToken).status(503)),
        1
    );
    assert_eq!(
        emu.count(&CounterFilter::route(Route::ImdsToken).status(200)),
        1
    );
}
