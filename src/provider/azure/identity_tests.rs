//! Tests of identity selection, identity keys, and redaction.

use secretfs_secrets::SecretString;
use std::collections::BTreeMap;

use super::identity::*;
use super::params::{AzureParameters, ParseOptions};
use crate::provider::ErrorKind;

const TOKEN: &str = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6YXBwOndlYiJ9.c2lnbmF0dXJlLXRva2Vu";
const OTHER_TOKEN: &str = "eyJhbGciOiJSUzI1NiJ9.b3RoZXItdG9rZW4.c2ln-from-secrets";
const CLIENT_SECRET: &str = "Zx8Q~clientsecretvalue.Sup3r";

fn params(pairs: &[(&str, &str)]) -> AzureParameters {
    let mut m: BTreeMap<String, String> = [
        ("keyvaultName", "kv-demo"),
        ("tenantID", "tenant-a"),
        (
            "objects",
            "array:\n  - |\n    objectName: s\n    objectType: secret\n",
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    for (k, v) in pairs {
        m.insert((*k).to_owned(), (*v).to_owned());
    }
    AzureParameters::parse(&m, &ParseOptions::default()).unwrap()
}

fn pod(sa: &str) -> PodInfo {
    PodInfo {
        name: "web-0".into(),
        namespace: "app".into(),
        service_account: sa.into(),
    }
}

fn tokens_json(audience: &str, token: &str) -> SecretString {
    SecretString::new(format!(
        r#"{{"{audience}":{{"token":"{token}","expirationTimestamp":"2030-01-01T00:00:00Z"}}}}"#
    ))
}

fn secrets(pairs: &[(&str, &str)]) -> BTreeMap<String, SecretString> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), SecretString::from(*v)))
        .collect()
}

fn salt() -> IdentityKeySalt {
    IdentityKeySalt::from_bytes(b"test-salt")
}

fn resolve(
    p: &AzureParameters,
    secrets: &BTreeMap<String, SecretString>,
    tokens: Option<&SecretString>,
    pod: &PodInfo,
) -> Result<ResolvedIdentity, IdentityError> {
    resolve_identity(
        p,
        &IdentityInputs {
            secrets,
            service_account_tokens: tokens,
            pod,
            node_name: "node-a",
        },
        &salt(),
    )
}

#[test]
fn workload_identity_from_the_volume_context() {
    let p = params(&[("clientID", "client-1")]);
    let tokens = tokens_json(WORKLOAD_IDENTITY_AUDIENCE, TOKEN);
    let r = resolve(&p, &BTreeMap::new(), Some(&tokens), &pod("web")).unwrap();
    assert_eq!(
        r.config,
        IdentityConfig::WorkloadIdentity {
            tenant_id: "tenant-a".into(),
            client_id: "client-1".into(),
            token: SecretString::from(TOKEN),
        }
    );
    assert_eq!(r.config.mode(), "workload-identity");
    assert_eq!(
        r.key,
        IdentityKey::WorkloadIdentity {
            authority: "https://login.microsoftonline.com/".into(),
            tenant_id: "tenant-a".into(),
            client_id: "client-1".into(),
            service_account: "app/web".into(),
        }
    );
    assert!(r.warnings.is_empty());
}

#[test]
fn workload_identity_reads_request_secrets_first() {
    let p = params(&[("clientID", "client-1")]);
    let context = tokens_json(WORKLOAD_IDENTITY_AUDIENCE, TOKEN);
    let in_secrets = secrets(&[(
        SERVICE_ACCOUNT_TOKENS_KEY,
        tokens_json(WORKLOAD_IDENTITY_AUDIENCE, OTHER_TOKEN).expose(),
    )]);
    let r = resolve(&p, &in_secrets, Some(&context), &pod("web")).unwrap();
    match r.config {
        IdentityConfig::WorkloadIdentity { token, .. } => assert_eq!(token.expose(), OTHER_TOKEN),
        other => panic!("{other:?}"),
    }
}

