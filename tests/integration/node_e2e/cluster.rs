//! The seed case with a (fake) Kubernetes API server: classes come from the
//! API, the pod status and the Secret `sqlserver` (key `dbpassword`) are
//! written at publish and updated after a rotation.

use base64::Engine;
use secretfs_e2e::fake_apiserver::{FakeApiServer, object_path};
use secretfs_e2e::kubelet::PublishExtras;
use serde_json::{Value, json};

use super::harness::*;

const UID: &str = "5e5e5e5e-0000-4000-8000-5e5e5e5e5e5e";

fn b64(value: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(value)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seed_secret_is_synced_and_follows_rotation() {
    if !fuse_available() {
        return;
    }
    let api = FakeApiServer::start().await.unwrap();
    // The API server serves the v1alpha1 manifest as v1 too.
    let mut class: Value = serde_yaml::from_str(SEED_CLASS).unwrap();
    class["apiVersion"] = json!("secrets-store.csi.x-k8s.io/v1");
    api.put("secretproviderclasses", class);
    let mut pod_object: Value = serde_yaml::from_str(SEED_POD).unwrap();
    pod_object["metadata"]["uid"] = json!(UID);
    pod_object["metadata"]["name"] = json!(format!("pod-{UID}"));
    pod_object["metadata"]["ownerReferences"] = json!([{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "nginx-5d8c", "uid": "rs-uid", "controller": true}]);
    api.put("pods", pod_object);
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = api.write_kubeconfig(dir.path()).unwrap();

    let env = Env::start_with(&[], Some(&kubeconfig)).await;
    // Ready once the class watch has listed.
    for _ in 0..100 {
        if env.http_get("/readyz").0 == 200 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(env.http_get("/readyz").0, 200, "the class watch listed");

    let pod = pod(UID, None, None, None);
    let target = env
        .kubelet
        .publish(&pod, VOLUME, &PublishExtras::default())
        .await
        .unwrap();
    assert_eq!(
        std::fs::read_to_string(target.join("SECRET_1")).unwrap(),
        "Sql-Passw0rd-from-kv-demo"
    );

    let secret_path = object_path("v1", "secrets", "default", "sqlserver");
    let secret = api
        .get(&secret_path)
        .expect("Secret sqlserver written at publish");
    assert_eq!(secret["type"], "Opaque");
    assert_eq!(
        secret["data"]["dbpassword"],
        b64("Sql-Passw0rd-from-kv-demo")
    );
    assert_eq!(
        secret["metadata"]["labels"]["secrets-store.csi.k8s.io/managed"],
        "true"
    );
    assert_eq!(
        secret["metadata"]["ownerReferences"][0]["kind"],
        "ReplicaSet"
    );
    let status_path = object_path(
        "secrets-store.csi.x-k8s.io/v1",
        "secretproviderclasspodstatuses",
        "default",
        &format!("pod-{UID}-default-azure-kvname"),
    );
    let status = api.get(&status_path).expect("pod status written");
    assert_eq!(status["status"]["mounted"], true);
    assert_eq!(status["status"]["objects"][0]["id"], "secret/sql-password");
    let applies = |path: &str| {
        api.requests()
            .iter()
            .filter(|r| r.method == "PATCH" && r.path == path)
            .count()
    };
    assert_eq!((applies(&secret_path), applies(&status_path)), (1, 1));

    // A republish writes nothing.
    env.kubelet
        .publish(&pod, VOLUME, &PublishExtras::default())
        .await
        .unwrap();
    assert_eq!((applies(&secret_path), applies(&status_path)), (1, 1));

    // Rotation: the file, the Secret and the status follow.
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
    let secret = api.get(&secret_path).unwrap();
    assert_eq!(secret["data"]["dbpassword"], b64("Sql-Passw0rd-v2"));
    assert_eq!((applies(&secret_path), applies(&status_path)), (2, 2));
    let rotation_event = api.requests().into_iter().any(|r| {
        r.method == "POST"
            && r.path.contains("events")
            && r.body.to_string().contains("MountRotationComplete")
    });
    assert!(rotation_event, "an event tells the pod about the rotation");
    assert!(
        !api.requests()
            .iter()
            .any(|r| r.path.contains("events") && r.body.to_string().contains("Sql-Passw0rd")),
        "no value in events"
    );
    env.kubelet.unpublish(&pod, VOLUME).await.unwrap();
}
