//! The official Rust SDK (azure_security_keyvault_secrets 1.0.1 with
//! azure_identity 1.0.0) against the emulator: Entra client-secret flow with
//! a custom authority, the challenge with default resource verification
//! (host names are compared without the port), paging, and error codes.

use std::sync::Arc;

use azure_core::cloud::{CloudConfiguration, CustomConfiguration};
use azure_core::credentials::Secret;
use azure_core::error::ErrorKind;
use azure_core::http::{ClientOptions, RetryOptions, StatusCode, Transport};
use azure_identity::{ClientSecretCredential, ClientSecretCredentialOptions};
use azure_security_keyvault_secrets::models::{
    SecretClientGetSecretOptions, SecretClientListSecretPropertiesVersionsOptions,
};
use azure_security_keyvault_secrets::{SecretClient, SecretClientOptions};
use futures::TryStreamExt as _;
use secretfs_e2e::{CounterFilter, Route};

use crate::common::*;

fn client_options(env: &Env) -> ClientOptions {
    let mut custom = CustomConfiguration::default();
    custom.authority_host = env.emu.authority_url();
    ClientOptions {
        transport: Some(Transport::new(Arc::new(env.http.clone()))),
        retry: RetryOptions::none(),
        cloud: Some(Arc::new(CloudConfiguration::Custom(custom))),
        ..Default::default()
    }
}

fn secret_client(env: &Env, vault: &str) -> SecretClient {
    let credential = ClientSecretCredential::new(
        TENANT,
        APP_SP.to_string(),
        Secret::new(APP_SP_SECRET),
        Some(ClientSecretCredentialOptions {
            client_options: client_options(env),
        }),
    )
    .expect("credential");
    SecretClient::new(
        &env.emu.vault_url(vault),
        credential,
        Some(SecretClientOptions {
            client_options: client_options(env),
            // Left at its default: the challenge resource must match the host.
            verify_challenge_resource: Some(true),
            ..Default::default()
        }),
    )
    .expect("client")
}

#[tokio::test]
async fn rust_sdk_reads_a_secret_through_challenge_and_entra() {
    let env = start().await;
    let client = secret_client(&env, "kv-demo");
    for _ in 0..3 {
        let secret = client
            .get_secret("sql-password", None)
            .await
            .expect("get_secret")
            .into_model()
            .expect("model");
        assert_eq!(secret.value.as_deref(), Some("Sql-Passw0rd-from-kv-demo"));
        assert_eq!(secret.content_type.as_deref(), Some("text/plain"));
        let id = secret.id.expect("id");
        assert!(is_version(id.rsplit('/').next().unwrap()), "{id}");
    }
    assert_eq!(
        env.emu
            .count(&CounterFilter::route(Route::SecretGet).status(401)),
        1
    );
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
        3
    );
}

#[tokio::test]
async fn rust_sdk_pages_versions_and_reads_by_version() {
    let env = start().await;
    let client = secret_client(&env, "kv-conformance");
    let pager = client
        .list_secret_properties_versions(
            "rotating",
            Some(SecretClientListSecretPropertiesVersionsOptions {
                maxresults: Some(2),
                ..Default::default()
            }),
        )
        .expect("pager");
    let items: Vec<_> = pager.try_collect().await.expect("all pages");
    let versions: Vec<String> = items
        .iter()
        .map(|p| {
            p.id.as_deref()
                .unwrap()
                .rsplit('/')
                .next()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(
        versions,
        (1..=5).map(|i| format!("{i:032}")).collect::<Vec<_>>()
    );
    assert_eq!(
        items[2].attributes.as_ref().and_then(|a| a.enabled),
        Some(false)
    );
    assert_eq!(
        env.emu
            .count(&CounterFilter::route(Route::SecretVersions).status(200)),
        3
    );

    let second = client
        .get_secret(
            "rotating",
            Some(SecretClientGetSecretOptions {
                secret_version: Some(versions[1].clone()),
                ..Default::default()
            }),
        )
        .await
        .expect("by version")
        .into_model()
        .unwrap();
    assert_eq!(second.value.as_deref(), Some("second-value"));
}

#[tokio::test]
async fn rust_sdk_sees_status_and_error_codes() {
    let env = start().await;
    let client = secret_client(&env, "kv-conformance");
    let err = client
        .get_secret("does-not-exist", None)
        .await
        .expect_err("404");
    assert_eq!(err.http_status(), Some(StatusCode::NotFound));
    match err.kind() {
        ErrorKind::HttpResponse { error_code, .. } => {
            assert_eq!(error_code.as_deref(), Some("SecretNotFound"))
        }
        other => panic!("unexpected error kind {other:?}"),
    }
    let err = client
        .get_secret("disabled-latest", None)
        .await
        .expect_err("403");
    assert_eq!(err.http_status(), Some(StatusCode::Forbidden));
    match err.kind() {
        ErrorKind::HttpResponse { error_code, .. } => {
            assert_eq!(error_code.as_deref(), Some("Forbidden"))
        }
        other => panic!("unexpected error kind {other:?}"),
    }
    // The backing secret of a certificate carries kid and managed.
    let s = client
        .get_secret("pfx-cert", None)
        .await
        .unwrap()
        .into_model()
        .unwrap();
    assert_eq!(s.managed, Some(true));
    assert!(s.kid.unwrap().contains("/keys/pfx-cert/"));
}

#[tokio::test]
async fn rust_sdk_lists_all_secrets() {
    let env = start().await;
    let client = secret_client(&env, "kv-conformance");
    let items: Vec<_> = client
        .list_secret_properties(None)
        .expect("pager")
        .try_collect()
        .await
        .expect("all pages");
    let mut names: Vec<String> = items
        .iter()
        .map(|p| {
            p.id.as_deref()
                .unwrap()
                .rsplit('/')
                .next()
                .unwrap()
                .to_string()
        })
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "disabled-latest",
            "expired",
            "not-yet-valid",
            "pem-cert",
            "pfx-cert",
            "rotating",
            "tagged"
        ]
    );
    assert_eq!(
        env.emu
            .count(&CounterFilter::route(Route::SecretList).status(200)),
        1
    );
}
