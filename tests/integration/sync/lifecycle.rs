//! The periodic re-check: a Secret deleted while pods use it is applied
//! again (so re-created), and the pod's owners are read again.

use std::sync::Arc;
use std::time::Duration;

use http::{Method, Request, Response};
use kube::client::Body;
use secretfs::node::sync::Syncer;
use serde_json::json;
use tower_test::mock::pair;

use crate::real_kube::RealKube;
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

/// On the real kube-apiserver: a Secret deleted while its pod still uses it
/// comes back at the re-check, as a new object with the same data, labels
/// and owner, and not before.
#[tokio::test]
async fn a_deleted_secret_is_re_created_at_the_recheck() {
    let kube = RealKube::namespace("sync-recheck-unit").await;
    let owner = kube
        .apply("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: rs-1\n")
        .await
        .metadata
        .uid
        .unwrap();
    let pod = kube
        .create_pod(
            &format!(
                "apiVersion: v1\nkind: Pod\nmetadata:\n  ownerReferences:\n  - {{apiVersion: v1, kind: ConfigMap, name: rs-1, uid: {owner}}}\nspec:\n  containers:\n  - {{name: app, image: busybox}}\n"
            ),
            "web-a",
        )
        .await;
    let syncer = Arc::new(Syncer::new(kube.client.clone(), "node-1").with_recheck(RECHECK));
    let mut volume = Volume::of("web-a", b"Sql-Passw0rd");
    volume.pod.namespace = kube.namespace.clone();
    volume.pod.uid = pod.metadata.uid.clone().unwrap();
    assert_eq!(volume.sync(&syncer).await.unwrap().unwrap(), 2);
    let first = kube
        .secrets()
        .get("sqlserver")
        .await
        .expect("the Secret is created");
    assert_eq!(
        first.data.as_ref().unwrap()["dbpassword"].0,
        b"Sql-Passw0rd"
    );
    let owners = |s: &k8s_openapi::api::core::v1::Secret| -> Vec<String> {
        s.metadata
            .owner_references
            .iter()
            .flatten()
            .map(|o| o.uid.clone())
            .collect()
    };
    assert_eq!(owners(&first), std::slice::from_ref(&owner));

    // Deleted (by a user, or collected when its owner went) while the pod
    // still uses it.
    kube.secrets()
        .delete("sqlserver", &Default::default())
        .await
        .unwrap();
    assert_eq!(
        volume.sync(&syncer).await.unwrap().unwrap(),
        0,
        "not due yet"
    );
    assert!(kube.secrets().get_opt("sqlserver").await.unwrap().is_none());

    tokio::time::sleep(RECHECK).await;
    assert!(syncer.due(&volume.target));
    assert_eq!(volume.sync(&syncer).await.unwrap().unwrap(), 2);
    let again = kube
        .secrets()
        .get("sqlserver")
        .await
        .expect("the Secret is re-created");
    assert_eq!(again.data, first.data);
    assert_eq!(again.metadata.labels, first.metadata.labels);
    assert_eq!(owners(&again), [owner]);
    assert_ne!(again.metadata.uid, first.metadata.uid, "a new object");
    kube.delete().await;
}
