//! The Kubernetes API down, failing or slow: during publish (the
//! SecretProviderClass lookup, the sync of a new volume) and during the
//! sync after a refresh. Mounts never wait on the API beyond a short
//! timeout, a class in the watch cache still mounts, and a Secret that
//! cannot be written keeps its data and is written at the next refresh.

use std::time::{Duration, Instant};

use secretfs_csi::ErrorCode;
use secretfs_e2e::fake_apiserver::{ApiFault, ApiFaultKind};
use serde_json::json;

use super::common::*;

fn sync_errors(env: &Env) -> f64 {
    env.metric("secretfs_sync_errors_total", &[])
}

/// Within two live-read or sync timeouts (a failed publish reads the class
/// twice; a failed sync also sends an event), with room for the provider.
fn promptly(started: Instant) {
    assert!(
        started.elapsed() < 2 * KUBE_TIMEOUT + Duration::from_secs(2),
        "the API was not waited for: {:?}",
        started.elapsed()
    );
}

/// The API server goes down after the watch listed: a class in the cache
/// mounts as usual; the new volume's sync fails (counted, the mount is
/// unaffected) and is done at the next refresh once the API is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_with_the_api_down_mounts_a_cached_class() {
    if !fuse_available() {
        return;
    }
    let env = Env::start(Kube::Cluster, |_| {}).await;
    env.api().down().await;
    let errors = sync_errors(&env);
    let started = Instant::now();
    env.publish("k1", MI_CLASS).await.unwrap();
    promptly(started);
    assert_eq!(env.secret_file("k1"), GOOD);
    assert_eq!(
        sync_errors(&env),
        errors + 1.0,
        "the failed sync is counted"
    );
    assert!(!env.synced("k1").await);
    assert_eq!(env.synced_secret(), None, "nothing reached the API");

    env.api().up().await.unwrap();
    let outcome = env.driver.refresh(&env.target("k1")).await.unwrap();
    assert!(!outcome.changed());
    assert!(env.synced("k1").await, "synced at the next refresh");
    assert_eq!(env.synced_secret().as_deref(), Some(GOOD));
    env.unpublish("k1").await;
}

/// A class the watch has not seen is read live; with the API down that
/// fails with `Unavailable` naming the class, and nothing is mounted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_of_an_uncached_class_with_the_api_down_is_unavailable() {
    let env = Env::start(Kube::Cluster, |_| {}).await;
    put_new_class(&env);
    env.api().down().await;
    uncached_class_fails(&env, &["the Kubernetes API is unavailable"]).await;
}

