//! Secrets never leak: the riskiest paths at `SECRETFS_LOG=trace` (every
//! crate), then no secret value, token or client secret in any log line,
//! error, event, status or metric (the harness scans them all; see
//! `harness.rs`). And the scanner itself, on synthetic lines.

use std::time::Duration;

use secretfs_e2e::fake_apiserver::FakeApiServer;
use secretfs_e2e::kubelet::{KubeletError, PublishExtras};
use secretfs_e2e::secrets_seen::{LeakScanner, SecretKind, SeenSecret};
use secretfs_e2e::{CertificateVersionSeed, FaultKind, FaultSpec, Route};
use serde_json::{Value, json};

use super::harness::*;

const WORKLOAD_CLIENT: &str = "7c6b5a49-3e2d-4f1a-8b9c-0d1e2f3a4b5c";
/// A client id Entra does not know: the token exchange fails.
const UNKNOWN_CLIENT: &str = "0f0e0d0c-0b0a-4909-8807-060504030201";
const SP_CLIENT: &str = "3f8e2d1c-7b6a-4c5d-9e8f-1a2b3c4d5e6f";
const SP_SECRET: &str = "emulator-test-client-secret";
const WRONG_SP_SECRET: &str = "a-wrong-client-secret-of-the-test";
const NODE_IDENTITY: &str = "5a1d3e0c-6f0e-4c55-9a57-3c2f1b7d9e21";
const ROTATED: &str = "Rotated-Sql-Passw0rd-v2";

fn tokens_json(token: &str) -> String {
    format!(
        r#"{{"api://AzureADTokenExchange":{{"token":"{token}","expirationTimestamp":"2099-01-01T00:00:00Z"}}}}"#
    )
}

/// A class with the node's managed identity.
fn node_class(name: &str, extra: &[(&str, &str)], objects: &str) -> String {
    let mut params = vec![
        ("useVMManagedIdentity", "true"),
        ("userAssignedIdentityID", NODE_IDENTITY),
    ];
    params.extend_from_slice(extra);
    azure_class(name, &params, objects)
}

/// `yaml` with `secretObjects` (one Secret `name`, key `key` from `object`).
fn with_secret_object(yaml: &str, name: &str, object: &str, key: &str) -> Value {
    let mut class: Value = serde_yaml::from_str(yaml).unwrap();
    class["spec"]["secretObjects"] = json!([{
        "secretName": name,
        "type": "Opaque",
        "data": [{"objectName": object, "key": key}],
    }]);
    class
}

fn pod_object(uid: &str) -> Value {
    let mut pod: Value = serde_yaml::from_str(SEED_POD).unwrap();
    pod["metadata"]["uid"] = json!(uid);
    pod["metadata"]["name"] = json!(format!("pod-{uid}"));
    pod
}

fn uid(i: u32) -> String {
    format!("1eaf{i:04x}-0000-4000-8000-00000000{i:04x}")
}

async fn publish_fails(env: &Env, uid: &str, class: &str, extras: &PublishExtras) -> String {
    let pod = pod(uid, Some(class), Some("workload-sa"), None);
    match env.kubelet.publish(&pod, VOLUME, extras).await {
        Err(KubeletError::Driver { message, .. }) => message,
        other => panic!("{class}: the publish should fail: {other:?}"),
    }
}

