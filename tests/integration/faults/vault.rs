//! Key Vault faults (429 with and without `Retry-After`, 500, 503, a vault
//! slower than the deadline, connection resets) at publish, at refresh and
//! at a lazy file's first load. Short faults are retried away (see
//! `tests/integration/azure_provider/retries.rs`); these last past the deadline.

use std::time::{Duration, Instant};

use secretfs_csi::ErrorCode;
use secretfs_e2e::{CounterFilter, FaultKind, FaultSpec, Route};

use super::common::*;

/// Each fault, what kubelet is told, the metric's `error_type` of a
/// failed refresh, and words of the message.
struct Case {
    fault: FaultKind,
    code: ErrorCode,
    kind: &'static str,
    needles: &'static [&'static str],
}

fn throttled_with_retry_after() -> Case {
    Case {
        fault: FaultKind::Throttle {
            retry_after: Some(1),
        },
        code: ErrorCode::ResourceExhausted,
        kind: "throttled",
        needles: &["429", "Key Vault is throttling this vault"],
    }
}

fn throttled_without_retry_after() -> Case {
    Case {
        fault: FaultKind::Throttle { retry_after: None },
        code: ErrorCode::ResourceExhausted,
        kind: "throttled",
        needles: &["429", "gave up after 4 attempts"],
    }
}

fn server_error(status: u16) -> Case {
    Case {
        fault: FaultKind::ServerError { status },
        code: ErrorCode::Unavailable,
        kind: "transient",
        needles: if status == 500 {
            &["500", "check that the node can reach the vault"]
        } else {
            &["503", "check that the node can reach the vault"]
        },
    }
}

fn slow_vault() -> Case {
    Case {
        fault: FaultKind::Latency { millis: 30_000 },
        code: ErrorCode::Unavailable,
        kind: "transient",
        needles: &["no answer within", "2s mount deadline"],
    }
}

fn connection_reset() -> Case {
    Case {
        fault: FaultKind::ConnectionReset,
        code: ErrorCode::Unavailable,
        kind: "transient",
        needles: &["gave up after", "check that the node can reach the vault"],
    }
}

