//! Configuration errors, and that no token, client secret or secret value
//! shows in any error, log-facing Debug or configuration output.

use secretfs::provider::azure::{AzureProvider, AzureProviderConfig, ConfigError};
use secretfs::provider::{ErrorKind, MountError, Provider};
use secretfs_secrets::SecretMap;

use crate::azure_provider::common::*;

#[tokio::test]
async fn parameter_and_identity_problems_are_configuration_errors() {
    let emu = start().await;
    let provider = provider(&emu);
    let mut request = sp_request("kv-conformance", &objects(&[&object("x", "secret", &[])]));
    request.parameters.remove("keyvaultName");
    match provider.mount(&request).await {
        Err(MountError::Config { kind, message }) => {
            assert_eq!(kind, ErrorKind::Invalid);
            assert!(message.contains("keyvaultName"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    let mut request = sp_request("kv-conformance", &objects(&[&object("x", "secret", &[])]));
    request.secrets = SecretMap::default();
    match provider.mount(&request).await {
        Err(MountError::Config { message, .. }) => {
            assert!(message.contains("nodePublishSecretRef"), "{message}")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn bad_configurations_are_refused() {
    let e = AzureProvider::new(AzureProviderConfig {
        authority_host: Some("http://login.example".into()),
        ..Default::default()
    })
    .unwrap_err();
    assert!(matches!(e, ConfigError::AuthorityNotHttps(_)), "{e}");
    let e = AzureProvider::new(AzureProviderConfig {
        extra_ca_pem: Some("garbage".into()),
        ..Default::default()
    })
    .unwrap_err();
    assert!(matches!(e, ConfigError::CaPem(_)), "{e}");
    let e = AzureProvider::new(AzureProviderConfig {
        imds_url: "not a url".into(),
        ..Default::default()
    })
    .unwrap_err();
    assert!(e.to_string().contains("imds_url"), "{e}");
}

#[tokio::test]
async fn no_secret_or_token_in_errors_debug_or_config() {
    let emu = start().await;
    let provider = provider(&emu);
    let wrong_secret = "client-secret-must-not-leak-8c1f";
    let sa_token = emu.service_account_token("default", "workload-sa").unwrap();
    let secret_value = "fifth-value";
    let mut shown = Vec::new();

    // A refused client secret.
    let mut request = sp_request(
        "kv-conformance",
        &objects(&[&object("rotating", "secret", &[])]),
    );
    request.secrets = SecretMap::new([
        ("clientid".to_owned(), APP_SP.to_owned()),
        ("clientsecret".to_owned(), wrong_secret.to_owned()),
    ]);
    let err = provider.mount(&request).await.unwrap_err();
    shown.push(format!("{err}"));
    shown.push(format!("{err:?}"));
    shown.push(format!("{request:?}"));

    // A workload identity that works, then one that is denied by the vault.
    let request = wi_request(
        &emu,
        "kv-conformance",
        &objects(&[&object("rotating", "secret", &[])]),
    );
    let response = mount_ok(&provider, &request).await;
    shown.push(format!("{response:?}"));
    shown.push(format!("{request:?}"));
    let denied = wi_request(
        &emu,
        "kv-conformance",
        &objects(&[&object("rsa-key", "key", &[])]),
    );
    let err = provider.mount(&denied).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Denied, "{err}");
    shown.push(format!("{err}"));
    shown.push(format!("{err:?}"));

    // Throttled and missing objects.
    let sp = sp_request(
        "kv-conformance",
        &objects(&[
            &object("nope", "secret", &[]),
            &object("rotating", "secret", &[]),
        ]),
    );
    let err = provider.mount(&sp).await.unwrap_err();
    shown.push(format!("{err}"));
    shown.push(format!("{err:?}"));

    shown.push(format!("{provider:?}"));
    shown.push(format!("{:?}", config(&emu)));

    let access_token = emu
        .access_token("app-sp", "https://vault.azure.net", 3599)
        .unwrap();
    let token_head = &access_token[..40];
    for text in &shown {
        assert!(!text.contains(wrong_secret), "client secret in {text}");
        assert!(!text.contains(APP_SP_SECRET), "client secret in {text}");
        assert!(!text.contains(&sa_token[..40]), "SA token in {text}");
        assert!(!text.contains(secret_value), "secret value in {text}");
        assert!(!text.contains(token_head), "access token in {text}");
        assert!(!text.contains("eyJ"), "a JWT in {text}");
    }
}

/// `optional: true`: a missing object leaves its file out with a warning;
/// a missing required object, or an optional one that is refused, still
/// fails the mount.
#[tokio::test]
async fn a_missing_optional_object_is_left_out() {
    let emu = start().await;
    let provider = provider(&emu);
    let optional = objects(&[
        &object("rotating", "secret", &[]),
        &object("not-there-yet", "secret", &[("optional", "true")]),
    ]);
    let response = mount_ok(&provider, &sp_request("kv-conformance", &optional)).await;
    let paths: Vec<&str> = response.files.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(paths, ["rotating"]);
    assert!(
        response
            .warnings
            .iter()
            .any(|w| w.contains("secret/not-there-yet") && w.contains("left out")),
        "{:?}",
        response.warnings
    );

    let required = objects(&[
        &object("rotating", "secret", &[]),
        &object("not-there-yet", "secret", &[]),
    ]);
    let errors = mount_objects_err(&provider, &sp_request("kv-conformance", &required)).await;
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].kind, ErrorKind::NotFound);

    // Optional does not hide a denial: the pod must not silently miss files
    // it should be allowed to read.
    let denied = objects(&[&object("rbac-secret", "secret", &[("optional", "true")])]);
    let mut request = sp_request("kv-rbac", &denied);
    request.max_age = std::time::Duration::ZERO;
    match provider.mount(&request).await {
        Err(MountError::Objects(errors)) => assert_eq!(errors.errors()[0].kind, ErrorKind::Denied),
        other => panic!("expected a denial, got {other:?}"),
    }
}