#[test]
fn workload_identity_errors() {
    let p = params(&[("clientID", "client-1")]);
    let none = BTreeMap::new();
    assert_eq!(
        resolve(&p, &none, None, &pod("web")).unwrap_err(),
        IdentityError::TokensNotFound
    );
    assert_eq!(IdentityError::TokensNotFound.kind(), ErrorKind::Invalid);
    assert_eq!(IdentityError::Random.kind(), ErrorKind::Transient);
    let blank = SecretString::from("  ");
    assert_eq!(
        resolve(&p, &none, Some(&blank), &pod("web")).unwrap_err(),
        IdentityError::TokensNotFound
    );

    let bad = SecretString::from(format!(
        "{{\"{WORKLOAD_IDENTITY_AUDIENCE}\": {{\"token\": \"{TOKEN}\""
    ));
    let err = resolve(&p, &none, Some(&bad), &pod("web")).unwrap_err();
    assert!(
        matches!(err, IdentityError::TokensParse { line: 1, .. }),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .starts_with("failed to parse workload identity tokens")
    );
    // A type error must not quote the token.
    let typed = SecretString::from(format!("[\"{TOKEN}\"]"));
    let err = resolve(&p, &none, Some(&typed), &pod("web")).unwrap_err();
    assert!(!format!("{err} {err:?}").contains("eyJ"), "{err}");

    let other = tokens_json("api://AKSIdentityBinding", TOKEN);
    let err = resolve(&p, &none, Some(&other), &pod("web")).unwrap_err();
    assert_eq!(
        err.to_string(),
        "token for audience api://AzureADTokenExchange not found (audiences present: api://AKSIdentityBinding): add the audience to the CSIDriver's tokenRequests"
    );
    let empty_token = tokens_json(WORKLOAD_IDENTITY_AUDIENCE, "");
    assert!(matches!(
        resolve(&p, &none, Some(&empty_token), &pod("web")).unwrap_err(),
        IdentityError::AudienceNotFound { .. }
    ));
    let tokens = tokens_json(WORKLOAD_IDENTITY_AUDIENCE, TOKEN);
    assert_eq!(
        resolve(&p, &none, Some(&tokens), &pod("")).unwrap_err(),
        IdentityError::MissingServiceAccount
    );
}

#[test]
fn workload_identity_falls_back_to_a_complete_service_principal() {
    let p = params(&[("clientID", "client-1")]);
    let sp = secrets(&[("clientid", "sp-client"), ("clientsecret", CLIENT_SECRET)]);
    let r = resolve(&p, &sp, None, &pod("web")).unwrap();
    assert_eq!(r.config.mode(), "service-principal");
    assert_eq!(r.warnings.len(), 1);
    assert!(r.warnings[0].starts_with("clientID is set but there is no token"));
    // Without complete credentials the workload identity error is the one shown.
    let half = secrets(&[("clientid", "sp-client")]);
    assert_eq!(
        resolve(&p, &half, None, &pod("web")).unwrap_err(),
        IdentityError::TokensNotFound
    );
    // Broken tokens JSON never falls back silently.
    let bad = SecretString::from("{");
    assert!(matches!(
        resolve(&p, &sp, Some(&bad), &pod("web")).unwrap_err(),
        IdentityError::TokensParse { .. }
    ));
}

