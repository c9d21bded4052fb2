//! Every identity mode against the emulator, and wrong identities → Denied
//! naming the object.

use std::collections::BTreeMap;

use secretfs::provider::{ErrorKind, Provider};
use secretfs_e2e::{CounterFilter, EmulatorConfig, Route, Seed, ServiceAccountTokenRequest};
use secretfs_secrets::SecretMap;

use crate::azure_provider::common::*;

/// `spec.parameters` of the seed SecretProviderClass, as written.
fn seed_spc_parameters() -> BTreeMap<String, String> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/seed/secretproviderclass.yaml"
    );
    let text = std::fs::read_to_string(path).expect("seed SPC");
    let spc: serde_yaml::Value = serde_yaml::from_str(&text).expect("YAML");
    serde_yaml::from_value(spc["spec"]["parameters"].clone()).expect("parameters map")
}

fn is_version(v: &str) -> bool {
    v.len() == 32 && v.bytes().all(|b| b.is_ascii_hexdigit())
}

#[tokio::test]
async fn seed_secret_provider_class_mounts_secret_1_through_imds() {
    let emu = start_with(EmulatorConfig::with_seed(Seed::demo())).await;
    let provider = provider(&emu);
    let mut request = request("unused", &[], "unused");
    request.parameters = seed_spc_parameters();
    let response = mount_ok(&provider, &request).await;
    assert_eq!(response.files.len(), 1);
    assert_eq!(response.files[0].path, "SECRET_1");
    assert_eq!(response.files[0].object_id, "secret/sql-password");
    assert_eq!(response.files[0].mode.bits(), 0o644);
    assert_eq!(
        file_text(&response, "SECRET_1"),
        "Sql-Passw0rd-from-kv-demo"
    );
    assert_eq!(response.versions.len(), 1);
    assert_eq!(response.versions[0].id, "secret/sql-password");
    assert!(
        is_version(&response.versions[0].version),
        "{:?}",
        response.versions
    );
    assert!(
        response
            .warnings
            .iter()
            .any(|w| w.contains("useVMManagedIdentity")),
        "{:?}",
        response.warnings
    );
    // The token came from IMDS for the user-assigned identity.
    assert_eq!(
        emu.count(
            &CounterFilter::route(Route::ImdsToken)
                .identity(NODE_MI)
                .status(200)
        ),
        1
    );
    assert_eq!(emu.count(&CounterFilter::route(Route::EntraToken)), 0);
}

#[tokio::test]
async fn workload_identity_exchanges_the_service_account_token() {
    let emu = start().await;
    let provider = provider(&emu);
    let request = wi_request(
        &emu,
        "kv-conformance",
        &objects(&[&object("rotating", "secret", &[])]),
    );
    let response = mount_ok(&provider, &request).await;
    assert_eq!(file_text(&response, "rotating"), "fifth-value");
    assert_eq!(
        response.versions[0].version,
        "00000000000000000000000000000005"
    );
    assert_eq!(
        emu.count(
            &CounterFilter::route(Route::EntraToken)
                .identity(WORKLOAD_APP)
                .status(200)
        ),
        1
    );
}

#[tokio::test]
async fn workload_identity_of_an_unfederated_service_account_is_denied() {
    let emu = start().await;
    let provider = provider(&emu);
    let mut request = wi_request(
        &emu,
        "kv-conformance",
        &objects(&[&object("rotating", "secret", &[])]),
    );
    let token = emu
        .mint_service_account_token(&ServiceAccountTokenRequest {
            issuer: String::new(),
            namespace: "default".into(),
            service_account: "other-sa".into(),
            audience: None,
            expires_in: None,
        })
        .expect("token");
    request.service_account_tokens = Some(tokens_json(&token));
    let errors = mount_objects_err(&provider, &request).await;
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].object, "secret/rotating");
    assert_eq!(errors[0].kind, ErrorKind::Denied);
    assert!(
        errors[0]
            .message
            .contains("could not get a token as workload identity")
            && errors[0].message.contains("AADSTS70021"),
        "{}",
        errors[0].message
    );
    assert!(!errors[0].message.contains(&token));
}

/// The key kubelet (≥ 1.35) puts the tokens under in the NodePublishVolume secrets.
const TOKENS_SECRET_KEY: &str = "csi.storage.k8s.io/serviceAccount.tokens";

