//! The seed case on the real kube-apiserver (`crate::real_kube`): the
//! seed's v1alpha1 SecretProviderClass applied unchanged (the API server
//! serves it as v1 too), the seed pod; the pod status and the Secret
//! `sqlserver` (key `dbpassword`) are written at publish and follow a
//! rotation; the pod gets a rotation event with no value in it.

use std::time::Duration;

use k8s_openapi::api::events::v1::Event;
use secretfs_e2e::kubelet::PublishExtras;

use super::harness::*;
use crate::real_kube::RealKube;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seed_secret_is_synced_and_follows_rotation() {
    if !fuse_available() {
        return;
    }
    let kube = RealKube::namespace("seed").await;
    kube.apply(SEED_CLASS).await;
    let pod = kube
        .create_pod(SEED_POD, "nginx-secrets-store-inline")
        .await;
    let env = Env::start_with(&[], Some(&kube.kubeconfig)).await;
    // Ready once the class watch has listed.
    kube.until(
        Duration::from_secs(20),
        "the class watch listed",
        async || env.http_get("/readyz").0 == 200,
    )
    .await;

    let target = env
        .kubelet
        .publish(&pod, VOLUME, &PublishExtras::default())
        .await
        .unwrap();
    assert_eq!(
        std::fs::read_to_string(target.join("SECRET_1")).unwrap(),
        "Sql-Passw0rd-from-kv-demo"
    );

    let secret = kube
        .secrets()
        .get("sqlserver")
        .await
        .expect("written at publish");
    assert_eq!(secret.type_.as_deref(), Some("Opaque"));
    assert_eq!(
        secret.data.as_ref().unwrap()["dbpassword"].0,
        b"Sql-Passw0rd-from-kv-demo"
    );
    assert_eq!(
        secret.metadata.labels.as_ref().unwrap()["secrets-store.csi.k8s.io/managed"],
        "true"
    );
    let status_name = format!("nginx-secrets-store-inline-{}-azure-kvname", kube.namespace);
    let status = kube
        .statuses()
        .get(&status_name)
        .await
        .expect("pod status written");
    assert_eq!(status.data["status"]["mounted"], true);
    assert_eq!(
        status.data["status"]["podName"],
        "nginx-secrets-store-inline"
    );
    assert_eq!(
        status.data["status"]["objects"][0]["id"],
        "secret/sql-password"
    );
    let owner = &secret.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.uid.as_str()),
        (
            "SecretProviderClassPodStatus",
            status.metadata.uid.as_deref().unwrap()
        ),
        "a bare pod's Secret is owned by its status object"
    );
    let status_owner = &status.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(Some(&status_owner.uid), pod.metadata.uid.as_ref());

    // A republish changes nothing.
    env.kubelet
        .publish(&pod, VOLUME, &PublishExtras::default())
        .await
        .unwrap();
    let unchanged = kube.secrets().get("sqlserver").await.unwrap();
    assert_eq!(
        unchanged.metadata.resource_version,
        secret.metadata.resource_version
    );

    // Rotation: the file, the Secret and the status follow.
    let version = status.data["status"]["objects"][0]["version"].clone();
    env.emulator
        .control()
        .set_secret("kv-demo", "sql-password", "Sql-Passw0rd-v2")
        .unwrap();
    let (ok, out) = env.admin(&["refresh"]);
    assert!(ok, "{out}");
    assert_eq!(
        std::fs::read_to_string(target.join("SECRET_1")).unwrap(),
        "Sql-Passw0rd-v2"
    );
    let secret = kube.secrets().get("sqlserver").await.unwrap();
    assert_eq!(secret.data.unwrap()["dbpassword"].0, b"Sql-Passw0rd-v2");
    let status = kube.statuses().get(&status_name).await.unwrap();
    assert_ne!(status.data["status"]["objects"][0]["version"], version);

    let events = kube::Api::<Event>::namespaced(kube.client.clone(), &kube.namespace);
    kube.until(Duration::from_secs(10), "the rotation event", async || {
        events
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .iter()
            .any(|e| e.reason.as_deref() == Some("MountRotationComplete"))
    })
    .await;
    for event in events.list(&Default::default()).await.unwrap().items {
        let text = serde_json::to_string(&event).unwrap();
        assert!(!text.contains("Sql-Passw0rd"), "no value in events: {text}");
    }
    env.kubelet.unpublish(&pod, VOLUME).await.unwrap();
    kube.delete().await;
}
