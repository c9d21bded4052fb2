//! Every identity mode through the whole path, and pods without access.

use secretfs_e2e::kubelet::{KubeletError, PublishExtras};
use secretfs_e2e::{CounterFilter, Route};

use super::harness::*;

const WORKLOAD_CLIENT: &str = "7c6b5a49-3e2d-4f1a-8b9c-0d1e2f3a4b5c";
const SP_CLIENT: &str = "3f8e2d1c-7b6a-4c5d-9e8f-1a2b3c4d5e6f";
const SP_SECRET: &str = "emulator-test-client-secret";
const NODE_IDENTITY: &str = "5a1d3e0c-6f0e-4c55-9a57-3c2f1b7d9e21";

fn tokens_json(token: &str) -> String {
    format!(
        r#"{{"api://AzureADTokenExchange":{{"token":"{token}","expirationTimestamp":"2099-01-01T00:00:00Z"}}}}"#
    )
}

async fn env() -> Env {
    let objects = one_secret("sql-password", "SECRET_1");
    Env::start(&[
        azure_class("workload", &[("clientID", WORKLOAD_CLIENT)], &objects),
        azure_class("service-principal", &[], &objects),
        azure_class("pod-identity", &[("usePodIdentity", "true")], &objects),
        azure_class(
            "system-assigned",
            &[("useVMManagedIdentity", "true")],
            &objects,
        ),
    ])
    .await
}

async fn read_secret(
    env: &Env,
    pod: &k8s_openapi::api::core::v1::Pod,
    extras: &PublishExtras,
) -> Result<String, KubeletError> {
    let target = env.kubelet.publish(pod, VOLUME, extras).await?;
    let value = std::fs::read_to_string(target.join("SECRET_1")).unwrap();
    env.kubelet.unpublish(pod, VOLUME).await?;
    Ok(value)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workload_identity_with_the_pods_service_account_token() {
    if !fuse_available() {
        return;
    }
    let env = env().await;
    let token = env
        .emulator
        .control()
        .service_account_token("default", "workload-sa")
        .unwrap();
    let pod = pod(
        "44444444-4444-4444-8444-444444444444",
        Some("workload"),
        Some("workload-sa"),
        None,
    );
    let extras = PublishExtras {
        service_account_tokens: Some(tokens_json(&token)),
        ..Default::default()
    };
    assert_eq!(
        read_secret(&env, &pod, &extras).await.unwrap(),
        "Sql-Passw0rd-from-kv-demo"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workload_identity_of_an_unfederated_service_account_is_refused() {
    if !fuse_available() {
        return;
    }
    let env = env().await;
    let token = env
        .emulator
        .control()
        .service_account_token("default", "other-sa")
        .unwrap();
    let pod = pod(
        "55555555-5555-4555-8555-555555555555",
        Some("workload"),
        Some("other-sa"),
        None,
    );
    let extras = PublishExtras {
        service_account_tokens: Some(tokens_json(&token)),
        ..Default::default()
    };
    let target = env.kubelet.target_path(&pod, VOLUME);
    let err = read_secret(&env, &pod, &extras).await.unwrap_err();
    let KubeletError::Driver { code, message } = err else {
        panic!("{err}")
    };
    assert_eq!(code, tonic::Code::PermissionDenied, "{message}");
    assert!(
        message.contains("sql-password"),
        "names the object: {message}"
    );
    assert!(!message.contains(&token), "no token in the error");
    assert!(!is_mounted(&target));
}

/// `useVMManagedIdentity` without `userAssignedIdentityID`: IMDS is asked
/// with no selector and answers for the VM's default identity (here the
/// node's only managed identity, as Azure does without a system-assigned one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_nodes_default_managed_identity_without_a_client_id() {
    if !fuse_available() {
        return;
    }
    let env = env().await;
    let pod = pod(
        "77777777-7777-4777-8777-777777777777",
        Some("system-assigned"),
        None,
        None,
    );
    env.emulator.control().reset_counters();
    assert_eq!(
        read_secret(&env, &pod, &PublishExtras::default())
            .await
            .unwrap(),
        "Sql-Passw0rd-from-kv-demo"
    );
    let control = env.emulator.control();
    let imds = CounterFilter::route(Route::ImdsToken);
    assert_eq!(control.count(&imds), 1, "one IMDS token request");
    assert_eq!(
        control.count(&imds.identity(NODE_IDENTITY).status(200)),
        1,
        "answered for the node's identity"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workload_identity_without_a_token_says_how_to_fix_it() {
    if !fuse_available() {
        return;
    }
    let env = env().await;
    let pod = pod(
        "66666666-6666-4666-8666-666666666666",
        Some("workload"),
        Some("workload-sa"),
        None,
    );
    let target = env.kubelet.target_path(&pod, VOLUME);
    let err = read_secret(&env, &pod, &PublishExtras::default())
        .await
        .unwrap_err();
    let KubeletError::Driver { code, message } = err else {
        panic!("{err}")
    };
    assert_eq!(code, tonic::Code::InvalidArgument, "{message}");
    assert!(
        message.contains("api://AzureADTokenExchange") && message.contains("tokenRequests"),
        "names the audience and the CSIDriver field to fix: {message}"
    );
    assert!(!is_mounted(&target), "nothing is mounted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_principal_from_the_node_publish_secret() {
    if !fuse_available() {
        return;
    }
    let env = env().await;
    let first = pod(
        "77777777-7777-4777-8777-777777777777",
        Some("service-principal"),
        None,
        None,
    );
    let mut extras = PublishExtras::default();
    extras.secrets.insert("clientid".into(), SP_CLIENT.into());
    extras
        .secrets
        .insert("clientsecret".into(), SP_SECRET.into());
    assert_eq!(
        read_secret(&env, &first, &extras).await.unwrap(),
        "Sql-Passw0rd-from-kv-demo"
    );

    extras
        .secrets
        .insert("clientsecret".into(), "wrong-secret".into());
    let pod = pod(
        "77777777-7777-4777-8777-777777777778",
        Some("service-principal"),
        None,
        None,
    );
    let err = read_secret(&env, &pod, &extras).await.unwrap_err();
    let KubeletError::Driver { message, .. } = err else {
        panic!("{err}")
    };
    assert!(
        !message.contains("wrong-secret"),
        "no client secret in the error: {message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_identity_through_nmi() {
    if !fuse_available() {
        return;
    }
    let env = env().await;
    let pod = pod(
        "88888888-8888-4888-8888-888888888888",
        Some("pod-identity"),
        None,
        None,
    );
    assert_eq!(
        read_secret(&env, &pod, &PublishExtras::default())
            .await
            .unwrap(),
        "Sql-Passw0rd-from-kv-demo"
    );
}