/// A service-account token of `default/other-sa`, which no federation admits.
fn unfederated_token(emu: &secretfs_e2e::EmulatorHandle) -> String {
    emu.mint_service_account_token(&ServiceAccountTokenRequest {
        issuer: String::new(),
        namespace: "default".into(),
        service_account: "other-sa".into(),
        audience: None,
        expires_in: None,
    })
    .expect("token")
}

/// Kubernetes ≥ 1.35 sends the service-account tokens in the
/// NodePublishVolume secrets (`csi.storage.k8s.io/serviceAccount.tokens`);
/// they win over the volume context's.
#[tokio::test]
async fn workload_identity_uses_the_token_in_the_request_secrets_first() {
    let emu = start().await;
    let provider = provider(&emu);
    let mut request = wi_request(
        &emu,
        "kv-conformance",
        &objects(&[&object("rotating", "secret", &[])]),
    );
    let good = emu
        .service_account_token("default", "workload-sa")
        .expect("SA token");
    request.secrets = SecretMap::new([(
        TOKENS_SECRET_KEY.to_owned(),
        tokens_json(&good).expose().to_owned(),
    )]);
    // The volume context's token alone would be refused (see above).
    request.service_account_tokens = Some(tokens_json(&unfederated_token(&emu)));
    let response = mount_ok(&provider, &request).await;
    assert_eq!(file_text(&response, "rotating"), "fifth-value");
    assert_eq!(
        emu.count(
            &CounterFilter::route(Route::EntraToken)
                .identity(WORKLOAD_APP)
                .status(200)
        ),
        1
    );
    assert_eq!(
        emu.count(&CounterFilter::route(Route::EntraToken).status(400)),
        0,
        "the volume context's token was not tried"
    );
}

#[tokio::test]
async fn workload_identity_does_not_fall_back_from_the_request_secrets() {
    let emu = start().await;
    let provider = provider(&emu);
    // A valid token in the volume context, a refused one in the secrets.
    let mut request = wi_request(
        &emu,
        "kv-conformance",
        &objects(&[&object("rotating", "secret", &[])]),
    );
    let bad = unfederated_token(&emu);
    request.secrets = SecretMap::new([(
        TOKENS_SECRET_KEY.to_owned(),
        tokens_json(&bad).expose().to_owned(),
    )]);
    let errors = mount_objects_err(&provider, &request).await;
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].kind, ErrorKind::Denied);
    assert!(
        errors[0].message.contains("AADSTS70021"),
        "{}",
        errors[0].message
    );
    assert!(!errors[0].message.contains(&bad));

    // With the secrets' tokens alone (no volume context), it works.
    let emu = start().await;
    let provider = crate::azure_provider::common::provider(&emu);
    let mut request = crate::azure_provider::common::request(
        "kv-conformance",
        &[("clientID", WORKLOAD_APP)],
        &objects(&[&object("rotating", "secret", &[])]),
    );
    let good = emu
        .service_account_token("default", "workload-sa")
        .expect("SA token");
    request.secrets = SecretMap::new([(
        TOKENS_SECRET_KEY.to_owned(),
        tokens_json(&good).expose().to_owned(),
    )]);
    assert!(request.service_account_tokens.is_none());
    let response = mount_ok(&provider, &request).await;
    assert_eq!(file_text(&response, "rotating"), "fifth-value");
}

#[tokio::test]
async fn service_principal_from_node_publish_secret() {
    let emu = start().await;
    let provider = provider(&emu);
    let request = sp_request(
        "kv-conformance",
        &objects(&[&object(
            "tagged",
            "secret",
            &[("objectAlias", "creds.json")],
        )]),
    );
    let response = mount_ok(&provider, &request).await;
    assert_eq!(
        file_text(&response, "creds.json"),
        r#"{"user":"app","password":"pw"}"#
    );
    assert_eq!(
        emu.count(
            &CounterFilter::route(Route::EntraToken)
                .identity(APP_SP)
                .status(200)
        ),
        1
    );
}