/// Workload identity (a service-account token), a service principal from
/// nodePublishSecretRef, a failed token exchange, a vault 403 and 401, a
/// certificate with its private key, a lazy volume, a rotation, a failed
/// rotation, a sync with Events and a failed sync: nothing secret anywhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_riskiest_paths_leak_nothing_at_trace() {
    if !fuse_available() {
        return;
    }
    let api = FakeApiServer::start().await.unwrap();
    let objects = one_secret("sql-password", "SECRET_1");
    let mut seed: Value = serde_yaml::from_str(SEED_CLASS).unwrap();
    seed["apiVersion"] = json!("secrets-store.csi.x-k8s.io/v1");
    let classes = [
        seed,
        serde_yaml::from_str(&azure_class(
            "workload",
            &[("clientID", WORKLOAD_CLIENT)],
            &objects,
        ))
        .unwrap(),
        serde_yaml::from_str(&azure_class(
            "workload-unknown",
            &[("clientID", UNKNOWN_CLIENT)],
            &objects,
        ))
        .unwrap(),
        with_secret_object(
            &azure_class("service-principal", &[], &objects),
            "sp-synced",
            "SECRET_1",
            "password",
        ),
        serde_yaml::from_str(&node_class(
            "denied",
            &[],
            &one_secret("denied-secret", "DENIED"),
        ))
        .unwrap(),
        serde_yaml::from_str(&node_class(
            "challenged",
            &[],
            &one_secret("challenged-secret", "CHALLENGED"),
        ))
        .unwrap(),
        serde_yaml::from_str(&node_class(
            "lazy",
            &[("secretfs.io/fetch", "lazy")],
            &objects,
        ))
        .unwrap(),
        serde_yaml::from_str(&node_class("tls", &[], &one_secret("tls-cert", "tls.pem"))).unwrap(),
        with_secret_object(
            &node_class("bad-sync", &[], &objects),
            "never-written",
            "NO_SUCH_FILE",
            "value",
        ),
    ];
    for class in classes {
        api.put("secretproviderclasses", class);
    }
    for i in 0..16 {
        api.put("pods", pod_object(&uid(i)));
    }
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = api.write_kubeconfig(dir.path()).unwrap();
    let env = Env::start_with(&[], Some(&kubeconfig)).await;
    let control = env.emulator.control().clone();
    for (name, value) in [
        ("denied-secret", "Denied-Secret-Value-0001"),
        ("challenged-secret", "Challenged-Secret-Value-0002"),
    ] {
        control.set_secret("kv-demo", name, value).unwrap();
    }
    control
        .add_certificate_version(
            "kv-demo",
            "tls-cert",
            Some(&CertificateVersionSeed {
                content_type: Some("application/x-pem-file".into()),
                dns_names: vec!["leaks.test".into()],
                ..Default::default()
            }),
        )
        .unwrap();
    control.add_fault(
        FaultSpec::new(FaultKind::Forbidden {
            inner_code: "ForbiddenByPolicy".into(),
            message: None,
        })
        .object("denied-secret"),
    );
    control.add_fault(FaultSpec::new(FaultKind::ClaimsChallenge).object("challenged-secret"));
    for _ in 0..100 {
        if env.http_get("/readyz").0 == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The node's managed identity, synced to a Secret (pod status, Secret).
    let seed_pod = pod(&uid(0), None, None, None);
    let target = env
        .kubelet
        .publish(&seed_pod, VOLUME, &PublishExtras::default())
        .await
        .unwrap();
    assert_eq!(
        std::fs::read_to_string(target.join("SECRET_1")).unwrap(),
        "Sql-Passw0rd-from-kv-demo"
    );

    // Workload identity with the pod's service-account token.
    let sa_token = control
        .service_account_token("default", "workload-sa")
        .unwrap();
    let workload = PublishExtras {
        service_account_tokens: Some(tokens_json(&sa_token)),
        ..Default::default()
    };
    let workload_pod = pod(&uid(1), Some("workload"), Some("workload-sa"), None);
    let target = env
        .kubelet
        .publish(&workload_pod, VOLUME, &workload)
        .await
        .unwrap();
    assert_eq!(
        std::fs::read_to_string(target.join("SECRET_1")).unwrap(),
        "Sql-Passw0rd-from-kv-demo"
    );

    // A failed token exchange: Entra does not know the client id.
    let message = publish_fails(&env, &uid(2), "workload-unknown", &workload).await;
    assert!(message.contains("sql-password"), "{message}");

    // A service principal from nodePublishSecretRef, synced; then a wrong
    // client secret.
    let mut sp = PublishExtras::default();
    sp.secrets.insert("clientid".into(), SP_CLIENT.into());
    sp.secrets.insert("clientsecret".into(), SP_SECRET.into());
    let sp_pod = pod(&uid(3), Some("service-principal"), None, None);
    let target = env.kubelet.publish(&sp_pod, VOLUME, &sp).await.unwrap();
    assert_eq!(
        std::fs::read_to_string(target.join("SECRET_1")).unwrap(),
        "Sql-Passw0rd-from-kv-demo"
    );
    env.forbid(WRONG_SP_SECRET);
    sp.secrets
        .insert("clientsecret".into(), WRONG_SP_SECRET.into());
    publish_fails(&env, &uid(4), "service-principal", &sp).await;

    // The vault says 403, then 401 (a claims challenge).
    publish_fails(&env, &uid(5), "denied", &PublishExtras::default()).await;
    publish_fails(&env, &uid(6), "challenged", &PublishExtras::default()).await;

    // A certificate's private key, in a PEM file.
    let tls_pod = pod(&uid(7), Some("tls"), None, None);
    let target = env
        .kubelet
        .publish(&tls_pod, VOLUME, &PublishExtras::default())
        .await
        .unwrap();
    let pem = std::fs::read_to_string(target.join("tls.pem")).unwrap();
    assert!(pem.contains("PRIVATE KEY"), "the key is mounted");

    // A lazy volume: fetched at the first read.
    let lazy_pod = pod(&uid(8), Some("lazy"), None, None);
    let target = env
        .kubelet
        .publish(&lazy_pod, VOLUME, &PublishExtras::default())
        .await
        .unwrap();
    assert_eq!(
        std::fs::read_to_string(target.join("SECRET_1")).unwrap(),
        "Sql-Passw0rd-from-kv-demo"
    );

    // A sync that fails (no such file): a warning Event.
    let bad_sync_pod = pod(&uid(9), Some("bad-sync"), None, None);
    env.kubelet
        .publish(&bad_sync_pod, VOLUME, &PublishExtras::default())
        .await
        .unwrap();

    // A rotation that fails, then one that works: Events, Secrets, statuses.
    let fault = control.add_fault(
        FaultSpec::new(FaultKind::Forbidden {
            inner_code: "ForbiddenByPolicy".into(),
            message: None,
        })
        .route(Route::SecretGet)
        .object("sql-password"),
    );
    control
        .set_secret("kv-demo", "sql-password", "Failed-Rotation-Value-01")
        .unwrap();
    env.admin(&["refresh"]);
    control.remove_fault(fault);
    control
        .set_secret("kv-demo", "sql-password", ROTATED)
        .unwrap();
    let (ok, out) = env.admin(&["refresh"]);
    assert!(out.contains("replaced"), "{ok} {out}");
    for pod in [&seed_pod, &workload_pod, &sp_pod, &lazy_pod] {
        let file = env.kubelet.target_path(pod, VOLUME).join("SECRET_1");
        assert_eq!(std::fs::read_to_string(file).unwrap(), ROTATED);
    }

    // What the node told the API server: Events of both kinds, Secrets.
    let requests = api.requests();
    let event = |reason: &str| {
        requests
            .iter()
            .any(|r| r.path.contains("/events") && r.body.to_string().contains(reason))
    };
    assert!(event("MountRotationComplete"), "a rotation Event");
    assert!(event("FailedToCreateSecret"), "a failed-sync Event");
    let synced = api
        .get(&secretfs_e2e::fake_apiserver::object_path(
            "v1",
            "secrets",
            "default",
            "sqlserver",
        ))
        .expect("the seed Secret");
    assert!(synced["data"]["dbpassword"].is_string());

    // Every kind of secret is looked for.
    let forbidden = env.forbidden();
    let has = |kind: SecretKind, value: &str| {
        forbidden
            .iter()
            .any(|s| s.kind == kind && (value.is_empty() || s.value == value))
    };
    assert!(has(SecretKind::SecretValue, "Sql-Passw0rd-from-kv-demo"));
    assert!(has(SecretKind::SecretValue, ROTATED));
    assert!(has(SecretKind::PrivateKey, ""));
    assert!(has(SecretKind::AccessToken, ""));
    assert!(has(SecretKind::ServiceAccountToken, &sa_token));
    assert!(has(SecretKind::ClientAssertion, &sa_token));
    assert!(has(SecretKind::ClientSecret, SP_SECRET));
    assert!(has(SecretKind::ClientSecret, WRONG_SP_SECRET));
    assert!(
        has(SecretKind::Credential, WRONG_SP_SECRET),
        "kubelet sent it"
    );
    assert!(has(SecretKind::Credential, "fake-api-token"));
    let tokens = forbidden
        .iter()
        .filter(|s| s.kind == SecretKind::AccessToken)
        .count();
    assert!(tokens >= 3, "IMDS, workload and SP tokens: {tokens}");

    // The check is live: it reads every source, the node logs at trace,
    // and a token in a line is reported, masked.
    let texts = env.scanned_texts(&env.final_outputs());
    for source in [
        "secretfs refresh",
        "GET /readyz",
        "GET /metrics (last)",
        "secretfs status --json (last)",
        "an error the kubelet got",
        "API POST /apis/events.k8s.io/v1/namespaces/default/events",
        "API PATCH /api/v1/namespaces/default/secrets/",
        "API PATCH /apis/secrets-store.csi.x-k8s.io/v1/namespaces/default/secretproviderclasspodstatuses/",
    ] {
        assert!(
            texts.iter().any(|(s, _)| s.starts_with(source)),
            "{source} is scanned"
        );
    }
    assert!(
        !texts
            .iter()
            .any(|(s, t)| s.contains("/secrets/") && t.contains("dbpassword")),
        "a Secret's data is not scanned"
    );
    if let Some(log) = env.node_log() {
        let text = std::fs::read_to_string(log).unwrap();
        assert!(text.contains("TRACE"), "the node logs at trace");
        let names = LeakScanner::new(&[SeenSecret::new(SecretKind::Credential, "tls-cert")]);
        assert!(
            !names.scan("node.log", &text).is_empty(),
            "the node log is scanned"
        );
    }
    let canary = env.find_leaks(&[(
        "synthetic".to_owned(),
        format!("fine\nTRACE authorization: Bearer {sa_token}\n"),
    )]);
    assert_eq!(canary.len(), 1, "{}", report(&canary));
    assert_eq!(canary[0].source, "synthetic");
    assert!(!canary[0].masked.contains(&sa_token));

    env.assert_no_leaks();
    for pod in [
        &seed_pod,
        &workload_pod,
        &sp_pod,
        &tls_pod,
        &lazy_pod,
        &bad_sync_pod,
    ] {
        env.kubelet.unpublish(pod, VOLUME).await.unwrap();
    }
}

