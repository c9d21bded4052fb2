//! Sync to Kubernetes against tower-test API-server scenarios: each write's
//! method, URI and body are checked, and the scenarios end with a timeout so
//! a missing or extra call fails the test.

use std::sync::Arc;
use std::time::Duration;

use http::{Method, Request, Response};
use kube::client::Body;
use secretfs::node::sync::{SyncError, SyncInput, Syncer};
use secretfs::provider::{FileMode, MountedFile, ObjectVersion, PodRef};
use secretfs::spc::{SecretObject, SecretObjectData};
use secretfs_secrets::SecretBytes;
use serde_json::{Value, json};
use tower_test::mock::{Handle, pair};

mod driver;
mod lifecycle;
mod owners;
mod scenarios;

type ApiHandle = Handle<Request<Body>, Response<Body>>;

/// The target path kubelet gives the pod's volume.
const TARGET: &str =
    "/var/lib/kubelet/pods/7f3c/volumes/kubernetes.io~csi/secrets-store-inline/mount";

fn pod() -> PodRef {
    PodRef {
        name: "nginx-secrets-store-inline".into(),
        namespace: "default".into(),
        uid: "7f3c1b2a-0d4e-4f5a-9b6c-8d7e6f5a4b3c".into(),
        service_account: "default".into(),
    }
}

fn files(value: &[u8]) -> Vec<MountedFile> {
    vec![MountedFile {
        path: "SECRET_1".into(),
        mode: FileMode::DEFAULT,
        contents: Arc::new(SecretBytes::from_slice(value)),
        object_id: "secret/sql-password".into(),
    }]
}

fn seed_secret_objects(object_name: &str) -> Vec<SecretObject> {
    vec![SecretObject {
        secret_name: "sqlserver".into(),
        secret_type: "Opaque".into(),
        labels: [("app".to_owned(), "web".to_owned())].into(),
        data: vec![SecretObjectData {
            object_name: object_name.into(),
            key: "dbpassword".into(),
        }],
        ..Default::default()
    }]
}

fn versions(v: &str) -> Vec<ObjectVersion> {
    vec![ObjectVersion {
        id: "secret/sql-password".into(),
        version: v.into(),
    }]
}

async fn expect(
    handle: &mut ApiHandle,
    method: Method,
    path: &str,
    reply: Value,
) -> (String, Value) {
    let (request, send) = tokio::time::timeout(Duration::from_secs(5), handle.next_request())
        .await
        .unwrap_or_else(|_| panic!("expected {method} {path}"))
        .expect("service dropped");
    assert_eq!(request.method(), method, "{}", request.uri());
    assert_eq!(request.uri().path(), path);
    let query = request.uri().query().unwrap_or("").to_owned();
    let bytes = request.into_body().collect_bytes().await.unwrap();
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap()
    };
    send.send_response(
        Response::builder()
            .body(Body::from(reply.to_string().into_bytes()))
            .unwrap(),
    );
    (query, body)
}

async fn expect_nothing(handle: &mut ApiHandle) {
    if let Ok(Some((request, _))) =
        tokio::time::timeout(Duration::from_millis(200), handle.next_request()).await
    {
        panic!("unexpected {} {}", request.method(), request.uri());
    }
}

const STATUS_PATH: &str = "/apis/secrets-store.csi.x-k8s.io/v1/namespaces/default/secretproviderclasspodstatuses/nginx-secrets-store-inline-default-azure-kvname";
const SECRET_PATH: &str = "/api/v1/namespaces/default/secrets/sqlserver";
const POD_PATH: &str = "/api/v1/namespaces/default/pods/nginx-secrets-store-inline";

fn status_reply() -> Value {
    json!({"apiVersion": "secrets-store.csi.x-k8s.io/v1", "kind": "SecretProviderClassPodStatus",
           "metadata": {"name": "nginx-secrets-store-inline-default-azure-kvname", "namespace": "default", "uid": "status-uid"}})
}

fn pod_reply(owned: bool) -> Value {
    let owners = if owned {
        json!([{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-5d8c", "uid": "rs-uid", "controller": true}])
    } else {
        json!([])
    };
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "nginx-secrets-store-inline", "namespace": "default",
           "uid": "7f3c1b2a-0d4e-4f5a-9b6c-8d7e6f5a4b3c", "ownerReferences": owners}})
}

fn secret_reply() -> Value {
    json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "sqlserver", "namespace": "default"}})
}

