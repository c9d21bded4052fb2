//! Secrets: latest, versions, attributes, disabled and expired versions,
//! not-found and access denial.

use reqwest::StatusCode;
use secretfs_e2e::{AccessSeed, NewSecretVersion, ObjectKind, Permission};

use crate::common::*;

#[tokio::test]
async fn latest_with_and_without_trailing_slash_and_by_version() {
    let env = start().await;
    let a = env
        .get_as_app("kv-demo", &format!("/secrets/sql-password/?{API}"))
        .await;
    let b = env
        .get_as_app("kv-demo", &format!("/secrets/sql-password?{API}"))
        .await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.json(), b.json());
    let j = a.json();
    assert_eq!(j["value"], "Sql-Passw0rd-from-kv-demo");
    assert_eq!(j["contentType"], "text/plain");
    let id = j["id"].as_str().unwrap();
    let prefix = format!(
        "https://kv-demo.vault.azure.net:{}/secrets/sql-password/",
        env.emu.https_addr().port()
    );
    assert!(id.starts_with(&prefix), "{id}");
    let version = &id[prefix.len()..];
    assert!(is_version(version), "{version}");
    let attrs = &j["attributes"];
    assert_eq!(attrs["enabled"], true);
    assert!(attrs["created"].is_i64() && attrs["updated"].is_i64());
    assert_eq!(attrs["recoveryLevel"], "Recoverable+Purgeable");
    assert!(j.get("kid").is_none() && j.get("managed").is_none() && j.get("tags").is_none());

    let by_version = env
        .get_as_app("kv-demo", &format!("/secrets/sql-password/{version}?{API}"))
        .await;
    assert_eq!(by_version.json(), j);
}

#[tokio::test]
async fn a_new_version_becomes_latest_and_old_versions_stay_readable() {
    let env = start().await;
    let old = env
        .get_as_app("kv-demo", &format!("/secrets/sql-password?{API}"))
        .await
        .json();
    let v2 = env
        .emu
        .set_secret("kv-demo", "sql-password", "rotated-value")
        .unwrap();
    let new = env
        .get_as_app("kv-demo", &format!("/secrets/sql-password/?{API}"))
        .await
        .json();
    assert_eq!(new["value"], "rotated-value");
    assert!(new["id"].as_str().unwrap().ends_with(&v2));
    let old_id = old["id"].as_str().unwrap();
    let again = env
        .get_url(&format!("{old_id}?{API}"), Some(&env.token("app-sp")))
        .await;
    assert_eq!(again.json()["value"], "Sql-Passw0rd-from-kv-demo");
}

#[tokio::test]
async fn tags_and_content_type_are_returned() {
    let env = start().await;
    let j = env
        .get_as_app("kv-conformance", &format!("/secrets/tagged?{API}"))
        .await
        .json();
    assert_eq!(j["contentType"], "application/json");
    assert_eq!(j["tags"]["env"], "test");
    assert_eq!(j["tags"]["owner"], "secretfs");
    assert_eq!(j["value"], r#"{"user":"app","password":"pw"}"#);
}

#[tokio::test]
async fn disabled_version_is_403_secret_disabled() {
    let env = start().await;
    let r = env
        .get_as_app("kv-conformance", &format!("/secrets/disabled-latest?{API}"))
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(
        r.text,
        r#"{"error":{"code":"Forbidden","innererror":{"code":"SecretDisabled"},"message":"Operation get is not allowed on a disabled secret."}}"#
    );
    // Disabling through the control API has the same effect; enabling restores.
    let v = env
        .emu
        .set_enabled("kv-demo", ObjectKind::Secret, "sql-password", None, false)
        .unwrap();
    let r = env
        .get_as_app("kv-demo", &format!("/secrets/sql-password/{v}?{API}"))
        .await;
    assert_eq!(r.kv_error().1.as_deref(), Some("SecretDisabled"));
    env.emu
        .set_enabled(
            "kv-demo",
            ObjectKind::Secret,
            "sql-password",
            Some(&v),
            true,
        )
        .unwrap();
    let r = env
        .get_as_app("kv-demo", &format!("/secrets/sql-password/{v}?{API}"))
        .await;
    assert_eq!(r.status, StatusCode::OK);
}

#[tokio::test]
async fn expired_and_not_yet_valid_secrets_are_still_readable() {
    let env = start().await;
    let r = env
        .get_as_app("kv-conformance", &format!("/secrets/expired?{API}"))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["value"], "expired-but-readable");
    assert_eq!(r.json()["attributes"]["exp"], 1600000000);
    assert_eq!(r.json()["attributes"]["nbf"], 1500000000);
    let r = env
        .get_as_app("kv-conformance", &format!("/secrets/not-yet-valid?{API}"))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["value"], "future-but-readable");
}