/// `secretfs_vault_requests_total` of this outcome.
fn vault_requests(env: &Env, outcome: &str) -> f64 {
    env.metric(
        "secretfs_vault_requests_total",
        &[&format!(r#"outcome="{outcome}""#)],
    )
}

fn on_the_vault(fault: FaultKind) -> FaultSpec {
    FaultSpec::new(fault).vault(VAULT).route(Route::SecretGet)
}

/// Generous: the deadline and a margin for a loaded machine (the fault
/// itself would take 30 s, or forever).
fn within_the_deadline(elapsed: Duration) {
    assert!(
        elapsed < DEADLINE + Duration::from_secs(3),
        "gave up near the {DEADLINE:?} deadline: {elapsed:?}"
    );
}

/// A publish while the vault fails: a clear error with the right code,
/// within the deadline, counted, and nothing mounted.
async fn publish_under(case: Case) {
    let env = Env::start(Kube::None, |_| {}).await;
    env.emu.add_fault(on_the_vault(case.fault.clone()));
    let errors = || {
        env.metric(
            "node_publish_error_total",
            &[r#"provider="azure""#, r#"error_type="ProviderError""#],
        )
    };
    let (before, attempts) = (errors(), vault_requests(&env, case.kind));
    let started = Instant::now();
    let err = env.publish("p1", MI_CLASS).await.unwrap_err();
    within_the_deadline(started.elapsed());
    assert_eq!(err.code, case.code, "{}", err.message);
    assert_eq!(err.error_type, "ProviderError");
    assert_mentions(
        &err.message,
        &[
            "SecretProviderClass default/azure-kvname",
            "secret/sql-password",
            "vault kv-demo",
        ],
    );
    assert_mentions(&err.message, case.needles);
    assert_eq!(errors(), before + 1.0, "node_publish_error_total counts it");
    assert!(
        vault_requests(&env, case.kind) >= attempts + 2.0,
        "secretfs_vault_requests_total counts each attempt"
    );
    env.assert_no_half_made_mount("p1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_throttled_with_retry_after() {
    publish_under(throttled_with_retry_after()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_throttled_without_retry_after() {
    publish_under(throttled_without_retry_after()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_server_error_500() {
    publish_under(server_error(500)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_server_error_503() {
    publish_under(server_error(503)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_slow_vault_past_the_deadline() {
    publish_under(slow_vault()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_connection_reset() {
    publish_under(connection_reset()).await;
}

/// A refresh while the vault fails (the secret was rotated meanwhile):
/// the error, within the deadline, counted; the files keep their last good
/// bytes (through a descriptor opened before, too); the synced Secret keeps
/// its data and is not written. When the vault recovers, the next refresh
/// brings the new value to the file and the Secret.
async fn refresh_under(case: Case) {
    if !fuse_available() {
        return;
    }
    let env = Env::start(Kube::Sync, |_| {}).await;
    env.publish("r1", MI_CLASS).await.unwrap();
    assert_eq!(env.secret_file("r1"), GOOD);
    assert_eq!(env.synced_secret().as_deref(), Some(GOOD));
    let held = std::fs::File::open(env.target("r1").join("SECRET_1")).unwrap();

    env.emu.set_secret(VAULT, "sql-password", ROTATED).unwrap();
    env.emu.add_fault(on_the_vault(case.fault.clone()));
    let errors = || {
        env.metric(
            "rotation_reconcile_error_total",
            &[
                r#"provider="azure""#,
                &format!(r#"error_type="{}""#, case.kind),
            ],
        )
    };
    let (before, writes) = (errors(), env.secret_writes());
    let started = Instant::now();
    let err = env.driver.refresh(&env.target("r1")).await.unwrap_err();
    within_the_deadline(started.elapsed());
    assert_eq!(err.code, case.code, "{}", err.message);
    assert_mentions(&err.message, &["secret/sql-password"]);
    assert_mentions(&err.message, case.needles);
    assert_eq!(errors(), before + 1.0, "rotation_reconcile_error_total");
    assert_eq!(
        env.status("r1").await.last_error.as_deref(),
        Some(err.message.as_str()),
        "`secretfs status` shows why"
    );

    // No empty file: the last good bytes, by path and by open descriptor.
    assert_eq!(env.secret_file("r1"), GOOD);
    let mut buf = [0u8; 64];
    let n = std::os::unix::fs::FileExt::read_at(&held, &mut buf, 0).unwrap();
    assert_eq!(&buf[..n], GOOD.as_bytes());
    // No Secret loses data: untouched.
    assert_eq!(env.synced_secret().as_deref(), Some(GOOD));
    assert_eq!(env.secret_writes(), writes, "no Secret write");

    env.emu.clear_faults();
    env.driver.refresh(&env.target("r1")).await.unwrap();
    assert_eq!(env.secret_file("r1"), ROTATED);
    assert_eq!(env.synced_secret().as_deref(), Some(ROTATED));
    assert_eq!(env.status("r1").await.last_error, None);
    drop(held);
    env.unpublish("r1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_throttled_with_retry_after() {
    refresh_under(throttled_with_retry_after()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_throttled_without_retry_after() {
    refresh_under(throttled_without_retry_after()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_server_error_500() {
    refresh_under(server_error(500)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_server_error_503() {
    refresh_under(server_error(503)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_slow_vault_past_the_deadline() {
    refresh_under(slow_vault()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_connection_reset() {
    refresh_under(connection_reset()).await;
}

/// A lazy file's first load while the vault fails: the reader gets `EIO`
/// near the deadline (never an empty file), and the next access, after the
/// vault recovers, loads it. Reloads within the interval (after the
/// refresh dropped the loaded bytes) come from the node's cache, so a vault
/// failing then is not seen.
async fn lazy_load_under(case: Case) {
    if !fuse_available() {
        return;
    }
    let env = Env::start(Kube::None, |_| {}).await;
    env.publish("l1", LAZY_CLASS).await.unwrap();
    let gets = || env.emu.count(&CounterFilter::route(Route::SecretGet));
    assert_eq!(gets(), 0, "a lazy mount asks the vault nothing");
    let file = env.target("l1").join("SECRET_1");

    env.emu.add_fault(on_the_vault(case.fault.clone()));
    let (fuse_errors, attempts) = (env.driver.fuse_counts()[4], vault_requests(&env, case.kind));
    let started = Instant::now();
    let err = read_blocking(file.clone()).await.unwrap_err();
    within_the_deadline(started.elapsed());
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    assert!(gets() >= 1, "the read asked the vault");
    assert!(
        env.driver.fuse_counts()[4] > fuse_errors,
        "secretfs_fuse_errors_total"
    );
    assert!(vault_requests(&env, case.kind) > attempts);

    env.emu.clear_faults();
    assert_eq!(read_blocking(file.clone()).await.unwrap(), GOOD.as_bytes());

    env.emu.add_fault(on_the_vault(case.fault));
    let asked = gets();
    env.driver.refresh(&env.target("l1")).await.unwrap();
    assert_eq!(
        read_blocking(file).await.unwrap(),
        GOOD.as_bytes(),
        "reloaded from the cache"
    );
    assert_eq!(gets(), asked, "no vault request within the interval");
    env.unpublish("l1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lazy_load_throttled_with_retry_after() {
    lazy_load_under(throttled_with_retry_after()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lazy_load_throttled_without_retry_after() {
    lazy_load_under(throttled_without_retry_after()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lazy_load_server_error_500() {
    lazy_load_under(server_error(500)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lazy_load_server_error_503() {
    lazy_load_under(server_error(503)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lazy_load_slow_vault_past_the_deadline() {
    lazy_load_under(slow_vault()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lazy_load_connection_reset() {
    lazy_load_under(connection_reset()).await;
}
