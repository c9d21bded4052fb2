//! Injected faults and the counters that observe them.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use secretfs_e2e::{CounterFilter, FaultKind, FaultSpec, Route};

use crate::common::*;

#[tokio::test]
async fn throttle_with_retry_after_for_the_next_n_requests() {
    let env = start().await;
    let path = format!("/secrets/sql-password?{API}");
    env.emu.add_fault(
        FaultSpec::new(FaultKind::Throttle {
            retry_after: Some(3),
        })
        .times(2)
        .vault("kv-demo"),
    );
    for _ in 0..2 {
        let r = env.get_as_app("kv-demo", &path).await;
        assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(r.header("retry-after"), Some("3"));
        assert_eq!(
            r.text,
            r#"{"error":{"code":"Throttled","message":"Request was not processed because too many requests were received. Reason: VaultRequestTypeLimitReached"}}"#
        );
    }
    assert_eq!(
        env.get_as_app("kv-demo", &path).await.status,
        StatusCode::OK
    );
    assert!(
        env.emu.faults().is_empty(),
        "a counted fault is removed when used up"
    );
    assert_eq!(
        env.emu
            .count(&CounterFilter::route(Route::SecretGet).status(429)),
        2
    );
    assert_eq!(
        env.emu
            .count(&CounterFilter::route(Route::SecretGet).status(200)),
        1
    );
}