/// The scanner finds a secret in every form it may take, reports the line
/// masked, and ignores short values.
#[test]
fn the_scanner_reports_secrets_in_synthetic_lines_masked() {
    let value = "Sql-Passw0rd-from-kv-demo";
    let token = "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.eyJhdWQiOiJodHRwczovL3ZhdWx0LmF6dXJlLm5ldCJ9.U2lnbmF0dXJlT2ZBblRva2VuVGhhdE11c3ROb3RMZWFr";
    let secrets = [
        SeenSecret::new(SecretKind::SecretValue, value),
        SeenSecret::new(SecretKind::AccessToken, token),
        SeenSecret::new(SecretKind::ClientSecret, SP_SECRET),
        SeenSecret::new(SecretKind::SecretValue, "demo"),
    ];
    let scanner = LeakScanner::new(&secrets);
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(value);
    let hex: String = value.bytes().map(|b| format!("{b:02x}")).collect();
    let signature = token.rsplit('.').next().unwrap();
    let log = [
        "2026-01-01T00:00:00Z TRACE hyper: parsed 12 headers",
        &format!("2026-01-01T00:00:01Z DEBUG secretfs: fetched value={value:?}"),
        "2026-01-01T00:00:02Z INFO secretfs: mounted demo",
        &format!(r#"{{"note":"content {b64}","reason":"MountRotationComplete"}}"#),
        &format!("2026-01-01T00:00:03Z TRACE h2: header authorization: Bearer {token}"),
        &format!("2026-01-01T00:00:04Z TRACE reqwest: body client_secret={SP_SECRET}&x=1"),
        &format!("2026-01-01T00:00:05Z TRACE bytes: {hex}"),
        &format!("2026-01-01T00:00:06Z TRACE truncated: …{signature}"),
    ]
    .join("\n");
    let leaks = scanner.scan("synthetic.log", &log);
    let lines: Vec<usize> = leaks.iter().map(|l| l.line).collect();
    assert_eq!(lines, [2, 4, 5, 6, 7, 8], "{}", report(&leaks));
    let all = report(&leaks);
    for secret in [value, token, SP_SECRET, &b64, &hex, signature] {
        assert!(!all.contains(secret), "masked: {all}");
    }
    assert!(all.contains("«secret value (plain)»"), "{all}");
    assert!(all.contains("«access token (plain)»"), "{all}");
    assert!(all.contains("synthetic.log:6: client secret"), "{all}");
    assert_eq!(
        scanner.mask("client_secret=emulator-test-client-secret"),
        "client_secret=«client secret (plain)»"
    );
}