#[tokio::test]
async fn the_seed_secret_is_applied_once_and_again_only_after_rotation() {
    let (service, mut handle) = pair::<Request<Body>, Response<Body>>();
    let syncer = Syncer::new(kube::Client::new(service, "default"), "node-1");
    let pod = pod();
    let objects = seed_secret_objects("SECRET_1");
    let task = {
        let files = files(b"Sql-Passw0rd");
        let versions = versions("v1");
        let pod = pod.clone();
        let objects = objects.clone();
        tokio::spawn(async move {
            let input = SyncInput {
                pod: &pod,
                class: "azure-kvname",
                target: TARGET,
                secret_objects: &objects,
                files: &files,
                versions: &versions,
            };
            let first = syncer.sync(input).await.unwrap();
            let again = syncer.sync(input).await.unwrap();
            (syncer, first, again)
        })
    };

    let (query, status) = expect(&mut handle, Method::PATCH, STATUS_PATH, status_reply()).await;
    assert!(
        query.contains("fieldManager=secretfs") && query.contains("force=true"),
        "{query}"
    );
    assert_eq!(
        status["metadata"]["labels"]["internal.secrets-store.csi.k8s.io/node-name"],
        "node-1"
    );
    assert_eq!(status["metadata"]["ownerReferences"][0]["kind"], "Pod");
    assert_eq!(status["status"]["mounted"], true);
    assert_eq!(
        status["status"]["objects"],
        json!([{"id": "secret/sql-password", "version": "v1"}])
    );
    // the Objects printer column of the chart's CRD
    assert_eq!(status["status"]["objectCount"], 1);
    expect(&mut handle, Method::GET, POD_PATH, pod_reply(true)).await;
    let (query, secret) = expect(&mut handle, Method::PATCH, SECRET_PATH, secret_reply()).await;
    assert!(
        query.contains("fieldManager=secretfs-node-1") && query.contains("force=true"),
        "the node's own field manager: {query}"
    );
    assert_eq!(secret["type"], "Opaque");
    assert_eq!(
        secret["data"]["dbpassword"], "U3FsLVBhc3N3MHJk",
        "base64 of the value"
    );
    assert_eq!(
        secret["metadata"]["labels"]["secrets-store.csi.k8s.io/managed"],
        "true"
    );
    assert_eq!(secret["metadata"]["labels"]["app"], "web");
    assert_eq!(
        secret["metadata"]["ownerReferences"][0]["kind"], "ReplicaSet",
        "owned by the pod's owner"
    );
    expect_nothing(&mut handle).await;
    let (syncer, first, again) = task.await.unwrap();
    assert_eq!((first, again), (2, 0), "an unchanged volume writes nothing");

    // A rotation: new version and value → status and Secret again (the
    // pod's owners are known: not read again).
    let task = tokio::spawn(async move {
        let (files, versions) = (files(b"rotated"), versions("v2"));
        let input = SyncInput {
            pod: &pod,
            class: "azure-kvname",
            target: TARGET,
            secret_objects: &objects,
            files: &files,
            versions: &versions,
        };
        syncer.sync(input).await.unwrap()
    });
    let (_, status) = expect(&mut handle, Method::PATCH, STATUS_PATH, status_reply()).await;
    assert_eq!(status["status"]["objects"][0]["version"], "v2");
    assert_eq!(status["status"]["objectCount"], 1);
    let (_, secret) = expect(&mut handle, Method::PATCH, SECRET_PATH, secret_reply()).await;
    assert_eq!(secret["data"]["dbpassword"], "cm90YXRlZA==");
    assert_eq!(secret["metadata"]["ownerReferences"][0]["uid"], "rs-uid");
    expect_nothing(&mut handle).await;
    assert_eq!(task.await.unwrap(), 2);
}

#[tokio::test]
async fn the_vault_object_name_works_and_an_unowned_pod_gives_the_status_as_owner() {
    let (service, mut handle) = pair::<Request<Body>, Response<Body>>();
    let syncer = Syncer::new(kube::Client::new(service, "default"), "node-1");
    let task = tokio::spawn(async move {
        let (pod, objects, files, versions) = (
            pod(),
            seed_secret_objects("sql-password"),
            files(b"x"),
            versions("v1"),
        );
        syncer
            .sync(SyncInput {
                pod: &pod,
                class: "azure-kvname",
                target: "/t",
                secret_objects: &objects,
                files: &files,
                versions: &versions,
            })
            .await
            .unwrap()
    });
    expect(&mut handle, Method::PATCH, STATUS_PATH, status_reply()).await;
    expect(&mut handle, Method::GET, POD_PATH, pod_reply(false)).await;
    let (_, secret) = expect(&mut handle, Method::PATCH, SECRET_PATH, secret_reply()).await;
    let owner = &secret["metadata"]["ownerReferences"][0];
    assert_eq!(owner["kind"], "SecretProviderClassPodStatus");
    assert_eq!(owner["uid"], "status-uid");
    assert_eq!(secret["data"]["dbpassword"], "eA==");
    assert_eq!(task.await.unwrap(), 2);
}