#[tokio::test]
async fn throttle_without_retry_after_and_challenges_are_never_faulted() {
    let env = start().await;
    let path = format!("/secrets/sql-password?{API}");
    let id = env
        .emu
        .add_fault(FaultSpec::new(FaultKind::Throttle { retry_after: None }));
    assert_eq!(
        env.get("kv-demo", &path, None).await.status,
        StatusCode::UNAUTHORIZED
    );
    let r = env.get_as_app("kv-demo", &path).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(r.header("retry-after").is_none());
    assert!(env.emu.remove_fault(id));
    assert_eq!(
        env.get_as_app("kv-demo", &path).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn server_errors_and_forbidden_faults() {
    let env = start().await;
    let path = format!("/secrets/sql-password?{API}");
    env.emu
        .add_fault(FaultSpec::new(FaultKind::ServerError { status: 503 }).times(1));
    let r = env.get_as_app("kv-demo", &path).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(r.json()["error"]["code"].is_string());
    env.emu.add_fault(
        FaultSpec::new(FaultKind::Forbidden {
            inner_code: "ForbiddenByPolicy".into(),
            message: None,
        })
        .times(1),
    );
    let r = env.get_as_app("kv-demo", &path).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(r.kv_error().1.as_deref(), Some("ForbiddenByPolicy"));
    assert_eq!(
        env.get_as_app("kv-demo", &path).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn latency_is_added_before_answering() {
    let env = start().await;
    let path = format!("/secrets/sql-password?{API}");
    env.emu.add_fault(
        FaultSpec::new(FaultKind::Latency { millis: 400 })
            .times(1)
            .object("sql-password"),
    );
    let t = Instant::now();
    let r = env.get_as_app("kv-demo", &path).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(
        t.elapsed() >= Duration::from_millis(400),
        "answered after {:?}",
        t.elapsed()
    );
}

#[tokio::test]
async fn connection_reset_drops_the_connection_without_an_answer() {
    let env = start().await;
    let path = format!("/secrets/sql-password?{API}");
    env.emu
        .add_fault(FaultSpec::new(FaultKind::ConnectionReset).times(1));
    let err = env
        .http
        .get(env.url("kv-demo", &path))
        .bearer_auth(env.token("app-sp"))
        .send()
        .await
        .expect_err("the connection is reset");
    // A reset (RST), not a clean close: a graceful FIN surfaces as an
    // `UnexpectedEof` ("peer closed connection without sending TLS
    // close_notify"), which this assertion refuses.
    assert!(
        io_error_kinds(&err).contains(&std::io::ErrorKind::ConnectionReset),
        "expected ECONNRESET in the error chain, got kinds {:?}: {err:?}",
        io_error_kinds(&err)
    );
    assert_eq!(
        env.emu
            .count(&CounterFilter::route(Route::SecretGet).status(0)),
        1
    );
    // The next request (new connection) is served.
    assert_eq!(
        env.get_as_app("kv-demo", &path).await.status,
        StatusCode::OK
    );
}

/// The kinds of every `std::io::Error` in `err`'s source chain.
fn io_error_kinds(err: &(dyn std::error::Error + 'static)) -> Vec<std::io::ErrorKind> {
    let mut kinds = Vec::new();
    let mut cur = Some(err);
    while let Some(e) = cur {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            kinds.push(io.kind());
        }
        cur = e.source();
    }
    kinds
}

#[tokio::test]
async fn a_throttle_scoped_to_one_identity_spares_the_others() {
    let env = start().await;
    let path = format!("/secrets/sql-password?{API}");
    // By client id here; the scope test below uses an identity name.
    env.emu.add_fault(
        FaultSpec::new(FaultKind::Throttle {
            retry_after: Some(7),
        })
        .identity(NODE_MI),
    );
    let node = env.token(NODE_MI);
    let app = env.token(APP_SP);
    for _ in 0..3 {
        let r = env.get("kv-demo", &path, Some(&node)).await;
        assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{}", r.text);
        assert_eq!(r.header("retry-after"), Some("7"));
        assert_eq!(r.kv_error().0, "Throttled");
        let r = env.get("kv-demo", &path, Some(&app)).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        assert_eq!(r.json()["value"], "Sql-Passw0rd-from-kv-demo");
    }
    // The challenge (no identity yet) is never throttled.
    assert_eq!(
        env.get("kv-demo", &path, None).await.status,
        StatusCode::UNAUTHORIZED
    );
    let get = || CounterFilter::route(Route::SecretGet);
    assert_eq!(env.emu.count(&get().identity(NODE_MI).status(429)), 3);
    assert_eq!(env.emu.count(&get().identity(NODE_MI).status(200)), 0);
    assert_eq!(env.emu.count(&get().identity(APP_SP).status(200)), 3);
    assert_eq!(env.emu.count(&get().identity(APP_SP).status(429)), 0);
    // An unlimited fault stays installed.
    assert_eq!(env.emu.faults().len(), 1);
}

#[tokio::test]
async fn scopes_select_vault_route_object_and_identity() {
    let env = start().await;
    env.emu.add_fault(
        FaultSpec::new(FaultKind::ServerError { status: 500 }).identity("node-identity"),
    );
    env.emu
        .add_fault(FaultSpec::new(FaultKind::ServerError { status: 502 }).route(Route::KeyGet));
    env.emu.add_fault(
        FaultSpec::new(FaultKind::ServerError { status: 504 })
            .vault("kv-conformance")
            .object("tagged"),
    );
    let node = env.token(NODE_MI);
    let secret = format!("/secrets/sql-password?{API}");
    assert_eq!(
        env.get("kv-demo", &secret, Some(&node)).await.status,
        StatusCode::INTERNAL_SERVER_ERROR
    );
    assert_eq!(
        env.get_as_app("kv-demo", &secret).await.status,
        StatusCode::OK
    );
    assert_eq!(
        env.get_as_app("kv-conformance", &format!("/keys/ec-key?{API}"))
            .await
            .status,
        StatusCode::BAD_GATEWAY
    );
    assert_eq!(
        env.get_as_app("kv-conformance", &format!("/secrets/tagged?{API}"))
            .await
            .status,
        StatusCode::GATEWAY_TIMEOUT
    );
    assert_eq!(
        env.get_as_app("kv-conformance", &format!("/secrets/expired?{API}"))
            .await
            .status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn token_endpoints_can_be_faulted_too() {
    let env = start().await;
    env.emu.add_fault(
        FaultSpec::new(FaultKind::Throttle {
            retry_after: Some(1),
        })
        .route(Route::ImdsToken)
        .times(1),
    );
    let path = format!(
        "/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https://vault.azure.net&client_id={NODE_MI}"
    );
    let r = env.imds(&path, true).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(r.header("retry-after"), Some("1"));
    assert_eq!(env.imds(&path, true).await.status, StatusCode::OK);
    env.emu.add_fault(
        FaultSpec::new(FaultKind::ServerError { status: 500 })
            .route(Route::EntraToken)
            .times(1),
    );
    let r = env
        .post_form(
            &env.entra_url(&format!("/{TENANT}/oauth2/v2.0/token")),
            &[
                ("client_id", APP_SP),
                ("client_secret", APP_SP_SECRET),
                ("grant_type", "client_credentials"),
                ("scope", "https://vault.azure.net/.default"),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(
        env.emu.count(
            &CounterFilter::route(Route::EntraToken)
                .status(500)
                .identity(APP_SP)
        ),
        1
    );
    // Counters also take identity names.
    assert_eq!(
        env.emu
            .count(&CounterFilter::route(Route::EntraToken).identity("app-sp")),
        1
    );
}

#[tokio::test]
async fn claims_challenge_is_a_cae_401() {
    use base64::Engine as _;
    let env = start().await;
    env.emu
        .add_fault(FaultSpec::new(FaultKind::ClaimsChallenge).times(1));
    let r = env
        .get_as_app("kv-demo", &format!("/secrets/sql-password?{API}"))
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let header = r.header("www-authenticate").unwrap();
    let prefix = "Bearer realm=\"\", authorization_uri=\"https://login.microsoftonline.com/common/oauth2/authorize\", error=\"insufficient_claims\", claims=\"";
    assert!(header.starts_with(prefix), "{header}");
    let claims = header[prefix.len()..].trim_end_matches('"');
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(claims)
        .unwrap();
    let j: serde_json::Value = serde_json::from_slice(&decoded).unwrap();
    assert_eq!(j["access_token"]["nbf"]["essential"], true);
    assert_eq!(r.kv_error().0, "Unauthorized");
    assert_eq!(
        env.get_as_app("kv-demo", &format!("/secrets/sql-password?{API}"))
            .await
            .status,
        StatusCode::OK
    );
}
