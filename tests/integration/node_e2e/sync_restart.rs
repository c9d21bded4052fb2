//! Secret sync across restarts of the node plugin, on the real
//! kube-apiserver with its garbage collector (`crate::real_kube`): the owners
//! applied to a synced Secret are always those of every volume of the node
//! that writes it — adopted after a restart, a crash, an upgrade or a keeper
//! restart, or published since — so the garbage collector never deletes a
//! Secret that a mounted pod still uses; and adopted volumes are re-checked,
//! so a deleted status object or Secret comes back.
//!
//! The fake API server could not show the first defect: it replaces the
//! whole object on PATCH, where the real one merges `ownerReferences` by uid
//! per field manager, and it has no garbage collector.

use std::collections::BTreeSet;
use std::time::Duration;

use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{DeleteParams, ListParams};
use secretfs_e2e::kubelet::PublishExtras;

use super::harness::*;
use crate::real_kube::RealKube;

/// The Secret of the seed class's `secretObjects`.
const SECRET: &str = "sqlserver";
/// The seed class's name.
const CLASS: &str = "azure-kvname";

/// How long the garbage collector may take (it acts within a second here).
const GC: Duration = Duration::from_secs(30);

async fn start(kube: &RealKube, extra: &[&str]) -> Env {
    kube.apply(SEED_CLASS).await;
    let env = Env::start_surviving_with(&kube.kubeconfig, extra).await;
    kube.until(Duration::from_secs(20), "the node is ready", async || {
        env.http_get("/readyz").0 == 200
    })
    .await;
    env
}

async fn publish(env: &Env, pod: &Pod) {
    env.kubelet
        .publish(pod, VOLUME, &PublishExtras::default())
        .await
        .unwrap();
}

/// The uids of the status objects of `pods` (the owners of a bare pod's
/// Secrets).
async fn status_uids(kube: &RealKube, pods: &[&Pod]) -> BTreeSet<String> {
    let mut uids = BTreeSet::new();
    for pod in pods {
        let name = pod.metadata.name.as_deref().unwrap();
        let uid = kube
            .status_uid(name, CLASS)
            .await
            .unwrap_or_else(|| panic!("the status object of {name}"));
        uids.insert(uid);
    }
    uids
}

/// Deletes a pod as kubelet and the API would: the volume is unpublished,
/// the pod object goes, and the garbage collector takes its status object.
async fn delete_pod(env: &Env, kube: &RealKube, pod: &Pod) {
    env.kubelet.unpublish(pod, VOLUME).await.unwrap();
    let name = pod.metadata.name.clone().unwrap();
    kube.delete_pod(&name).await;
    kube.until(GC, "the pod's status object is collected", async || {
        kube.status_uid(&name, CLASS).await.is_none()
    })
    .await;
}

/// Waits until the Secret's owners are `expected` (the garbage collector
/// takes off references to deleted owners), and asserts it still exists.
async fn owners_become(kube: &RealKube, expected: &BTreeSet<String>, what: &str) {
    kube.until(GC, what, async || {
        kube.secret_owners(SECRET).await.as_ref() == Some(expected)
    })
    .await;
}

