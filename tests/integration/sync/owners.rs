//! Owners of a Secret that several pods of the node use: each pod's owner is
//! listed, an unchanged volume writes nothing, and an unpublished volume is
//! forgotten.

use std::sync::Arc;

use http::{Method, Request, Response};
use kube::client::Body;
use secretfs::node::sync::Syncer;
use tower_test::mock::pair;

use crate::sync::{
    SECRET_PATH, Volume, expect, expect_nothing, owner_uids, pod_path, pod_reply_of, secret_reply,
    status_path, status_reply_of,
};

fn syncer(node: &str) -> (Arc<Syncer>, crate::sync::ApiHandle) {
    let (service, handle) = pair::<Request<Body>, Response<Body>>();
    let syncer = Syncer::new(kube::Client::new(service, "default"), node);
    (Arc::new(syncer), handle)
}

/// The first sync of pod `name`'s volume: its status, its pod (owned by
/// `rs`), then the Secret if `secret` (its body is returned).
async fn first_sync(
    handle: &mut crate::sync::ApiHandle,
    name: &str,
    rs: &str,
    secret: bool,
) -> Option<serde_json::Value> {
    expect(
        handle,
        Method::PATCH,
        &status_path(name),
        status_reply_of(name),
    )
    .await;
    expect(handle, Method::GET, &pod_path(name), pod_reply_of(name, rs)).await;
    if !secret {
        return None;
    }
    let (query, body) = expect(handle, Method::PATCH, SECRET_PATH, secret_reply()).await;
    assert!(query.contains("fieldManager=secretfs-node-1"), "{query}");
    Some(body)
}

#[tokio::test]
async fn a_second_pod_adds_its_owner_although_the_data_did_not_change() {
    let (syncer, mut handle) = syncer("node-1");
    let (a, b, c) = (
        Volume::of("web-a", b"same"),
        Volume::of("web-b", b"same"),
        Volume::of("web-c", b"same"),
    );

    let task = a.sync(&syncer);
    let secret = first_sync(&mut handle, "web-a", "rs-1", true)
        .await
        .unwrap();
    assert_eq!(owner_uids(&secret), ["uid-rs-1"]);
    assert_eq!(task.await.unwrap().unwrap(), 2);

    // Pod b, of another ReplicaSet, same value: the Secret is applied again
    // with both owners (this node's field manager lists all of its pods').
    let task = b.sync(&syncer);
    let secret = first_sync(&mut handle, "web-b", "rs-2", true)
        .await
        .unwrap();
    assert_eq!(owner_uids(&secret), ["uid-rs-1", "uid-rs-2"]);
    assert_eq!(secret["data"]["dbpassword"], "c2FtZQ==", "the same data");
    assert_eq!(
        secret["metadata"]["ownerReferences"][1]["kind"],
        "ReplicaSet"
    );
    assert_eq!(secret["metadata"]["ownerReferences"][1]["name"], "rs-2");
    assert_eq!(task.await.unwrap().unwrap(), 2);

    // Pod c, of rs-1 again: its owner is listed already, the Secret is not
    // written (only c's status is new).
    let task = c.sync(&syncer);
    first_sync(&mut handle, "web-c", "rs-1", false).await;
    expect_nothing(&mut handle).await;
    assert_eq!(task.await.unwrap().unwrap(), 1);

    // Nothing changed for any of them: no call at all.
    for volume in [&a, &b, &c] {
        let task = volume.sync(&syncer);
        expect_nothing(&mut handle).await;
        assert_eq!(task.await.unwrap().unwrap(), 0, "{}", volume.pod.name);
    }
}

#[tokio::test]
async fn a_pod_without_owners_adds_its_status_object_next_to_another_pods_owner() {
    let (syncer, mut handle) = syncer("node-1");
    let task = Volume::of("web-a", b"x").sync(&syncer);
    first_sync(&mut handle, "web-a", "rs-1", true).await;
    task.await.unwrap().unwrap();
    let task = Volume::of("bare", b"x").sync(&syncer);
    let secret = first_sync(&mut handle, "bare", "", true).await.unwrap();
    assert_eq!(owner_uids(&secret), ["status-uid-bare", "uid-rs-1"]);
    let bare = &secret["metadata"]["ownerReferences"][0];
    assert_eq!(bare["kind"], "SecretProviderClassPodStatus");
    assert_eq!(bare["name"], "bare-default-azure-kvname");
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn each_node_applies_its_secret_owners_with_its_own_field_manager() {
    for node in ["node-1", "node-2"] {
        let (syncer, mut handle) = syncer(node);
        let task = Volume::of("web-a", b"x").sync(&syncer);
        let (query, _) = expect(
            &mut handle,
            Method::PATCH,
            &status_path("web-a"),
            status_reply_of("web-a"),
        )
        .await;
        assert!(
            query.contains("fieldManager=secretfs&") || query.ends_with("fieldManager=secretfs"),
            "pod statuses keep the shared manager: {query}"
        );
        expect(
            &mut handle,
            Method::GET,
            &pod_path("web-a"),
            pod_reply_of("web-a", "rs-1"),
        )
        .await;
        let (query, _) = expect(&mut handle, Method::PATCH, SECRET_PATH, secret_reply()).await;
        assert!(
            query.contains(&format!("fieldManager=secretfs-{node}"))
                && query.contains("force=true"),
            "{query}"
        );
        task.await.unwrap().unwrap();
    }
}

#[tokio::test]
async fn an_unpublished_volume_is_forgotten_and_its_owner_is_not_applied_again() {
    let (syncer, mut handle) = syncer("node-1");
    let (a, b) = (Volume::of("web-a", b"v1"), Volume::of("web-b", b"v1"));
    let task = a.sync(&syncer);
    first_sync(&mut handle, "web-a", "rs-1", true).await;
    task.await.unwrap().unwrap();
    let task = b.sync(&syncer);
    let secret = first_sync(&mut handle, "web-b", "rs-2", true)
        .await
        .unwrap();
    assert_eq!(owner_uids(&secret), ["uid-rs-1", "uid-rs-2"]);
    task.await.unwrap().unwrap();

    // Unpublishing a writes nothing (rs-1 stays on the Secret until this
    // node applies it again, or garbage collection finds rs-1 gone).
    syncer.forget(&a.target);
    expect_nothing(&mut handle).await;
    assert!(!syncer.due(&a.target), "a is not known any more");

    // b rotates: the Secret is applied with b's owner only.
    let mut rotated = b.clone();
    rotated.files = crate::sync::files(b"v2");
    rotated.versions = crate::sync::versions("v2");
    let task = rotated.sync(&syncer);
    expect(
        &mut handle,
        Method::PATCH,
        &status_path("web-b"),
        status_reply_of("web-b"),
    )
    .await;
    let (_, secret) = expect(&mut handle, Method::PATCH, SECRET_PATH, secret_reply()).await;
    assert_eq!(owner_uids(&secret), ["uid-rs-2"]);
    assert_eq!(secret["data"]["dbpassword"], "djI=");
    assert_eq!(task.await.unwrap().unwrap(), 2);

    // Once b is gone too, nothing of either is kept: a volume published
    // again at a's target starts afresh (status, pod, Secret).
    syncer.forget(&b.target);
    let task = a.sync(&syncer);
    let secret = first_sync(&mut handle, "web-a", "rs-1", true)
        .await
        .unwrap();
    assert_eq!(owner_uids(&secret), ["uid-rs-1"]);
    assert_eq!(task.await.unwrap().unwrap(), 2);
    expect_nothing(&mut handle).await;
}