#[tokio::test]
async fn service_principal_with_a_wrong_secret_is_denied_without_showing_it() {
    let emu = start().await;
    let provider = provider(&emu);
    let mut request = sp_request(
        "kv-conformance",
        &objects(&[
            &object("tagged", "secret", &[]),
            &object("rotating", "secret", &[]),
        ]),
    );
    request.secrets = SecretMap::new([
        ("clientid".to_owned(), APP_SP.to_owned()),
        (
            "clientsecret".to_owned(),
            "wrong-secret-value-4711".to_owned(),
        ),
    ]);
    let errors = mount_objects_err(&provider, &request).await;
    assert_eq!(errors.len(), 2, "{errors:?}");
    for e in &errors {
        assert_eq!(e.kind, ErrorKind::Denied);
        assert!(
            e.message.contains("service principal 3f8e2d1c"),
            "{}",
            e.message
        );
        assert!(!e.message.contains("wrong-secret-value-4711"));
    }
    // A denied identity is not kept: fixing the secret works at once.
    assert_eq!(provider.cached_identities(), 0);
    let ok = sp_request(
        "kv-conformance",
        &objects(&[&object("tagged", "secret", &[])]),
    );
    mount_ok(&provider, &ok).await;
}

#[tokio::test]
async fn imds_user_assigned_identity() {
    let emu = start().await;
    let provider = provider(&emu);
    let request = request(
        "kv-demo",
        &[
            ("useVMManagedIdentity", "true"),
            ("userAssignedIdentityID", NODE_MI),
        ],
        &objects(&[&object("sql-password", "secret", &[])]),
    );
    let response = mount_ok(&provider, &request).await;
    assert_eq!(
        file_text(&response, "sql-password"),
        "Sql-Passw0rd-from-kv-demo"
    );
    assert_eq!(
        emu.count(
            &CounterFilter::route(Route::ImdsToken)
                .identity(NODE_MI)
                .status(200)
        ),
        1
    );
}

#[tokio::test]
async fn imds_system_assigned_identity() {
    // The demo seed has one managed identity: IMDS answers for it when no
    // client id is given.
    let emu = start_with(EmulatorConfig::with_seed(Seed::demo())).await;
    let provider = provider(&emu);
    let request = request(
        "kv-demo",
        &[("useVMManagedIdentity", "true")],
        &objects(&[&object("sql-password", "secret", &[])]),
    );
    let response = mount_ok(&provider, &request).await;
    assert_eq!(
        file_text(&response, "sql-password"),
        "Sql-Passw0rd-from-kv-demo"
    );
    let rows = emu.counters(&CounterFilter::route(Route::ImdsToken));
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0].key.status, 200);
}

#[tokio::test]
async fn pod_identity_through_nmi() {
    let emu = start().await;
    let provider = provider(&emu);
    let request = request(
        "kv-demo",
        &[("usePodIdentity", "true")],
        &objects(&[&object("sql-password", "secret", &[])]),
    );
    let response = mount_ok(&provider, &request).await;
    assert_eq!(
        file_text(&response, "sql-password"),
        "Sql-Passw0rd-from-kv-demo"
    );
    assert!(
        response
            .warnings
            .iter()
            .any(|w| w.contains("usePodIdentity")),
        "{:?}",
        response.warnings
    );
    assert_eq!(
        emu.count(&CounterFilter::route(Route::NmiToken).status(200)),
        1
    );
}

#[tokio::test]
async fn pod_identity_without_a_binding_is_denied() {
    let emu = start().await;
    let provider = provider(&emu);
    let mut request = request(
        "kv-demo",
        &[("usePodIdentity", "true")],
        &objects(&[&object("sql-password", "secret", &[])]),
    );
    request.pod.namespace = "unbound".into();
    let errors = mount_objects_err(&provider, &request).await;
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].kind, ErrorKind::Denied, "{}", errors[0].message);
    assert!(
        errors[0]
            .message
            .contains("nmi response failed with status code"),
        "{}",
        errors[0].message
    );
}