/// The last pods of a Secret go: the garbage collector deletes it, which
/// shows that it would have deleted it earlier had an owner been missing.
async fn last_pods_go(env: &Env, kube: &RealKube, pods: &[&Pod]) {
    for pod in pods {
        delete_pod(env, kube, pod).await;
    }
    kube.until(
        GC,
        "the Secret is collected with its last owner",
        async || kube.secret_owners(SECRET).await.is_none(),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_restart_a_new_pod_keeps_the_owners_of_the_adopted_pods() {
    if !fuse_available() {
        return;
    }
    let kube = RealKube::namespace("sync-restart").await;
    let mut env = start(&kube, &[]).await;
    let a = kube.create_pod(SEED_POD, "own-a").await;
    let b = kube.create_pod(SEED_POD, "own-b").await;
    publish(&env, &a).await;
    publish(&env, &b).await;
    let adopted = status_uids(&kube, &[&a, &b]).await;
    assert_eq!(kube.secret_owners(SECRET).await, Some(adopted.clone()));

    env.restart(Stop::Term, None).await;
    let c = kube.create_pod(SEED_POD, "own-c").await;
    publish(&env, &c).await;
    let mut all = adopted.clone();
    all.extend(status_uids(&kube, &[&c]).await);
    assert_eq!(
        kube.secret_owners(SECRET).await,
        Some(all),
        "the first apply after the restart lists the adopted pods' owners too"
    );

    // Deleting the new pod leaves the Secret to the adopted ones.
    delete_pod(&env, &kube, &c).await;
    owners_become(
        &kube,
        &adopted,
        "the Secret stays, owned by own-a and own-b",
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(kube.secret_owners(SECRET).await, Some(adopted));

    last_pods_go(&env, &kube, &[&a, &b]).await;
    kube.delete().await;
}

/// The pods of a Deployment share one owner (their ReplicaSet).
fn deployment(name: &str, replicas: u32) -> String {
    let pod: serde_json::Value = serde_yaml::from_str(SEED_POD).unwrap();
    serde_json::json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": pod["spec"],
            },
        },
    })
    .to_string()
}

