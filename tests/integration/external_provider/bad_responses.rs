//! Every response a driver must refuse fails the publish with a clear
//! error, and nothing is mounted.

use std::time::Duration;

use secretfs_e2e::test_provider::Behavior;

use super::common::*;

/// Publishes with the provider set to `behavior`; returns the error.
async fn refused(
    behavior: Behavior,
    tune: impl FnOnce(&mut secretfs::provider::external::ExternalConfig),
) -> secretfs_csi::VolumeError {
    let (s, provider) = with_test_provider(tune).await;
    provider.set_behavior(behavior.clone());
    let err = s
        .publish("bad", "v")
        .await
        .expect_err(&format!("{behavior:?} must fail the publish"));
    let target = s.target("bad");
    assert!(!is_mounted(&target), "{behavior:?}: nothing may be mounted");
    assert!(
        !target.exists(),
        "{behavior:?}: no target directory is created"
    );
    assert!(
        s.driver.published().await.is_empty(),
        "{behavior:?}: no volume is recorded"
    );
    assert!(
        err.message.contains("SecretProviderClass default/v:"),
        "{behavior:?}: the class is named as namespace/name: {}",
        err.message
    );
    err
}

fn assert_contains(err: &secretfs_csi::VolumeError, needles: &[&str]) {
    for needle in needles {
        assert!(
            err.message.contains(needle),
            "expected {needle:?} in: {}",
            err.message
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsafe_paths_are_refused() {
    for (behavior, needle) in [
        (Behavior::AbsolutePath, "\"/etc/passwd\" must be relative"),
        (Behavior::DotDot, "must not contain a '..' element"),
        (Behavior::StartsWithDotDot, "must not start with '..'"),
    ] {
        let err = refused(behavior, |_| {}).await;
        assert_eq!(err.error_type, "InvalidProviderResponse");
        assert_contains(&err, &[needle, "vault.sock", "unsafe file"]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_paths_are_refused() {
    let err = refused(Behavior::DuplicatePath, |_| {}).await;
    assert_eq!(err.error_type, "InvalidProviderResponse");
    assert_contains(&err, &["file \"foo\" twice"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mode_out_of_range_is_refused() {
    let err = refused(Behavior::ModeOutOfRange, |_| {}).await;
    assert_contains(&err, &["\"foo\" with mode 512", "0..=511"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_object_versions_are_refused() {
    let err = refused(Behavior::MissingVersions, |_| {}).await;
    assert_contains(&err, &["missing object versions"]);
}

/// A provider's own failure is final and answered `Unknown`, as upstream
/// answers it (kubelet treats `UNAVAILABLE` as "maybe mounted, try again").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_providers_own_error_is_final_and_unknown() {
    let err = refused(Behavior::Failed("objects is not set".into()), |_| {}).await;
    assert_eq!(
        err.code,
        secretfs_csi::ErrorCode::Unknown,
        "{}",
        err.message
    );
    assert_eq!(err.error_type, "GRPCProviderError");
    assert_contains(&err, &["Unknown: objects is not set", "provider \"vault\""]);
    let err = refused(Behavior::ErrorCode("VaultSealed".into()), |_| {}).await;
    assert_eq!(
        err.code,
        secretfs_csi::ErrorCode::Unknown,
        "{}",
        err.message
    );
    // Only a broken transport stays retryable.
    let err = refused(Behavior::Unavailable(10), |_| {}).await;
    assert_eq!(
        err.code,
        secretfs_csi::ErrorCode::Unavailable,
        "{}",
        err.message
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_error_code_fails_with_the_code_as_message_and_metric_label() {
    let err = refused(Behavior::ErrorCode("VaultSealed".into()), |_| {}).await;
    assert_eq!(err.error_type, "VaultSealed");
    assert_contains(&err, &["error code \"VaultSealed\"", "provider \"vault\""]);
    let metrics = secretfs::metrics::global().render();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("node_publish_error_total{")
                && l.contains(r#"provider="vault""#)
                && l.contains(r#"error_type="VaultSealed""#)),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_over_the_size_limit_is_refused_with_the_flag_to_raise() {
    // 5 MiB against the default 4 MiB.
    let err = refused(Behavior::Oversize(5 * 1024 * 1024), |_| {}).await;
    assert_eq!(err.error_type, "GRPCProviderError");
    assert_contains(&err, &["--max-call-recv-msg-size (4194304 bytes)"]);
    // A lower limit applies too.
    let err = refused(Behavior::Oversize(64 * 1024), |c| {
        c.max_recv_msg_size = 16 * 1024
    })
    .await;
    assert_contains(&err, &["--max-call-recv-msg-size (16384 bytes)"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_provider_fails_at_the_deadline() {
    let started = std::time::Instant::now();
    let err = refused(Behavior::Slow(Duration::from_secs(5)), |c| {
        c.timeout = Duration::from_millis(500)
    })
    .await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(err.error_type, "GRPCProviderError");
    assert_contains(
        &err,
        &["did not answer Mount within 500ms", "--provider-timeout"],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_socket_names_every_path_tried() {
    let s = setup_with(vec![], &class("v", "vault", &[("objects", "foo")]), |_| {});
    let err = s.publish("nosock", "v").await.unwrap_err();
    assert_eq!(err.error_type, "FailedToLookupProviderGRPCClient");
    for dir in &s.dirs {
        let path = dir.path().join("vault.sock");
        assert!(
            err.message.contains(&path.display().to_string()),
            "{}",
            err.message
        );
    }
    assert!(!s.target("nosock").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_name_breaking_the_rule_is_refused() {
    let s = setup_with(
        vec![],
        &class("v", "vault.evil", &[("objects", "foo")]),
        |_| {},
    );
    std::fs::write(s.dirs[0].path().join("vault.evil.sock"), "").unwrap();
    let err = s.publish("name", "v").await.unwrap_err();
    assert_eq!(err.error_type, "FailedToLookupProviderGRPCClient");
    assert!(
        err.message.contains("^[a-zA-Z0-9_-]{0,30}$"),
        "{}",
        err.message
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unavailable_past_the_retries_fails() {
    let err = refused(Behavior::Unavailable(10), |_| {}).await;
    assert_eq!(err.error_type, "GRPCProviderError");
    assert_contains(&err, &["Unavailable", "not ready yet"]);
}
