//! The 401 challenge and bearer-token validation.

use reqwest::StatusCode;
use secretfs_e2e::{CounterFilter, EmulatorConfig, Route};

use crate::common::*;

const CHALLENGE: &str = "Bearer authorization=\"https://login.windows.net/9c0d2e7b-1a3f-4b6c-8d5e-7f1a2b3c4d5e\", resource=\"https://vault.azure.net\"";
const MISSING_BODY: &str = r#"{"error":{"code":"Unauthorized","message":"AKV10000: Request is missing a Bearer or PoP token."}}"#;

#[tokio::test]
async fn request_without_token_gets_the_exact_challenge() {
    let env = start().await;
    let resp = env
        .http
        .get(env.url("kv-demo", &format!("/secrets/sql-password/?{API}")))
        .header("x-ms-client-request-id", "client-req-1")
        .send()
        .await
        .unwrap();
    let r = read(resp).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.header("www-authenticate"), Some(CHALLENGE));
    assert_eq!(r.text, MISSING_BODY);
    assert_eq!(r.text.len(), 97);
    assert_eq!(
        r.header("content-type"),
        Some("application/json; charset=utf-8")
    );
    assert_eq!(r.header("x-ms-client-request-id"), Some("client-req-1"));
    assert_eq!(r.header("x-ms-keyvault-region"), Some("eastus"));
    assert!(r.header("x-ms-request-id").is_some_and(|v| v.len() == 36));
    assert_eq!(
        r.header("x-ms-keyvault-network-info"),
        Some("conn_type=Ipv4;addr=127.0.0.1;act_addr_fam=InterNetwork;")
    );
    assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(
        env.emu.count(
            &CounterFilter::route(Route::SecretGet)
                .vault("kv-demo")
                .object("sql-password")
                .status(401)
                .identity("")
        ),
        1
    );
}

#[tokio::test]
async fn challenge_resource_follows_the_cloud_and_authority_is_configurable() {
    let mut config = EmulatorConfig::with_seed(conformance_seed());
    config.challenge_authority = "https://login.microsoftonline.com/".into();
    let env = start_with(config).await;
    let port = env.emu.https_addr().port();
    let cn = env
        .get_url(
            &format!("https://kv-demo.vault.azure.cn:{port}/secrets/sql-password?{API}"),
            None,
        )
        .await;
    assert_eq!(
        cn.header("www-authenticate"),
        Some(
            "Bearer authorization=\"https://login.microsoftonline.com/9c0d2e7b-1a3f-4b6c-8d5e-7f1a2b3c4d5e\", resource=\"https://vault.azure.cn\""
        )
    );
    // A public-cloud token is the wrong audience for a China-cloud vault.
    let token = env.token("app-sp");
    let r = env
        .get_url(
            &format!("https://kv-demo.vault.usgovcloudapi.net:{port}/secrets/sql-password?{API}"),
            Some(&token),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(
        r.kv_error()
            .2
            .starts_with("AKV10022: Invalid audience. Expected https://vault.usgovcloudapi.net"),
        "{}",
        r.text
    );
}

#[tokio::test]
async fn bad_expired_or_misdirected_tokens_get_401_with_the_challenge() {
    let env = start().await;
    let path = format!("/secrets/sql-password?{API}");
    let cases = [
        (
            "garbage",
            env.get("kv-demo", &path, Some("not-a-jwt")).await,
            "AKV10021",
        ),
        (
            "expired",
            env.get(
                "kv-demo",
                &path,
                Some(
                    &env.emu
                        .access_token("app-sp", "https://vault.azure.net", -60)
                        .unwrap(),
                ),
            )
            .await,
            "AKV10023",
        ),
        (
            "trailing-slash audience",
            env.get(
                "kv-demo",
                &path,
                Some(
                    &env.emu
                        .access_token("app-sp", "https://vault.azure.net/", 600)
                        .unwrap(),
                ),
            )
            .await,
            "AKV10022: Invalid audience. Expected https://vault.azure.net or cfa8b339-82a2-471a-a3c9-0fc0be7a4093, found: https://vault.azure.net/.",
        ),
    ];
    for (what, r, prefix) in cases {
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{what}");
        assert_eq!(r.header("www-authenticate"), Some(CHALLENGE), "{what}");
        let (code, _, message) = r.kv_error();
        assert_eq!(code, "Unauthorized", "{what}");
        assert!(message.starts_with(prefix), "{what}: {message}");
    }
    // A token signed by someone else (re-signed payload) is refused.
    let good = env.token("app-sp");
    let mut parts: Vec<String> = good.split('.').map(String::from).collect();
    parts[2] = parts[2].chars().rev().collect();
    let r = env.get("kv-demo", &path, Some(&parts.join("."))).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.header("www-authenticate"), Some(CHALLENGE));
    assert!(r.kv_error().2.starts_with("AKV10021"), "{}", r.text);
    // The Key Vault app id is an accepted audience.
    let r = env
        .get(
            "kv-demo",
            &path,
            Some(
                &env.emu
                    .access_token("app-sp", secretfs_e2e::KEYVAULT_APP_ID, 600)
                    .unwrap(),
            ),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
}

/// Split a compact JWT and decode its header and claims.
fn jwt_json(token: &str) -> (serde_json::Value, serde_json::Value) {
    use base64::Engine as _;
    let dec = |seg: &str| -> serde_json::Value {
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(seg)
            .expect("base64url segment");
        serde_json::from_slice(&bytes).expect("JSON segment")
    };
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3, "a compact JWT");
    (dec(parts[0]), dec(parts[1]))
}