#[test]
fn service_principal_from_node_publish_secret() {
    let p = params(&[]);
    let sp = secrets(&[
        ("ClientID", " sp-client\n"),
        ("CLIENTSECRET", &format!("{CLIENT_SECRET}\n")),
    ]);
    let r = resolve(&p, &sp, None, &pod("web")).unwrap();
    assert_eq!(
        r.config,
        IdentityConfig::ServicePrincipal {
            tenant_id: "tenant-a".into(),
            client_id: "sp-client".into(),
            client_secret: SecretString::from(CLIENT_SECRET),
        }
    );
    match &r.key {
        IdentityKey::ServicePrincipal {
            client_id,
            tenant_id,
            ..
        } => {
            assert_eq!(
                (client_id.as_str(), tenant_id.as_str()),
                ("sp-client", "tenant-a")
            )
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn service_principal_errors() {
    let p = params(&[]);
    let none = BTreeMap::new();
    assert_eq!(
        resolve(&p, &none, None, &pod("web")).unwrap_err(),
        IdentityError::SecretsNotSet
    );
    assert!(
        IdentityError::SecretsNotSet
            .to_string()
            .starts_with("failed to get credentials, nodePublishSecretRef secret is not set")
    );
    // Only the service account tokens in secrets: still no credentials.
    let only_tokens = secrets(&[(SERVICE_ACCOUNT_TOKENS_KEY, "{}")]);
    assert_eq!(
        resolve(&p, &only_tokens, None, &pod("web")).unwrap_err(),
        IdentityError::SecretsNotSet
    );
    let no_id = secrets(&[("clientsecret", CLIENT_SECRET)]);
    let err = resolve(&p, &no_id, None, &pod("web")).unwrap_err();
    assert_eq!(err, IdentityError::MissingClientId);
    assert!(
        err.to_string()
            .starts_with("could not find clientid in secrets")
    );
    let no_secret = secrets(&[("clientid", "x"), ("clientsecret", "  ")]);
    let err = resolve(&p, &no_secret, None, &pod("web")).unwrap_err();
    assert_eq!(err, IdentityError::MissingClientSecret);
    assert!(
        err.to_string()
            .starts_with("could not find clientsecret in secrets")
    );
}

#[test]
fn managed_identity_user_and_system_assigned() {
    let p = params(&[
        ("useVMManagedIdentity", "true"),
        ("userAssignedIdentityID", "uami-1"),
        ("clientID", "ignored"),
    ]);
    let r = resolve(&p, &BTreeMap::new(), None, &pod("web")).unwrap();
    assert_eq!(
        r.config,
        IdentityConfig::ManagedIdentity {
            user_assigned_client_id: Some("uami-1".into())
        }
    );
    assert_eq!(
        r.key,
        IdentityKey::ManagedIdentity {
            node: "node-a".into(),
            identity: "uami-1".into()
        }
    );
    let p = params(&[("useVMManagedIdentity", "true")]);
    let r = resolve(&p, &BTreeMap::new(), None, &pod("web")).unwrap();
    assert_eq!(
        r.config,
        IdentityConfig::ManagedIdentity {
            user_assigned_client_id: None
        }
    );
    assert_eq!(format!("{:?}", r.key), "ManagedIdentity(system on node-a)");
}

#[test]
fn pod_identity_is_deprecated_and_keyed_by_pod() {
    let p = params(&[("usePodIdentity", "true")]);
    let r = resolve(&p, &BTreeMap::new(), None, &pod("web")).unwrap();
    assert_eq!(
        r.config,
        IdentityConfig::PodIdentity {
            pod_name: "web-0".into(),
            pod_namespace: "app".into()
        }
    );
    assert_eq!(
        r.key,
        IdentityKey::PodIdentity {
            pod: "app/web-0".into()
        }
    );
    assert!(r.warnings[0].starts_with("usePodIdentity is deprecated"));
}

#[test]
fn token_proxy_and_missing_pod_info() {
    let p = params(&[("useAzureTokenProxy", "true"), ("clientID", "c")]);
    assert_eq!(
        resolve(&p, &BTreeMap::new(), None, &pod("web")).unwrap_err(),
        IdentityError::TokenProxyUnsupported
    );
    let p = params(&[("useVMManagedIdentity", "true")]);
    let mut bad = pod("web");
    bad.name.clear();
    assert_eq!(
        resolve(&p, &BTreeMap::new(), None, &bad).unwrap_err(),
        IdentityError::MissingPodName
    );
    assert_eq!(
        IdentityError::MissingPodName.to_string().split(':').next(),
        Some("pod name is not provided")
    );
    let mut bad = pod("web");
    bad.namespace = " ".into();
    assert_eq!(
        resolve(&p, &BTreeMap::new(), None, &bad).unwrap_err(),
        IdentityError::MissingPodNamespace
    );
}

#[test]
fn identity_keys_share_only_for_the_same_principal() {
    let wi = |client: &str, sa: &str, tenant: &str| {
        let p = params(&[("clientID", client), ("tenantID", tenant)]);
        let tokens = tokens_json(WORKLOAD_IDENTITY_AUDIENCE, TOKEN);
        resolve(&p, &BTreeMap::new(), Some(&tokens), &pod(sa))
            .unwrap()
            .key
    };
    assert_eq!(wi("c1", "web", "t1"), wi("c1", "web", "t1"));
    assert_ne!(wi("c1", "web", "t1"), wi("c1", "api", "t1"));
    assert_ne!(wi("c1", "web", "t1"), wi("c2", "web", "t1"));
    assert_ne!(wi("c1", "web", "t1"), wi("c1", "web", "t2"));

    let sp = |secret: &str, salt: &IdentityKeySalt| {
        let s = secrets(&[("clientid", "c1"), ("clientsecret", secret)]);
        resolve_identity(
            &params(&[]),
            &IdentityInputs {
                secrets: &s,
                service_account_tokens: None,
                pod: &pod("web"),
                node_name: "n",
            },
            salt,
        )
        .unwrap()
        .key
    };
    let salt_a = IdentityKeySalt::from_bytes(b"a");
    let salt_b = IdentityKeySalt::from_bytes(b"b");
    assert_eq!(sp("s1", &salt_a), sp("s1", &salt_a));
    assert_ne!(sp("s1", &salt_a), sp("s2", &salt_a));
    assert_ne!(sp("s1", &salt_a), sp("s1", &salt_b));
    let random = IdentityKeySalt::random().unwrap();
    assert_ne!(sp("s1", &random), sp("s1", &salt_a));

    let mi = |node: &str| {
        let p = params(&[("useVMManagedIdentity", "true")]);
        resolve_identity(
            &p,
            &IdentityInputs {
                secrets: &BTreeMap::new(),
                service_account_tokens: None,
                pod: &pod("web"),
                node_name: node,
            },
            &salt(),
        )
        .unwrap()
        .key
    };
    assert_eq!(mi("n1"), mi("n1"));
    assert_ne!(mi("n1"), mi("n2"));
}

/// Every config, parameter, key and error value, printed with `{:?}` (and
/// errors also with `{}`), must not contain a token or a client secret.
#[test]
fn debug_output_never_holds_secrets_or_tokens() {
    let mut shown = Vec::new();
    let wi_params = params(&[("clientID", "client-1")]);
    let tokens = tokens_json(WORKLOAD_IDENTITY_AUDIENCE, TOKEN);
    let secret_tokens = secrets(&[(SERVICE_ACCOUNT_TOKENS_KEY, tokens.expose())]);
    let sp_secrets = secrets(&[("clientid", "sp"), ("clientsecret", CLIENT_SECRET)]);
    let p = pod("web");
    let inputs = IdentityInputs {
        secrets: &secret_tokens,
        service_account_tokens: Some(&tokens),
        pod: &p,
        node_name: "n",
    };
    shown.push(format!("{inputs:?}"));
    shown.push(format!("{wi_params:?}"));
    let wi = resolve(&wi_params, &BTreeMap::new(), Some(&tokens), &p).unwrap();
    shown.push(format!("{wi:?} {:?} {:?}", wi.config, wi.key));
    let sp = resolve(&params(&[]), &sp_secrets, None, &p).unwrap();
    shown.push(format!("{sp:?} {:?} {:?}", sp.config, sp.key));
    shown.push(format!("{:?}", salt()));
    shown.push(format!("{sp_secrets:?}"));
    for bad in [
        SecretString::from(format!(
            "{{\"{WORKLOAD_IDENTITY_AUDIENCE}\": 5, \"x\": \"{TOKEN}\""
        )),
        SecretString::from(format!("[\"{TOKEN}\"]")),
        SecretString::from(format!("{{\"{TOKEN}\": {{\"token\": \"{TOKEN}\"}}}}")),
    ] {
        let e = resolve(&wi_params, &BTreeMap::new(), Some(&bad), &p).unwrap_err();
        shown.push(format!("{e} {e:?}"));
    }
    for e in [
        resolve(
            &params(&[]),
            &secrets(&[("clientsecret", CLIENT_SECRET)]),
            None,
            &p,
        )
        .unwrap_err(),
        resolve(
            &params(&[]),
            &secrets(&[("clientid", CLIENT_SECRET)]),
            None,
            &p,
        )
        .unwrap_err(),
    ] {
        shown.push(format!("{e} {e:?}"));
    }
    let all = shown.join("\n");
    assert!(all.contains("SecretString(<redacted>)"), "{all}");
    for needle in [
        TOKEN,
        "eyJ",
        CLIENT_SECRET,
        "clientsecretvalue",
        "Sup3r",
        "test-salt",
    ] {
        assert!(!all.contains(needle), "{needle} leaked in:\n{all}");
    }
}