#[tokio::test]
async fn an_unknown_object_name_writes_no_secret_and_lists_the_files() {
    let (service, mut handle) = pair::<Request<Body>, Response<Body>>();
    let syncer = Syncer::new(kube::Client::new(service, "default"), "node-1");
    let task = tokio::spawn(async move {
        let (pod, objects, files, versions) = (
            pod(),
            seed_secret_objects("typo"),
            files(b"x"),
            versions("v1"),
        );
        syncer
            .sync(SyncInput {
                pod: &pod,
                class: "azure-kvname",
                target: "/t",
                secret_objects: &objects,
                files: &files,
                versions: &versions,
            })
            .await
    });
    expect(&mut handle, Method::PATCH, STATUS_PATH, status_reply()).await;
    expect_nothing(&mut handle).await;
    let err = task.await.unwrap().unwrap_err();
    assert!(matches!(err, SyncError::Secret(_)));
    assert!(
        err.to_string().contains("\"typo\"") && err.to_string().contains("SECRET_1"),
        "{err}"
    );
}

// Helpers for the scenarios in tests/integration/sync/: several pods of one node.

/// A pod `name` in `default`, uid `uid-<name>`.
fn pod_named(name: &str) -> PodRef {
    PodRef {
        name: name.into(),
        namespace: "default".into(),
        uid: format!("uid-{name}"),
        service_account: "default".into(),
    }
}

/// The volume of pod `name`.
fn target_of(name: &str) -> String {
    format!("/var/lib/kubelet/pods/uid-{name}/volumes/kubernetes.io~csi/secrets-store-inline/mount")
}

fn pod_path(name: &str) -> String {
    format!("/api/v1/namespaces/default/pods/{name}")
}

/// The status object of pod `name` for class `azure-kvname`.
fn status_path(name: &str) -> String {
    format!(
        "/apis/secrets-store.csi.x-k8s.io/v1/namespaces/default/secretproviderclasspodstatuses/{name}-default-azure-kvname"
    )
}

fn status_reply_of(name: &str) -> Value {
    json!({"apiVersion": "secrets-store.csi.x-k8s.io/v1", "kind": "SecretProviderClassPodStatus",
           "metadata": {"name": format!("{name}-default-azure-kvname"), "namespace": "default", "uid": format!("status-uid-{name}")}})
}

/// Pod `name`, owned by ReplicaSet `rs` (none if `rs` is empty).
fn pod_reply_of(name: &str, rs: &str) -> Value {
    let owners = if rs.is_empty() {
        json!([])
    } else {
        json!([{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": rs, "uid": format!("uid-{rs}"), "controller": true}])
    };
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "default",
           "uid": format!("uid-{name}"), "ownerReferences": owners}})
}

/// The uids of a Secret body's owner references, in order.
fn owner_uids(secret: &Value) -> Vec<String> {
    secret["metadata"]["ownerReferences"]
        .as_array()
        .expect("ownerReferences")
        .iter()
        .map(|o| o["uid"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// One volume's inputs, owned, so a sync can run in a task.
#[derive(Clone)]
struct Volume {
    pod: PodRef,
    target: String,
    objects: Vec<SecretObject>,
    files: Vec<MountedFile>,
    versions: Vec<ObjectVersion>,
}

impl Volume {
    /// Pod `name`'s volume of the seed class with `value` as SECRET_1.
    fn of(name: &str, value: &[u8]) -> Self {
        Self {
            pod: pod_named(name),
            target: target_of(name),
            objects: seed_secret_objects("SECRET_1"),
            files: files(value),
            versions: versions("v1"),
        }
    }

    /// Syncs it in a task.
    fn sync(&self, syncer: &Arc<Syncer>) -> tokio::task::JoinHandle<Result<usize, SyncError>> {
        let (syncer, volume) = (syncer.clone(), self.clone());
        tokio::spawn(async move {
            syncer
                .sync(SyncInput {
                    pod: &volume.pod,
                    class: "azure-kvname",
                    target: &volume.target,
                    secret_objects: &volume.objects,
                    files: &volume.files,
                    versions: &volume.versions,
                })
                .await
        })
    }
}
