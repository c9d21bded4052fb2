//! The client's request, retries and channel reuse, against the test
//! provider.

use std::collections::BTreeMap;

use secretfs_csi::keys;
use secretfs_e2e::test_provider::Behavior;

use super::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_request_carries_parameters_kubelet_keys_secrets_and_permission() {
    if !fuse_available() {
        return;
    }
    let (s, provider) = with_test_provider(|_| {}).await;
    s.publish("req", "v").await.unwrap();
    let calls = provider.calls();
    assert_eq!(calls.len(), 1);
    let call = &calls[0];
    let expected: BTreeMap<String, String> = [
        ("roleName", "app"),
        ("objects", "foo"),
        (keys::SECRET_PROVIDER_CLASS, "v"),
        (keys::POD_NAME, "pod"),
        (keys::POD_NAMESPACE, "default"),
        (keys::POD_UID, "req"),
        (keys::SERVICE_ACCOUNT_NAME, "default"),
        (keys::EPHEMERAL, "true"),
        (
            keys::SERVICE_ACCOUNT_TOKENS,
            r#"{"vault":{"token":"jwt-for-test","expirationTimestamp":"2099-01-01T00:00:00Z"}}"#,
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    assert_eq!(call.attributes, expected);
    assert_eq!(call.secrets, r#"{"username":"u1"}"#);
    assert_eq!(call.permission, "420");
    assert_eq!(call.target_path, s.target("req").to_string_lossy());
    assert!(
        call.current.is_empty(),
        "first mount: nothing is mounted yet"
    );
    assert_eq!(
        std::fs::read(s.target("req").join("foo")).unwrap(),
        b"secret"
    );
    s.unpublish("req").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unavailable_is_retried_then_succeeds_on_one_channel() {
    if !fuse_available() {
        return;
    }
    let (s, provider) = with_test_provider(|_| {}).await;
    provider.set_behavior(Behavior::Unavailable(2));
    s.publish("u1", "v").await.unwrap();
    assert_eq!(
        provider.calls().len(),
        3,
        "two UNAVAILABLE, then the answer"
    );
    assert_eq!(
        std::fs::read(s.target("u1").join("foo")).unwrap(),
        b"secret"
    );
    // A second volume of the same provider: no retry, same socket.
    s.publish("u2", "v").await.unwrap();
    assert_eq!(provider.calls().len(), 4);
    s.unpublish("u1").await;
    s.unpublish("u2").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_errors_are_not_retried() {
    let (s, provider) = with_test_provider(|_| {}).await;
    provider.set_behavior(Behavior::ErrorCode("Denied".into()));
    s.publish("once", "v").await.unwrap_err();
    assert_eq!(provider.calls().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_provider_volume_wins_over_the_additional_paths() {
    if !fuse_available() {
        return;
    }
    let (s, second) = with_test_provider(|_| {}).await;
    let first =
        secretfs_e2e::test_provider::TestProvider::start(&s.dirs[0].path().join("vault.sock"))
            .await
            .unwrap();
    first.set_file("foo", b"from the first directory", "v9");
    s.publish("order", "v").await.unwrap();
    assert_eq!(
        std::fs::read(s.target("order").join("foo")).unwrap(),
        b"from the first directory"
    );
    assert_eq!(first.calls().len(), 1);
    assert!(second.calls().is_empty());
    s.unpublish("order").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn version_reports_the_providers_runtime() {
    let (s, provider) = with_test_provider(|_| {}).await;
    let registry_client = secretfs::provider::external::ExternalClient::new(
        "vault",
        provider.socket(),
        std::sync::Arc::new(config(vec![s.dirs[1].path().to_owned()])),
    );
    let version = registry_client.version().await.unwrap().unwrap();
    assert_eq!(version.version, "v1alpha1");
    assert_eq!(version.runtime_name, "E2EMockProvider");
    assert_eq!(version.runtime_version, "v0.0.10");
    assert_eq!(provider.version_calls(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_restarting_behind_its_socket_is_waited_for() {
    if !fuse_available() {
        return;
    }
    let s = setup_with(vec![], &class("v", "vault", &[("objects", "foo")]), |_| {});
    // A stale socket: the file exists, nobody listens (a provider restarting).
    let socket = s.dirs[0].path().join("vault.sock");
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
    let path = socket.clone();
    let restarted = tokio::spawn(async move {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        secretfs_e2e::test_provider::TestProvider::start(&path)
            .await
            .unwrap()
    });
    s.publish("restart", "v").await.unwrap();
    let provider = restarted.await.unwrap();
    assert_eq!(provider.calls().len(), 1);
    assert_eq!(
        std::fs::read(s.target("restart").join("foo")).unwrap(),
        b"secret"
    );
    s.unpublish("restart").await;

    // Gone for good: UNAVAILABLE after the retries, with the socket named.
    provider.stop().await;
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
    let err = s.publish("dead", "v").await.unwrap_err();
    assert_eq!(err.error_type, "GRPCProviderError");
    assert!(
        err.message.contains("Unavailable") && err.message.contains(&socket.display().to_string()),
        "{}",
        err.message
    );
    assert!(!s.target("dead").exists());
}