/// The pods of the Deployment `name` once its ReplicaSet made `count`, and
/// the ReplicaSet's uid.
async fn deployment_pods(kube: &RealKube, name: &str, count: usize) -> (Vec<Pod>, String) {
    let selector = ListParams::default().labels(&format!("app={name}"));
    kube.until(
        Duration::from_secs(30),
        "the ReplicaSet makes the pods",
        async || kube.pods().list(&selector).await.unwrap().items.len() == count,
    )
    .await;
    let pods = kube.pods().list(&selector).await.unwrap().items;
    let sets = kube::Api::<ReplicaSet>::namespaced(kube.client.clone(), &kube.namespace)
        .list(&selector)
        .await
        .unwrap()
        .items;
    assert_eq!(sets.len(), 1);
    (pods, sets[0].metadata.uid.clone().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_crash_deleting_a_new_deployment_keeps_the_secret_of_the_adopted_pods() {
    if !fuse_available() {
        return;
    }
    let kube = RealKube::namespace("sync-crash").await;
    let mut env = start(&kube, &[]).await;
    kube.apply(&deployment("web", 3)).await;
    let (web, web_set) = deployment_pods(&kube, "web", 3).await;
    for pod in &web {
        publish(&env, pod).await;
    }
    let bare = kube.create_pod(SEED_POD, "own-a").await;
    publish(&env, &bare).await;
    let mut adopted = status_uids(&kube, &[&bare]).await;
    adopted.insert(web_set.clone());
    assert_eq!(kube.secret_owners(SECRET).await, Some(adopted.clone()));

    env.restart(Stop::Kill, None).await;
    kube.apply(&deployment("api", 2)).await;
    let (api, api_set) = deployment_pods(&kube, "api", 2).await;
    for pod in &api {
        publish(&env, pod).await;
    }
    let mut all = adopted.clone();
    all.insert(api_set);
    assert_eq!(kube.secret_owners(SECRET).await, Some(all));

    // The new Deployment goes (its ReplicaSet and pods with it).
    for pod in &api {
        env.kubelet.unpublish(pod, VOLUME).await.unwrap();
    }
    kube::Api::<k8s_openapi::api::apps::v1::Deployment>::namespaced(
        kube.client.clone(),
        &kube.namespace,
    )
    .delete("api", &DeleteParams::foreground())
    .await
    .unwrap();
    owners_become(
        &kube,
        &adopted,
        "the Secret stays, owned by web's ReplicaSet and own-a",
    )
    .await;

    // The Deployment's pods go with it; the bare pod by itself.
    for pod in &web {
        env.kubelet.unpublish(pod, VOLUME).await.unwrap();
    }
    kube::Api::<k8s_openapi::api::apps::v1::Deployment>::namespaced(
        kube.client.clone(),
        &kube.namespace,
    )
    .delete("web", &DeleteParams::foreground())
    .await
    .unwrap();
    owners_become(
        &kube,
        &status_uids(&kube, &[&bare]).await,
        "web's ReplicaSet is gone",
    )
    .await;
    last_pods_go(&env, &kube, &[&bare]).await;
    kube.delete().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keeper_restart_then_an_upgrade_keeps_every_owner() {
    if !fuse_available() {
        return;
    }
    let kube = RealKube::namespace("sync-upgrade").await;
    let mut env = start(&kube, &[]).await;
    let a = kube.create_pod(SEED_POD, "own-a").await;
    let b = kube.create_pod(SEED_POD, "own-b").await;
    publish(&env, &a).await;
    publish(&env, &b).await;
    let adopted = status_uids(&kube, &[&a, &b]).await;

    // The keeper comes back empty; the node hands it everything again.
    env.restart_keeper().await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let scratch = tempfile::tempdir().unwrap();
    let upgraded = scratch.path().join("secretfs-upgraded");
    std::fs::copy(env!("CARGO_BIN_EXE_secretfs"), &upgraded).unwrap();
    env.restart(Stop::Term, Some(&upgraded)).await;
    let metrics = env.http_get("/metrics").1;
    assert!(
        metrics.contains("secretfs_restored_volumes_total{outcome=\"adopted\"} 2"),
        "{metrics}"
    );

    let c = kube.create_pod(SEED_POD, "own-c").await;
    publish(&env, &c).await;
    let mut all = adopted.clone();
    all.extend(status_uids(&kube, &[&c]).await);
    assert_eq!(kube.secret_owners(SECRET).await, Some(all));
    delete_pod(&env, &kube, &c).await;
    owners_become(
        &kube,
        &adopted,
        "the Secret stays, owned by own-a and own-b",
    )
    .await;
    last_pods_go(&env, &kube, &[&a, &b]).await;
    kube.delete().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_status_object_and_secret_of_an_adopted_volume_come_back() {
    if !fuse_available() {
        return;
    }
    let kube = RealKube::namespace("sync-recheck").await;
    // Refreshes every 2 s, re-checks every 6 s.
    let mut env = start(
        &kube,
        &["--rotation-poll-interval=2s", "--sync-recheck-interval=6s"],
    )
    .await;
    let a = kube.create_pod(SEED_POD, "own-a").await;
    publish(&env, &a).await;
    let status_name = format!("own-a-{}-{CLASS}", kube.namespace);
    assert!(kube.secret_owners(SECRET).await.is_some());

    env.restart(Stop::Term, None).await;
    for round in ["the first refresh after the takeover", "the next re-check"] {
        kube.secrets()
            .delete(SECRET, &DeleteParams::default())
            .await
            .unwrap();
        kube.statuses()
            .delete(&status_name, &DeleteParams::default())
            .await
            .unwrap();
        // Within the re-check interval plus one refresh interval, and a
        // margin for a loaded machine.
        kube.until(
            Duration::from_secs(15),
            &format!("status object and Secret back at {round}"),
            async || {
                kube.status_uid("own-a", CLASS).await.is_some()
                    && kube.secret_owners(SECRET).await.is_some()
            },
        )
        .await;
        let owners = status_uids(&kube, &[&a]).await;
        assert_eq!(
            kube.secret_owners(SECRET).await,
            Some(owners),
            "the Secret is owned by the new status object"
        );
        // The data came back too.
        let secret = kube.secrets().get(SECRET).await.unwrap();
        assert_eq!(
            secret.data.unwrap()["dbpassword"].0,
            b"Sql-Passw0rd-from-kv-demo"
        );
    }
    last_pods_go(&env, &kube, &[&a]).await;
    kube.delete().await;
}
