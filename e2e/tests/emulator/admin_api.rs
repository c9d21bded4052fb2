//! The admin HTTP API.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::*;

async fn admin(env: &Env, method: reqwest::Method, path: &str, body: Option<Value>) -> Reply {
    let mut req = env.http.request(method, env.admin(path));
    if let Some(b) = body {
        req = req.json(&b);
    }
    read(req.send().await.unwrap()).await
}

#[tokio::test]
async fn write_disable_delete_versions_over_http() {
    let env = start().await;
    let info = admin(&env, reqwest::Method::GET, "/info", None)
        .await
        .json();
    assert_eq!(info["https"], env.emu.https_addr().to_string());
    assert_eq!(info["caPath"], env.emu.ca_path().display().to_string());

    let r = admin(
        &env,
        reqwest::Method::POST,
        "/vaults/kv-demo/secrets/sql-password",
        Some(json!({"value": "from-admin", "tags": {"a": "b"}})),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let v = r.json()["version"].as_str().unwrap().to_string();
    assert!(is_version(&v));
    let s = env
        .get_as_app("kv-demo", &format!("/secrets/sql-password?{API}"))
        .await
        .json();
    assert_eq!(s["value"], "from-admin");
    assert_eq!(s["tags"]["a"], "b");

    let r = admin(
        &env,
        reqwest::Method::PATCH,
        &format!("/vaults/kv-demo/secrets/sql-password/{v}"),
        Some(json!({"enabled": false})),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let s = env
        .get_as_app("kv-demo", &format!("/secrets/sql-password?{API}"))
        .await;
    assert_eq!(s.kv_error().1.as_deref(), Some("SecretDisabled"));

    let r = admin(
        &env,
        reqwest::Method::DELETE,
        &format!("/vaults/kv-demo/secrets/sql-password/{v}"),
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let s = env
        .get_as_app("kv-demo", &format!("/secrets/sql-password?{API}"))
        .await
        .json();
    assert_eq!(s["value"], "Sql-Passw0rd-from-kv-demo");

    let r = admin(
        &env,
        reqwest::Method::DELETE,
        &format!("/vaults/kv-demo/secrets/sql-password/{v}"),
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = admin(
        &env,
        reqwest::Method::POST,
        "/vaults/kv-demo/secrets/bad_name",
        Some(json!({"value": "x"})),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);

    let r = admin(
        &env,
        reqwest::Method::POST,
        "/vaults/kv-demo/keys/new-key",
        Some(json!({"kty": "EC", "crv": "P-384"})),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let k = env
        .get_as_app("kv-demo", &format!("/keys/new-key?{API}"))
        .await
        .json();
    assert_eq!(k["key"]["crv"], "P-384");
}

#[tokio::test]
async fn faults_counters_and_tokens_over_http() {
    let env = start().await;
    let r = admin(
        &env,
        reqwest::Method::POST,
        "/faults",
        Some(json!({"kind": "throttle", "retryAfter": 2, "route": "secrets.get", "count": 1})),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let faults = admin(&env, reqwest::Method::GET, "/faults", None)
        .await
        .json();
    assert_eq!(faults[0]["kind"], "throttle");
    assert_eq!(faults[0]["count"], 1);
    let path = format!("/secrets/sql-password?{API}");
    assert_eq!(
        env.get_as_app("kv-demo", &path).await.status,
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(
        env.get_as_app("kv-demo", &path).await.status,
        StatusCode::OK
    );
    assert_eq!(
        env.get("kv-demo", &path, None).await.status,
        StatusCode::UNAUTHORIZED
    );

    let c = admin(
        &env,
        reqwest::Method::GET,
        "/counters?vault=kv-demo&route=secrets.get",
        None,
    )
    .await
    .json();
    assert_eq!(c["count"], 3);
    let c = admin(
        &env,
        reqwest::Method::GET,
        &format!("/counters?route=secrets.get&identity={APP_SP}&status=200"),
        None,
    )
    .await
    .json();
    assert_eq!(c["count"], 1);
    assert_eq!(c["rows"][0]["object"], "sql-password");
    let r = admin(&env, reqwest::Method::GET, "/counters?route=nope", None).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        admin(&env, reqwest::Method::DELETE, "/counters", None)
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        admin(&env, reqwest::Method::GET, "/counters", None)
            .await
            .json()["count"],
        0
    );

    let t = admin(
        &env,
        reqwest::Method::POST,
        "/service-account-token",
        Some(json!({"namespace": "default", "serviceAccount": "workload-sa"})),
    )
    .await
    .json();
    let sa = t["token"].as_str().unwrap();
    assert_eq!(sa.split('.').count(), 3);
    let t = admin(
        &env,
        reqwest::Method::POST,
        "/access-token",
        Some(json!({"identity": "app-sp"})),
    )
    .await
    .json();
    let token = t["accessToken"].as_str().unwrap();
    assert_eq!(
        env.get("kv-demo", &path, Some(token)).await.status,
        StatusCode::OK
    );
    let r = admin(
        &env,
        reqwest::Method::PUT,
        "/vaults/kv-demo/access",
        Some(json!([])),
    )
    .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert_eq!(
        env.get("kv-demo", &path, Some(token)).await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        admin(&env, reqwest::Method::GET, "/nope", None)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    let r = admin(
        &env,
        reqwest::Method::POST,
        "/faults",
        Some(json!({"kind": "throttle", "count": 0})),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = admin(
        &env,
        reqwest::Method::POST,
        "/faults",
        Some(json!({"kind": "explode"})),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn dropping_the_handle_closes_keep_alive_connections() {
    let Env { emu, http } = start().await;
    let url = format!("{}/secrets/sql-password?{API}", emu.vault_url("kv-demo"));
    let token = emu
        .access_token("app-sp", "https://vault.azure.net", 600)
        .unwrap();
    let r = http.get(&url).bearer_auth(&token).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    drop(emu);
    tokio::task::yield_now().await;
    let err = http.get(&url).bearer_auth(&token).send().await;
    assert!(err.is_err(), "a stopped emulator must not answer: {err:?}");
}
