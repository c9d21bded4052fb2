//! Entra ID: discovery documents and the token endpoints.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use reqwest::StatusCode;
use secretfs_e2e::{
    CounterFilter, Emulator, EmulatorConfig, EmulatorHandle, FederationSeed, Route,
    ServiceAccountTokenRequest, TrustedIssuer,
};

use crate::common::*;

const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

fn token_url(env: &Env) -> String {
    env.entra_url(&format!("/{TENANT}/oauth2/v2.0/token"))
}

fn oauth_error(r: &Reply) -> (String, u64) {
    let j = r.json();
    (
        j["error"].as_str().unwrap_or("").to_string(),
        j["error_codes"][0].as_u64().unwrap_or(0),
    )
}

#[tokio::test]
async fn discovery_documents() {
    let env = start().await;
    let port = env.emu.https_addr().port();
    let r = env
        .get_url(
            &env.entra_url(&format!("/{TENANT}/v2.0/.well-known/openid-configuration")),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let j = r.json();
    let base = format!("https://login.microsoftonline.com:{port}/{TENANT}");
    assert_eq!(j["issuer"], format!("{base}/v2.0"));
    assert_eq!(j["token_endpoint"], format!("{base}/oauth2/v2.0/token"));
    assert_eq!(
        j["authorization_endpoint"],
        format!("{base}/oauth2/v2.0/authorize")
    );
    let jwks = env
        .get_url(j["jwks_uri"].as_str().unwrap(), None)
        .await
        .json();
    assert_eq!(jwks["keys"][0]["kty"], "RSA");
    assert_eq!(jwks["keys"][0]["e"], "AQAB");
    let r = env
        .get_url(&env.entra_url(&format!("/common/discovery/instance?api-version=1.1&authorization_endpoint=https://login.microsoftonline.com/{TENANT}/oauth2/v2.0/authorize")), None)
        .await;
    let j = r.json();
    assert_eq!(j["api-version"], "1.1");
    assert_eq!(
        j["tenant_discovery_endpoint"],
        format!(
            "https://login.microsoftonline.com:{port}/{TENANT}/v2.0/.well-known/openid-configuration"
        )
    );
    assert!(
        j["metadata"][0]["aliases"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a == "login.microsoftonline.com")
    );
    let r = env
        .get_url(
            &env.entra_url(
                "/00000000-0000-0000-0000-000000000000/v2.0/.well-known/openid-configuration",
            ),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(oauth_error(&r), ("invalid_tenant".into(), 90002));
}

#[tokio::test]
async fn client_secret_flow_issues_a_token_the_vault_accepts() {
    let env = start().await;
    let r = env
        .post_form(
            &token_url(&env),
            &[
                ("client_id", APP_SP),
                ("grant_type", "client_credentials"),
                ("scope", "https://vault.azure.net/.default"),
                ("client_secret", APP_SP_SECRET),
                ("client_info", "1"),
                (
                    "claims",
                    r#"{"access_token":{"xms_cc":{"values":["CP1"]}}}"#,
                ),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let j = r.json();
    assert_eq!(j["token_type"], "Bearer");
    assert!(j["expires_in"].is_i64(), "v2 numbers are JSON numbers: {j}");
    let token = j["access_token"].as_str().unwrap();
    let s = env
        .get(
            "kv-demo",
            &format!("/secrets/sql-password?{API}"),
            Some(token),
        )
        .await;
    assert_eq!(s.status, StatusCode::OK);
    assert_eq!(
        env.emu.count(
            &CounterFilter::route(Route::EntraToken)
                .identity(APP_SP)
                .status(200)
        ),
        1
    );
    assert_eq!(
        env.emu.count(
            &CounterFilter::route(Route::SecretGet)
                .identity(APP_SP)
                .status(200)
        ),
        1
    );
}

#[tokio::test]
async fn token_endpoint_errors_look_like_entra() {
    let env = start().await;
    let url = token_url(&env);
    let base = [
        ("grant_type", "client_credentials"),
        ("scope", "https://vault.azure.net/.default"),
    ];
    let with = |extra: &[(&'static str, &'static str)]| {
        let mut f: Vec<(&str, &str)> = base.to_vec();
        f.extend_from_slice(extra);
        f
    };
    let r = env
        .post_form(
            &url,
            &with(&[("client_id", APP_SP), ("client_secret", "wrong")]),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(oauth_error(&r), ("invalid_client".into(), 7000215));
    assert!(
        r.json()["error_description"]
            .as_str()
            .unwrap()
            .starts_with("AADSTS7000215: Invalid client secret provided.")
    );
    let r = env
        .post_form(
            &url,
            &with(&[
                ("client_id", "99999999-9999-4999-8999-999999999999"),
                ("client_secret", "x"),
            ]),
        )
        .await;
    assert_eq!(oauth_error(&r), ("unauthorized_client".into(), 700016));
    let r = env.post_form(&url, &with(&[("client_id", APP_SP)])).await;
    assert_eq!(oauth_error(&r), ("invalid_client".into(), 7000218));
    let r = env
        .post_form(
            &url,
            &[
                ("client_id", APP_SP),
                ("client_secret", APP_SP_SECRET),
                ("grant_type", "client_credentials"),
                ("scope", "https://vault.azure.net"),
            ],
        )
        .await;
    assert_eq!(oauth_error(&r).0, "invalid_scope");
    let r = env
        .post_form(
            &url,
            &[
                ("client_id", APP_SP),
                ("client_secret", APP_SP_SECRET),
                ("grant_type", "client_credentials"),
                ("scope", "https://storage.azure.com/.default"),
            ],
        )
        .await;
    assert_eq!(oauth_error(&r), ("invalid_resource".into(), 500011));
    let r = env
        .post_form(
            &env.entra_url("/00000000-0000-0000-0000-000000000000/oauth2/v2.0/token"),
            &with(&[("client_id", APP_SP), ("client_secret", APP_SP_SECRET)]),
        )
        .await;
    assert_eq!(oauth_error(&r).1, 90002);
}

#[tokio::test]
async fn v1_endpoint_uses_resource_and_string_numbers() {
    let env = start().await;
    let r = env
        .post_form(
            &env.entra_url(&format!("/{TENANT}/oauth2/token")),
            &[
                ("client_id", APP_SP),
                ("client_secret", APP_SP_SECRET),
                ("grant_type", "client_credentials"),
                ("resource", "https://vault.azure.net"),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let j = r.json();
    assert!(j["expires_in"].is_string() && j["expires_on"].is_string());
    assert_eq!(j["resource"], "https://vault.azure.net");
}

#[tokio::test]
async fn jwt_bearer_assertions_follow_the_federation_table() {
    let env = start().await;
    let url = token_url(&env);
    let exchange = |assertion: String| {
        let url = url.clone();
        let env = &env;
        async move {
            env.post_form(
                &url,
                &[
                    ("client_id", WORKLOAD_APP),
                    ("grant_type", "client_credentials"),
                    ("scope", "https://vault.azure.net/.default"),
                    ("client_assertion_type", JWT_BEARER),
                    ("client_assertion", &assertion),
                ],
            )
            .await
        }
    };
    let good = env
        .emu
        .service_account_token("default", "workload-sa")
        .unwrap();
    let r = exchange(good.clone()).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let token = r.json()["access_token"].as_str().unwrap().to_string();
    assert_eq!(
        env.get(
            "kv-demo",
            &format!("/secrets/sql-password?{API}"),
            Some(&token)
        )
        .await
        .status,
        StatusCode::OK
    );

    let mint = |ns: &str, sa: &str, aud: Option<&str>, exp: Option<i64>, issuer: &str| {
        env.emu
            .mint_service_account_token(&ServiceAccountTokenRequest {
                issuer: issuer.into(),
                namespace: ns.into(),
                service_account: sa.into(),
                audience: aud.map(String::from),
                expires_in: exp,
            })
            .unwrap()
    };
    let cases = [
        (
            "other subject",
            mint("default", "other-sa", None, None, ""),
            70021,
        ),
        (
            "other namespace",
            mint("kube-system", "workload-sa", None, None, ""),
            70021,
        ),
        (
            "other issuer",
            mint(
                "default",
                "workload-sa",
                None,
                None,
                "https://elsewhere.example/",
            ),
            70021,
        ),
        (
            "wrong audience",
            mint("default", "workload-sa", Some("api://Other"), None, ""),
            700212,
        ),
        (
            "expired",
            mint("default", "workload-sa", None, Some(-120), ""),
            700024,
        ),
        ("not a JWT", "abc".to_string(), 50027),
    ];
    for (what, assertion, code) in cases {
        let r = exchange(assertion).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{what}");
        assert_eq!(
            oauth_error(&r),
            ("invalid_client".to_string(), code),
            "{what}: {}",
            r.text
        );
    }
    // A tampered payload fails signature validation.
    let mut parts: Vec<String> = good.split('.').map(String::from).collect();
    let payload = URL_SAFE_NO_PAD.decode(&parts[1]).unwrap();
    let forged = String::from_utf8(payload)
        .unwrap()
        .replace("default", "kube-system");
    parts[1] = URL_SAFE_NO_PAD.encode(forged);
    let r = exchange(parts.join(".")).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        oauth_error(&r),
        ("invalid_client".to_string(), 700213),
        "{}",
        r.text
    );
    // The assertion is only good for its federated client id.
    let r = env
        .post_form(
            &url,
            &[
                ("client_id", APP_SP),
                ("grant_type", "client_credentials"),
                ("scope", "https://vault.azure.net/.default"),
                ("client_assertion_type", JWT_BEARER),
                ("client_assertion", &good),
            ],
        )
        .await;
    assert_eq!(oauth_error(&r).1, 70021);
}

/// Entra ID trusts a cluster's service-account issuer through its JWKS (the
/// real-cluster tests give it a kube-apiserver's `/openid/v1/jwks`). Here a
/// second emulator plays that cluster: its OIDC key signs the tokens, and
/// only its JWKS is given to the first.
#[tokio::test]
async fn assertions_of_a_trusted_issuer_are_checked_against_its_own_keys() {
    const CLUSTER: &str = "https://cluster.example.invalid";
    let cluster = Emulator::start(EmulatorConfig::with_seed(conformance_seed()))
        .await
        .unwrap();
    let mut seed = conformance_seed();
    seed.federations.push(FederationSeed {
        issuer: Some(CLUSTER.into()),
        subject: "system:serviceaccount:apps:cluster-sa".into(),
        client_id: WORKLOAD_APP.into(),
        audience: None,
    });
    let env = start_with(EmulatorConfig {
        trusted_issuers: vec![TrustedIssuer::from_jwks(CLUSTER, &cluster.oidc_jwks()).unwrap()],
        ..EmulatorConfig::with_seed(seed)
    })
    .await;
    let url = token_url(&env);
    let exchange = |assertion: String| {
        let url = url.clone();
        let env = &env;
        async move {
            env.post_form(
                &url,
                &[
                    ("client_id", WORKLOAD_APP),
                    ("grant_type", "client_credentials"),
                    ("scope", "https://vault.azure.net/.default"),
                    ("client_assertion_type", JWT_BEARER),
                    ("client_assertion", &assertion),
                ],
            )
            .await
        }
    };
    let mint = |by: &EmulatorHandle, issuer: &str, sa: &str| {
        by.mint_service_account_token(&ServiceAccountTokenRequest {
            issuer: issuer.into(),
            namespace: "apps".into(),
            service_account: sa.into(),
            audience: None,
            expires_in: None,
        })
        .unwrap()
    };

    // Signed by the cluster's key, federated for its issuer: accepted, and
    // the access token reads the vault.
    let r = exchange(mint(&cluster, CLUSTER, "cluster-sa")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let token = r.json()["access_token"].as_str().unwrap().to_string();
    let read = env
        .get(
            "kv-demo",
            &format!("/secrets/sql-password?{API}"),
            Some(&token),
        )
        .await;
    assert_eq!(read.status, StatusCode::OK, "{}", read.text);

    let refused = [
        // Claims the cluster's issuer but is signed by another key (the
        // emulator's own issuer key): the cluster's JWKS does not verify it.
        (
            "forged issuer",
            mint(&env.emu, CLUSTER, "cluster-sa"),
            700213,
        ),
        // The cluster's genuine token for a subject no federation names.
        ("other subject", mint(&cluster, CLUSTER, "other-sa"), 70021),
        // Another issuer (the cluster's key, an issuer nobody trusts): checked
        // against the emulator's own key, which did not sign it.
        (
            "untrusted issuer",
            mint(&cluster, "https://elsewhere.example.invalid", "cluster-sa"),
            700213,
        ),
    ];
    for (what, assertion, code) in refused {
        let r = exchange(assertion).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{what}");
        assert_eq!(
            oauth_error(&r),
            ("invalid_client".to_string(), code),
            "{what}: {}",
            r.text
        );
    }
}