/// kube's client retries a 503 on its own, for minutes: the live read is
/// cut at its timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_of_an_uncached_class_with_the_api_answering_503() {
    let env = Env::start(Kube::Cluster, |_| {}).await;
    put_new_class(&env);
    env.api().add_fault(
        ApiFault::new(ApiFaultKind::Status(503))
            .method("GET")
            .resource("secretproviderclasses"),
    );
    uncached_class_fails(&env, &["no answer within"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_of_an_uncached_class_with_a_slow_api() {
    let env = Env::start(Kube::Cluster, |_| {}).await;
    put_new_class(&env);
    env.api().add_fault(
        ApiFault::new(ApiFaultKind::Latency(Duration::from_secs(30)))
            .method("GET")
            .resource("secretproviderclasses"),
    );
    uncached_class_fails(&env, &["no answer within"]).await;
}

/// Class `late`, created after the watch listed (the fake API server's
/// watch sends no events, so it is never cached).
fn put_new_class(env: &Env) {
    let path = secretfs_e2e::fake_apiserver::object_path(
        "secrets-store.csi.x-k8s.io/v1",
        "secretproviderclasses",
        "default",
        MI_CLASS,
    );
    let mut class = env.api().get(&path).unwrap();
    class["metadata"]["name"] = json!("late");
    class["metadata"]["uid"] = json!(null);
    env.api().put("secretproviderclasses", class);
}

async fn uncached_class_fails(env: &Env, needles: &[&str]) {
    let errors = || {
        env.metric(
            "node_publish_error_total",
            &[r#"error_type="SecretProviderClassUnavailable""#],
        )
    };
    let before = errors();
    let started = Instant::now();
    let err = env.publish("u1", "late").await.unwrap_err();
    promptly(started);
    assert_eq!(err.code, ErrorCode::Unavailable, "{}", err.message);
    assert_eq!(err.error_type, "SecretProviderClassUnavailable");
    assert_mentions(&err.message, &["SecretProviderClass default/late"]);
    assert_mentions(&err.message, needles);
    assert_eq!(errors(), before + 1.0);
    env.assert_no_half_made_mount("u1").await;
    // The cached class still mounts.
    if fuse_available() {
        env.api().clear_faults();
        env.api().down().await;
        env.publish("u2", MI_CLASS).await.unwrap();
        assert_eq!(env.secret_file("u2"), GOOD);
        env.unpublish("u2").await;
    }
}

/// A rotation while the API fails: the refresh succeeds (the file has the
/// new value), the Secret keeps its previous data, the failure is counted
/// and the volume marked unsynced; once the API answers, the next refresh
/// writes the Secret although no file changed.
async fn sync_under(break_api: impl AsyncFnOnce(&Env), heal_api: impl AsyncFnOnce(&Env)) {
    if !fuse_available() {
        return;
    }
    let env = Env::start(Kube::Sync, |_| {}).await;
    env.publish("s1", MI_CLASS).await.unwrap();
    assert_eq!(env.synced_secret().as_deref(), Some(GOOD));
    assert!(env.synced("s1").await);

    env.emu.set_secret(VAULT, "sql-password", ROTATED).unwrap();
    break_api(&env).await;
    let errors = sync_errors(&env);
    let started = Instant::now();
    let outcome = env.driver.refresh(&env.target("s1")).await.unwrap();
    promptly(started);
    assert_eq!(outcome.replaced, 1);
    assert_eq!(env.secret_file("s1"), ROTATED, "the mount is unaffected");
    assert_eq!(
        env.synced_secret().as_deref(),
        Some(GOOD),
        "the Secret keeps its data"
    );
    assert_eq!(sync_errors(&env), errors + 1.0);
    assert!(!env.synced("s1").await);

    heal_api(&env).await;
    let outcome = env.driver.refresh(&env.target("s1")).await.unwrap();
    assert!(!outcome.changed());
    assert_eq!(env.synced_secret().as_deref(), Some(ROTATED));
    assert!(env.synced("s1").await);
    env.unpublish("s1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_with_the_api_down() {
    sync_under(
        async |env: &Env| env.api().down().await,
        async |env: &Env| env.api().up().await.unwrap(),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_with_the_api_answering_500() {
    sync_under(
        async |env: &Env| {
            env.api().add_fault(
                ApiFault::new(ApiFaultKind::Status(500))
                    .method("PATCH")
                    .resource("secrets"),
            );
        },
        async |env: &Env| env.api().clear_faults(),
    )
    .await;
}

/// kube's client retries a 503 for minutes; the sync gives up at its
/// timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_with_the_api_answering_503() {
    sync_under(
        async |env: &Env| {
            env.api().add_fault(
                ApiFault::new(ApiFaultKind::Status(503))
                    .method("PATCH")
                    .resource("secrets"),
            );
        },
        async |env: &Env| env.api().clear_faults(),
    )
    .await;
}

/// An API server slower than the sync timeout (every request).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_with_a_slow_api() {
    sync_under(
        async |env: &Env| {
            env.api()
                .add_fault(ApiFault::new(ApiFaultKind::Latency(Duration::from_secs(
                    30,
                ))));
        },
        async |env: &Env| env.api().clear_faults(),
    )
    .await;
}

/// Connections dropped mid-request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_with_connections_dropped() {
    sync_under(
        async |env: &Env| {
            env.api().add_fault(
                ApiFault::new(ApiFaultKind::CloseConnection)
                    .method("PATCH")
                    .resource("secrets"),
            );
        },
        async |env: &Env| env.api().clear_faults(),
    )
    .await;
}
