//! More writes, method, URI and body: the event of an unknown `objectName`,
//! Secret types copied verbatim, and the annotations and labels of
//! `secretObjects`.

use std::sync::Arc;

use http::{Method, Request, Response};
use kube::client::Body;
use secretfs::node::sync::{SyncError, Syncer};
use secretfs::provider::{FileMode, MountedFile};
use secretfs::spc::{SecretObject, SecretObjectData};
use secretfs_secrets::SecretBytes;
use serde_json::json;
use tower_test::mock::pair;

use crate::sync::{
    Volume, expect, expect_nothing, pod_path, pod_reply_of, status_path, status_reply_of,
};

fn file(path: &str, id: &str, bytes: &[u8]) -> MountedFile {
    MountedFile {
        path: path.into(),
        mode: FileMode::DEFAULT,
        contents: Arc::new(SecretBytes::from_slice(bytes)),
        object_id: id.into(),
    }
}

fn data(items: &[(&str, &str)]) -> Vec<SecretObjectData> {
    items
        .iter()
        .map(|(object, key)| SecretObjectData {
            object_name: (*object).into(),
            key: (*key).into(),
        })
        .collect()
}

fn secret_path(name: &str) -> String {
    format!("/api/v1/namespaces/default/secrets/{name}")
}

fn secret_reply(name: &str) -> serde_json::Value {
    json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": "default"}})
}

const EVENTS_PATH: &str = "/apis/events.k8s.io/v1/namespaces/default/events";

#[tokio::test]
async fn the_event_of_an_unknown_object_name_lists_the_available_files() {
    let (service, mut handle) = pair::<Request<Body>, Response<Body>>();
    let syncer = Arc::new(Syncer::new(kube::Client::new(service, "default"), "node-1"));
    let mut volume = Volume::of("web-a", b"x");
    volume
        .files
        .push(file("tls/cert", "cert/web-tls", b"-----BEGIN"));
    volume.objects = vec![SecretObject {
        secret_name: "sqlserver".into(),
        secret_type: "Opaque".into(),
        data: data(&[("SECRET_1", "a"), ("sql-pasword", "b")]),
        ..Default::default()
    }];
    let task = volume.sync(&syncer);
    expect(
        &mut handle,
        Method::PATCH,
        &status_path("web-a"),
        status_reply_of("web-a"),
    )
    .await;
    expect_nothing(&mut handle).await;
    let err = task.await.unwrap().unwrap_err();
    assert!(matches!(err, SyncError::Secret(_)), "{err}");

    // The driver reports it on the pod, with the error's text.
    let pod = volume.pod.clone();
    let (events, note) = (syncer.clone(), err.to_string());
    let task = tokio::spawn(async move {
        events.event(&pod, true, "FailedToCreateSecret", note).await;
    });
    let (_, event) = expect(
        &mut handle,
        Method::POST,
        EVENTS_PATH,
        json!({"apiVersion": "events.k8s.io/v1", "kind": "Event",
               "metadata": {"name": "web-a.1", "namespace": "default"}}),
    )
    .await;
    task.await.unwrap();
    assert_eq!(event["type"], "Warning");
    assert_eq!(event["reason"], "FailedToCreateSecret");
    assert_eq!(event["action"], "Sync");
    assert_eq!(event["reportingController"], "secretfs");
    assert_eq!(event["reportingInstance"], "node-1");
    assert_eq!(event["regarding"]["kind"], "Pod");
    assert_eq!(event["regarding"]["name"], "web-a");
    assert_eq!(event["regarding"]["uid"], "uid-web-a");
    assert_eq!(event["metadata"]["namespace"], "default");
    assert_eq!(
        event["note"],
        "secretObjects sqlserver: objectName \"sql-pasword\" matches no mounted file; \
         available: SECRET_1, tls/cert (use an objectAlias or a vault object name)"
    );
    expect_nothing(&mut handle).await;
}

#[tokio::test]
async fn dockerconfigjson_and_other_types_are_copied_verbatim_with_annotations_and_labels() {
    let (service, mut handle) = pair::<Request<Body>, Response<Body>>();
    let syncer = Arc::new(Syncer::new(kube::Client::new(service, "default"), "node-1"));
    let docker = br#"{"auths":{"registry.example.com":{"auth":"dXNlcjpwYXNz"}}}"#;
    let mut volume = Volume::of("web-a", b"x");
    volume.files = vec![
        file("registry", "secret/registry-config", docker),
        file("user", "secret/db-user", b"admin\n"),
        // not valid UTF-8: bytes go through as they are
        file("pass", "secret/db-pass", &[0xff, 0x00, 0x80]),
    ];
    volume.objects = vec![
        SecretObject {
            secret_name: "registry".into(),
            secret_type: "kubernetes.io/dockerconfigjson".into(),
            annotations: [("team".to_owned(), "payments".to_owned())].into(),
            data: data(&[("registry", ".dockerconfigjson")]),
            ..Default::default()
        },
        SecretObject {
            secret_name: "db".into(),
            secret_type: "kubernetes.io/basic-auth".into(),
            labels: [("app".to_owned(), "web".to_owned())].into(),
            annotations: [
                ("a.example.com/owner".to_owned(), "dba".to_owned()),
                ("note".to_owned(), "rotated monthly".to_owned()),
            ]
            .into(),
            // by vault object name and by file path
            data: data(&[("db-user", "username"), ("pass", "password")]),
        },
    ];
    let task = volume.sync(&syncer);
    expect(
        &mut handle,
        Method::PATCH,
        &status_path("web-a"),
        status_reply_of("web-a"),
    )
    .await;
    expect(
        &mut handle,
        Method::GET,
        &pod_path("web-a"),
        pod_reply_of("web-a", "rs-1"),
    )
    .await;
    let (_, registry) = expect(
        &mut handle,
        Method::PATCH,
        &secret_path("registry"),
        secret_reply("registry"),
    )
    .await;
    let (_, db) = expect(
        &mut handle,
        Method::PATCH,
        &secret_path("db"),
        secret_reply("db"),
    )
    .await;
    expect_nothing(&mut handle).await;
    assert_eq!(task.await.unwrap().unwrap(), 3);

    assert_eq!(registry["type"], "kubernetes.io/dockerconfigjson");
    assert_eq!(
        registry["data"],
        json!({".dockerconfigjson": "eyJhdXRocyI6eyJyZWdpc3RyeS5leGFtcGxlLmNvbSI6eyJhdXRoIjoiZFhObGNqcHdZWE56In19fQ=="}),
        "the file's bytes, base64, nothing else"
    );
    assert_eq!(
        registry["metadata"]["annotations"],
        json!({"team": "payments"})
    );
    assert_eq!(
        registry["metadata"]["labels"],
        json!({"secrets-store.csi.k8s.io/managed": "true"}),
        "the managed label is always there"
    );

    assert_eq!(db["type"], "kubernetes.io/basic-auth");
    assert_eq!(
        db["data"],
        json!({"username": "YWRtaW4K", "password": "/wCA"})
    );
    assert_eq!(
        db["metadata"]["annotations"],
        json!({"a.example.com/owner": "dba", "note": "rotated monthly"})
    );
    assert_eq!(
        db["metadata"]["labels"],
        json!({"app": "web", "secrets-store.csi.k8s.io/managed": "true"})
    );
    assert_eq!(db["metadata"]["ownerReferences"][0]["uid"], "uid-rs-1");
}