#[tokio::test]
async fn identities_without_access_are_denied_naming_the_object_and_the_fix() {
    let emu = start().await;
    let provider = provider(&emu);
    // The second node identity has no access policy on kv-demo.
    let request = request(
        "kv-demo",
        &[
            ("useVMManagedIdentity", "true"),
            ("userAssignedIdentityID", SECOND_MI),
        ],
        &objects(&[&object("sql-password", "secret", &[])]),
    );
    let errors = mount_objects_err(&provider, &request).await;
    assert_eq!(errors.len(), 1);
    let e = &errors[0];
    assert_eq!(e.object, "secret/sql-password");
    assert_eq!(e.kind, ErrorKind::Denied);
    for part in [
        "objectType:secret",
        "objectName:sql-password",
        "vault kv-demo",
        "403 Forbidden/AccessDenied",
        "does not have secrets get permission",
        "grant the node's user-assigned managed identity 2e4d6c8b-0a1f-4e3d-8c5b-7a9f1e3d5c7b get permission on secrets",
    ] {
        assert!(
            e.message.contains(part),
            "missing {part:?} in {}",
            e.message
        );
    }

    // A service principal of the same tenant without any access policy.
    let mut outsider = sp_request(
        "kv-conformance",
        &objects(&[&object("rotating", "secret", &[])]),
    );
    outsider.secrets = SecretMap::new([
        ("clientid".to_owned(), OUTSIDER.to_owned()),
        ("clientsecret".to_owned(), OUTSIDER_SECRET.to_owned()),
    ]);
    let err = provider.mount(&outsider).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Denied);
    assert!(err.to_string().contains("secret/rotating"), "{err}");
    assert!(!err.to_string().contains(OUTSIDER_SECRET));
}

#[tokio::test]
async fn imds_refusal_is_reported_with_its_reason() {
    // Two user-assigned identities and no system-assigned one: IMDS cannot
    // choose.
    let emu = start().await;
    let provider = provider(&emu);
    let request = request(
        "kv-demo",
        &[("useVMManagedIdentity", "true")],
        &objects(&[&object("sql-password", "secret", &[])]),
    );
    let errors = mount_objects_err(&provider, &request).await;
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].kind, ErrorKind::Denied);
    assert!(
        errors[0]
            .message
            .contains("could not get a token as the node's system-assigned managed identity")
            && errors[0]
                .message
                .contains("IMDS token request failed with status code 400"),
        "{}",
        errors[0].message
    );
    // Not retried: a 400 will not change.
    assert_eq!(emu.count(&CounterFilter::route(Route::ImdsToken)), 1);
}

/// The shared cache keeps authorisation per pod: a second pod of the same
/// service account is served cached values only after its own token was
/// accepted by Entra ID. A pod whose token is refused gets nothing, though
/// the values it asks for are cached under the same identity key.
#[tokio::test]
async fn a_new_pod_is_served_cached_values_only_after_its_own_token_is_accepted() {
    let emu = start().await;
    let provider = provider(&emu);
    let objects = objects(&[&object("rotating", "secret", &[])]);
    let mut first = wi_request(&emu, "kv-conformance", &objects);
    first.max_age = std::time::Duration::from_secs(3600);
    let value = file_text(&mount_ok(&provider, &first).await, "rotating");

    // Another pod, same namespace and service account (same identity key),
    // but a token Entra ID refuses (another subject).
    let mut intruder = first.clone();
    intruder.pod.uid = "6a0b3c1e-0000-4000-8000-0000000000ff".into();
    let refused = unfederated_token(&emu);
    intruder.service_account_tokens = Some(tokens_json(&refused));
    emu.reset_counters();
    let errors = mount_objects_err(&provider, &intruder).await;
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].kind, ErrorKind::Denied, "{}", errors[0].message);
    assert!(
        errors[0].message.contains("rotating"),
        "{}",
        errors[0].message
    );
    assert!(
        errors[0].message.contains("AADSTS70021"),
        "{}",
        errors[0].message
    );
    assert!(!errors[0].message.contains(&refused));
    assert_eq!(emu.count(&CounterFilter::route(Route::SecretGet)), 0);

    // The first pod is not disturbed: its republish is served from the cache.
    emu.reset_counters();
    assert_eq!(
        file_text(&mount_ok(&provider, &first).await, "rotating"),
        value
    );
    assert_eq!(emu.count(&CounterFilter::default()), 0, "no request at all");

    // A third pod with a valid token: one token exchange, no vault call.
    let mut third = wi_request(&emu, "kv-conformance", &objects);
    third.max_age = std::time::Duration::from_secs(3600);
    third.pod.uid = "6a0b3c1e-0000-4000-8000-0000000000fe".into();
    emu.reset_counters();
    assert_eq!(
        file_text(&mount_ok(&provider, &third).await, "rotating"),
        value
    );
    assert_eq!(
        emu.count(&CounterFilter::route(Route::EntraToken).status(200)),
        1
    );
    assert_eq!(emu.count(&CounterFilter::route(Route::SecretGet)), 0);
}