#[tokio::test]
async fn a_well_formed_token_signed_by_another_key_is_401_invalid_signature() {
    use base64::Engine as _;
    use rcgen::SigningKey as _;
    let env = start().await;
    let path = format!("/secrets/sql-password?{API}");
    let good = env.token("app-sp");
    let (header, claims) = jwt_json(&good);
    // Everything but the signing key is right: RS256 with the emulator's kid,
    // issuer of the vault's tenant, the vault audience, an expiry ahead.
    assert_eq!(header["alg"], "RS256");
    assert_eq!(claims["iss"], format!("https://sts.windows.net/{TENANT}/"));
    assert_eq!(claims["aud"], "https://vault.azure.net");
    assert_eq!(claims["appid"], APP_SP);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!(claims["exp"].as_i64().unwrap() > now + 600, "{claims}");

    let other = rcgen::KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048)
        .expect("RSA key");
    let signing_input = good.rsplit_once('.').unwrap().0;
    let sig = other.sign(signing_input.as_bytes()).expect("sign");
    let forged = format!(
        "{signing_input}.{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sig)
    );
    assert_ne!(forged, good);
    assert_eq!(
        jwt_json(&forged),
        (header, claims),
        "same header and claims"
    );

    let r = env.get("kv-demo", &path, Some(&forged)).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text);
    // As for any bad token: the challenge again, an `Unauthorized` envelope
    // and the AKV10021 signature message; never the secret.
    assert_eq!(r.header("www-authenticate"), Some(CHALLENGE));
    let (code, inner, message) = r.kv_error();
    assert_eq!(code, "Unauthorized");
    assert_eq!(inner, None);
    assert!(
        message.starts_with("AKV10021: Invalid token signature."),
        "{message}"
    );
    assert!(!r.text.contains("Sql-Passw0rd"), "{}", r.text);
    assert_eq!(
        env.emu.count(
            &CounterFilter::route(Route::SecretGet)
                .vault("kv-demo")
                .status(401)
        ),
        1
    );
    // The same claims under the emulator's own signature are served.
    let r = env.get("kv-demo", &path, Some(&good)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
}

#[tokio::test]
async fn unknown_and_missing_api_versions_are_rejected_with_the_real_400() {
    let env = start().await;
    let r = env
        .get_as_app("kv-demo", "/secrets/sql-password?api-version=1.0")
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        r.text,
        r#"{"error":{"code":"BadParameter","message":"The specified version (1.0) is not recognized. Consider using the latest supported version (2026-04-01)."}}"#
    );
    let r = env.get_as_app("kv-demo", "/secrets/sql-password").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.kv_error().0, "BadParameter");
    for v in [
        "7.0",
        "7.2",
        "7.4",
        "7.5",
        "7.6",
        "2016-10-01",
        "2025-07-01",
        "2026-04-01",
        "7.6-preview.2",
    ] {
        let r = env
            .get_as_app("kv-demo", &format!("/secrets/sql-password?api-version={v}"))
            .await;
        assert_eq!(r.status, StatusCode::OK, "api-version {v}");
    }
}

#[tokio::test]
async fn a_host_that_names_no_known_vault_is_404() {
    let env = start().await;
    let r = env
        .get("kv-missing", &format!("/secrets/x?{API}"), None)
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.kv_error().0, "VaultNotFound");
    // 127.0.0.1 with three vaults and no default vault: no vault is addressed.
    let url = format!(
        "https://127.0.0.1:{}/secrets/x?{API}",
        env.emu.https_addr().port()
    );
    let r = env.get_url(&url, None).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn ip_host_reaches_the_default_vault() {
    let mut config = EmulatorConfig::with_seed(conformance_seed());
    config.default_vault = Some("kv-demo".into());
    let env = start_with(config).await;
    let url = format!(
        "https://127.0.0.1:{}/secrets/sql-password/?{API}",
        env.emu.https_addr().port()
    );
    let r = env.get_url(&url, Some(&env.token("app-sp"))).await;
    assert_eq!(r.status, StatusCode::OK);
    let id = r.json()["id"].as_str().unwrap().to_string();
    assert!(
        id.starts_with(&format!(
            "https://127.0.0.1:{}/secrets/sql-password/",
            env.emu.https_addr().port()
        )),
        "{id}"
    );
}