#[tokio::test]
async fn missing_secret_and_missing_version_are_404() {
    let env = start().await;
    let r = env
        .get_as_app("kv-demo", &format!("/secrets/nope?{API}"))
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(
        r.text,
        r#"{"error":{"code":"SecretNotFound","message":"A secret with (name/id) nope was not found in this key vault. If you recently deleted this secret you may be able to recover it using the correct recovery command. For help resolving this issue, please see https://go.microsoft.com/fwlink/?linkid=2125182"}}"#
    );
    let missing = "0123456789abcdef0123456789abcdef";
    let r = env
        .get_as_app("kv-demo", &format!("/secrets/sql-password/{missing}?{API}"))
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let (code, _, message) = r.kv_error();
    assert_eq!(code, "SecretNotFound");
    assert!(
        message.contains(&format!("sql-password/{missing}")),
        "{message}"
    );
    // Deleting makes the secret disappear.
    env.emu
        .delete("kv-demo", ObjectKind::Secret, "sql-password", None)
        .unwrap();
    let r = env
        .get_as_app("kv-demo", &format!("/secrets/sql-password?{API}"))
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn access_policy_denial_is_403_access_denied_with_the_callers_ids() {
    let env = start().await;
    let r = env
        .get(
            "kv-demo",
            &format!("/secrets/sql-password?{API}"),
            Some(&env.token("outsider")),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let (code, inner, message) = r.kv_error();
    assert_eq!(
        (code.as_str(), inner.as_deref()),
        ("Forbidden", Some("AccessDenied"))
    );
    assert_eq!(
        message,
        format!(
            "The user, group or application 'appid={OUTSIDER};oid=1f2e3d4c-5b6a-4798-8a7b-6c5d4e3f2a1b;iss=https://sts.windows.net/{TENANT}/' does not have secrets get permission on key vault 'kv-demo;location=eastus'. For help resolving this issue, please see https://go.microsoft.com/fwlink/?linkid=2125287"
        )
    );
    // node identity may get but not list in kv-conformance.
    let node = env.token(NODE_MI);
    assert_eq!(
        env.get(
            "kv-conformance",
            &format!("/secrets/rotating?{API}"),
            Some(&node)
        )
        .await
        .status,
        StatusCode::OK
    );
    let r = env
        .get(
            "kv-conformance",
            &format!("/secrets/rotating/versions?{API}"),
            Some(&node),
        )
        .await;
    assert!(
        r.kv_error()
            .2
            .contains("does not have secrets list permission"),
        "{}",
        r.text
    );
    // and no key permission at all.
    let r = env
        .get(
            "kv-conformance",
            &format!("/keys/rsa-key?{API}"),
            Some(&node),
        )
        .await;
    assert!(
        r.kv_error().2.contains("does not have keys get permission"),
        "{}",
        r.text
    );
    // Granting access at run time takes effect at once.
    env.emu
        .set_access(
            "kv-demo",
            &[AccessSeed {
                identity: "outsider".into(),
                secrets: vec![Permission::Get],
                ..Default::default()
            }],
        )
        .unwrap();
    let r = env
        .get(
            "kv-demo",
            &format!("/secrets/sql-password?{API}"),
            Some(&env.token("outsider")),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
}

#[tokio::test]
async fn rbac_vault_denial_is_forbidden_by_rbac() {
    let env = start().await;
    let r = env
        .get_as_app("kv-rbac", &format!("/secrets/rbac-secret?{API}"))
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let (code, inner, message) = r.kv_error();
    assert_eq!(
        (code.as_str(), inner.as_deref()),
        ("Forbidden", Some("ForbiddenByRbac"))
    );
    assert!(
        message.starts_with("Caller is not authorized to perform action on resource."),
        "{message}"
    );
    assert!(message.contains("Action: 'Microsoft.KeyVault/vaults/secrets/getSecret/action'"));
    assert!(message.contains("DecisionReason: 'DeniedWithNoValidRBAC'"));
    assert_eq!(r.header("x-ms-keyvault-region"), Some("northeurope"));
}

#[tokio::test]
async fn tokens_of_another_tenant_are_refused() {
    let mut seed = conformance_seed();
    seed.identities.push(secretfs_e2e::IdentitySeed {
        name: "foreign-app".into(),
        client_id: "0f0e0d0c-0b0a-4909-8807-060504030201".into(),
        object_id: None,
        kind: secretfs_e2e::IdentityKind::ServicePrincipal,
        client_secret: Some("foreign".into()),
        resource_id: None,
        system_assigned: false,
        tenant: Some("11111111-2222-4333-8444-555555555555".into()),
    });
    seed.vaults[0].access.push(AccessSeed {
        identity: "foreign-app".into(),
        secrets: vec![Permission::All],
        ..Default::default()
    });
    let env = start_with(secretfs_e2e::EmulatorConfig::with_seed(seed)).await;
    let r = env
        .get(
            "kv-demo",
            &format!("/secrets/sql-password?{API}"),
            Some(&env.token("foreign-app")),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(
        r.kv_error().2.starts_with("AKV10032: Invalid issuer."),
        "{}",
        r.text
    );
    let new = NewSecretVersion {
        value: "v".into(),
        ..Default::default()
    };
    assert!(
        env.emu
            .add_secret_version("kv-demo", "bad_name", new)
            .is_err()
    );
}
