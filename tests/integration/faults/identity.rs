//! Token endpoints down: Entra ID (the service principal's token, 5xx or
//! reset) and IMDS (the managed identity's token, 5xx or nothing
//! listening). A publish or lazy load that needs a new token fails within
//! the deadline with the identity named; a refresh goes on with the cached
//! token until it expires (in its last five minutes a new one is asked for,
//! and a failure is ignored), and past that fails keeping the last good
//! bytes and the Secret's data.

use std::time::{Duration, Instant};

use secretfs_csi::ErrorCode;
use secretfs_e2e::{CounterFilter, FaultKind, FaultSpec, Route};

use super::common::*;

fn entra(fault: FaultKind) -> FaultSpec {
    FaultSpec::new(fault).route(Route::EntraToken)
}

fn imds(fault: FaultKind) -> FaultSpec {
    FaultSpec::new(fault).route(Route::ImdsToken)
}

/// A port nothing listens on.
fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn publish_fails(env: &Env, class: &str, identity: &str) {
    let errors = || {
        env.metric(
            "node_publish_error_total",
            &[r#"provider="azure""#, r#"error_type="ProviderError""#],
        )
    };
    let before = errors();
    let started = Instant::now();
    let err = env.publish("t1", class).await.unwrap_err();
    assert!(
        started.elapsed() < DEADLINE + Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(err.code, ErrorCode::Unavailable, "{}", err.message);
    assert_mentions(
        &err.message,
        &[
            "secret/sql-password",
            "could not get a token as",
            identity,
            "the token endpoint (Entra ID, or IMDS for a managed identity) is failing or unreachable",
            "the mount is retried later",
        ],
    );
    assert!(
        !err.message.contains("exists in the tenant"),
        "an outage is not blamed on the identity: {}",
        err.message
    );
    assert_eq!(errors(), before + 1.0);
    env.assert_no_half_made_mount("t1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_entra_token_endpoint_5xx() {
    let env = Env::start(Kube::None, |_| {}).await;
    env.emu
        .add_fault(entra(FaultKind::ServerError { status: 503 }));
    publish_fails(&env, SP_CLASS, APP_SP).await;
    assert!(
        env.emu
            .count(&CounterFilter::route(Route::EntraToken).status(503))
            >= 2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_entra_token_endpoint_reset() {
    let env = Env::start(Kube::None, |_| {}).await;
    env.emu.add_fault(entra(FaultKind::ConnectionReset));
    publish_fails(&env, SP_CLASS, APP_SP).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_imds_5xx() {
    let env = Env::start(Kube::None, |_| {}).await;
    env.emu
        .add_fault(imds(FaultKind::ServerError { status: 503 }));
    publish_fails(&env, MI_CLASS, NODE_MI).await;
    assert!(
        env.emu
            .count(&CounterFilter::route(Route::ImdsToken).status(503))
            >= 2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_imds_unreachable() {
    let port = closed_port();
    let env = Env::start(Kube::None, |c| {
        c.imds_url = format!("http://127.0.0.1:{port}");
    })
    .await;
    publish_fails(&env, MI_CLASS, NODE_MI).await;
}

/// The token fetched at publish is still good: a refresh during the
/// outage rotates the file and the Secret without asking for one.
async fn refresh_with_a_cached_token(class: &str, fault: FaultSpec, route: Route) {
    if !fuse_available() {
        return;
    }
    let env = Env::start(Kube::Sync, |_| {}).await;
    env.publish("c1", class).await.unwrap();
    env.emu.add_fault(fault);
    env.emu.set_secret(VAULT, "sql-password", ROTATED).unwrap();
    env.emu.reset_counters();
    env.driver.refresh(&env.target("c1")).await.unwrap();
    assert_eq!(env.secret_file("c1"), ROTATED);
    assert_eq!(env.synced_secret().as_deref(), Some(ROTATED));
    assert_eq!(
        env.emu.count(&CounterFilter::route(route)),
        0,
        "no token request"
    );
    env.unpublish("c1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_entra_down_with_a_cached_token() {
    refresh_with_a_cached_token(
        SP_CLASS,
        entra(FaultKind::ServerError { status: 503 }),
        Route::EntraToken,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_imds_down_with_a_cached_token() {
    refresh_with_a_cached_token(
        MI_CLASS,
        imds(FaultKind::ServerError { status: 503 }),
        Route::ImdsToken,
    )
    .await;
}

/// A token in its renewal window (its last five minutes): the provider
/// asks for a new one, the endpoint fails, and the still-valid token is
/// used; the refresh rotates the file and the Secret.
async fn refresh_in_the_renewal_window(class: &str, fault: FaultSpec, route: Route) {
    if !fuse_available() {
        return;
    }
    let emu = emulator(Some(Duration::from_secs(240))).await;
    let env = Env::start_with(emu, Kube::Sync, |_| {}).await;
    env.publish("w1", class).await.unwrap();
    env.emu.add_fault(fault);
    env.emu.set_secret(VAULT, "sql-password", ROTATED).unwrap();
    env.emu.reset_counters();
    env.driver.refresh(&env.target("w1")).await.unwrap();
    assert_eq!(env.secret_file("w1"), ROTATED);
    assert_eq!(env.synced_secret().as_deref(), Some(ROTATED));
    assert!(
        env.emu.count(&CounterFilter::route(route)) >= 1,
        "a new token was asked for"
    );
    env.unpublish("w1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_entra_down_in_the_tokens_renewal_window() {
    refresh_in_the_renewal_window(
        SP_CLASS,
        entra(FaultKind::ServerError { status: 500 }),
        Route::EntraToken,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_imds_down_in_the_tokens_renewal_window() {
    refresh_in_the_renewal_window(MI_CLASS, imds(FaultKind::ConnectionReset), Route::ImdsToken)
        .await;
}

/// The token expired during the outage: the refresh fails within the
/// deadline, the file and the Secret keep their data; after the outage the
/// next refresh brings the new value.
async fn refresh_after_the_token_expired(class: &str, identity: &str, fault: FaultSpec) {
    if !fuse_available() {
        return;
    }
    let lifetime = Duration::from_secs(2);
    let emu = emulator(Some(lifetime)).await;
    let env = Env::start_with(emu, Kube::Sync, |_| {}).await;
    env.publish("x1", class).await.unwrap();
    assert_eq!(env.synced_secret().as_deref(), Some(GOOD));
    env.emu.add_fault(fault);
    env.emu.set_secret(VAULT, "sql-password", ROTATED).unwrap();
    tokio::time::sleep(lifetime + Duration::from_millis(200)).await;
    let writes = env.secret_writes();
    let started = Instant::now();
    let err = env.driver.refresh(&env.target("x1")).await.unwrap_err();
    assert!(started.elapsed() < DEADLINE + Duration::from_secs(3));
    assert_eq!(err.code, ErrorCode::Unavailable, "{}", err.message);
    assert_mentions(
        &err.message,
        &["could not get a token as", identity, "the token endpoint"],
    );
    assert_eq!(env.secret_file("x1"), GOOD, "the last good bytes");
    assert_eq!(env.synced_secret().as_deref(), Some(GOOD));
    assert_eq!(env.secret_writes(), writes);

    env.emu.clear_faults();
    env.driver.refresh(&env.target("x1")).await.unwrap();
    assert_eq!(env.secret_file("x1"), ROTATED);
    assert_eq!(env.synced_secret().as_deref(), Some(ROTATED));
    env.unpublish("x1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_entra_down_after_the_token_expired() {
    refresh_after_the_token_expired(
        SP_CLASS,
        APP_SP,
        entra(FaultKind::ServerError { status: 503 }),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_imds_down_after_the_token_expired() {
    refresh_after_the_token_expired(MI_CLASS, NODE_MI, imds(FaultKind::ConnectionReset)).await;
}

/// A lazy volume's first load needs a token: with IMDS down the reader
/// gets `EIO`, and the next access after the outage loads the file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lazy_load_imds_down() {
    if !fuse_available() {
        return;
    }
    let env = Env::start(Kube::None, |_| {}).await;
    env.emu
        .add_fault(imds(FaultKind::ServerError { status: 503 }));
    // The lazy mount checks parameters and identity, and asks no token.
    env.publish("z1", LAZY_CLASS).await.unwrap();
    let file = env.target("z1").join("SECRET_1");
    let err = read_blocking(file.clone()).await.unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    env.emu.clear_faults();
    assert_eq!(read_blocking(file).await.unwrap(), GOOD.as_bytes());
    env.unpublish("z1").await;
}
