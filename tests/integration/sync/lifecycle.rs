//! The periodic re-check: a Secret deleted while pods use it is applied
//! again (so re-created), and the pod's owners are read again.

use std::sync::Arc;
use std::time::Duration;

use http::{Method, Request, Response};
use kube::client::Body;
use secretfs::sync::Syncer;
use secretfs_e2e::fake_apiserver::FakeApiServer;
use serde_json::json;
use tower_test::mock::pair;

use crate::sync::{
    SECRET_PATH, Volume, expect, expect_nothing, owner_uids, pod_path, pod_reply_of, secret_reply,
    status_path, status_reply_of,
};

const RECHECK: Duration = Duration::from_secs(1);

#[tokio::test]
async fn an_unchanged_volume_is_applied_again_only_when_its_recheck_is_due() {
    let (service, mut handle) = pair::<Request<Body>, Response<Body>>();
    let syncer = Arc::new(
        Syncer::new(kube::Client::new(service, "default"), "node-1").with_recheck(RECHECK),
    );
    let volume = Volume::of("web-a", b"x");
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
    expect(&mut handle, Method::PATCH, SECRET_PATH, secret_reply()).await;
    assert_eq!(task.await.unwrap().unwrap(), 2);
    assert!(!syncer.due(&volume.target));
    let task = volume.sync(&syncer);
    expect_nothing(&mut handle).await;
    assert_eq!(task.await.unwrap().unwrap(), 0, "not due: nothing written");

    tokio::time::sleep(RECHECK).await;
    assert!(
        syncer.due(&volume.target),
        "the driver syncs it at this refresh"
    );
    let task = volume.sync(&syncer);
    expect(
        &mut handle,
        Method::PATCH,
        &status_path("web-a"),
        status_reply_of("web-a"),
    )
    .await;
    // The pod was adopted by another ReplicaSet meanwhile: read again.
    expect(
        &mut handle,
        Method::GET,
        &pod_path("web-a"),
        pod_reply_of("web-a", "rs-9"),
    )
    .await;
    let (_, secret) = expect(
        &mut handle,
        Method::PATCH,
        SECRET_PATH,
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "sqlserver", "namespace": "default", "uid": "re-created"}}),
    )
    .await;
    assert_eq!(owner_uids(&secret), ["uid-rs-9"]);
    assert_eq!(secret["data"]["dbpassword"], "eA==");
    assert_eq!(task.await.unwrap().unwrap(), 2);
    assert!(!syncer.due(&volume.target), "checked again just now");
    let task = volume.sync(&syncer);
    expect_nothing(&mut handle).await;
    assert_eq!(task.await.unwrap().unwrap(), 0);
}

#[tokio::test]
async fn a_deleted_secret_is_re_created_at_the_recheck() {
    let api = FakeApiServer::start().await.unwrap();
    api.put("pods", pod_reply_of("web-a", "rs-1"));
    let client = kube::Client::try_from(kube::Config::new(api.url().parse().unwrap())).unwrap();
    let syncer = Arc::new(Syncer::new(client, "node-1").with_recheck(RECHECK));
    let volume = Volume::of("web-a", b"Sql-Passw0rd");
    assert_eq!(volume.sync(&syncer).await.unwrap().unwrap(), 2);
    let first = api.get(SECRET_PATH).expect("the Secret is created");
    assert_eq!(first["data"]["dbpassword"], "U3FsLVBhc3N3MHJk");
    assert_eq!(owner_uids(&first), ["uid-rs-1"]);

    // Deleted (by a user, or collected when its owner went) while the pod
    // still uses it.
    api.remove(SECRET_PATH).unwrap();
    assert_eq!(
        volume.sync(&syncer).await.unwrap().unwrap(),
        0,
        "not due yet"
    );
    assert!(api.get(SECRET_PATH).is_none());

    tokio::time::sleep(RECHECK).await;
    assert!(syncer.due(&volume.target));
    assert_eq!(volume.sync(&syncer).await.unwrap().unwrap(), 2);
    let again = api.get(SECRET_PATH).expect("the Secret is re-created");
    assert_eq!(again["data"], first["data"]);
    assert_eq!(again["metadata"]["labels"], first["metadata"]["labels"]);
    assert_eq!(owner_uids(&again), ["uid-rs-1"]);
    assert_ne!(
        again["metadata"]["uid"], first["metadata"]["uid"],
        "a new object"
    );
    let secret_writes = api
        .requests()
        .iter()
        .filter(|r| r.method == "PATCH" && r.path == SECRET_PATH)
        .count();
    assert_eq!(secret_writes, 2, "created, then re-created: nothing else");
}
