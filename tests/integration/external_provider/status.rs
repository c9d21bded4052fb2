//! What an external provider answers reaches the pod: its object versions
//! in the SecretProviderClassPodStatus (applied to the fake API server),
//! and its file modes on the FUSE files.

use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;

use secretfs::node::sync::Syncer;
use secretfs_e2e::fake_apiserver::{FakeApiServer, object_path};
use serde_json::json;

use super::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn object_versions_reach_the_pod_status_and_follow_rotation() {
    if !fuse_available() {
        return;
    }
    let api = FakeApiServer::start().await.unwrap();
    api.put(
        "pods",
        json!({"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": "pod", "namespace": "default", "uid": "st-1"}}),
    );
    let client = kube::Client::try_from(kube::Config::new(api.url().parse().unwrap())).unwrap();
    let syncer = Arc::new(Syncer::new(client, "node-1"));
    let (s, provider) = with_test_provider_synced(|_| {}, Some(syncer)).await;
    provider.set_file("db/pass", b"hunter2", "p1");
    s.publish("st-1", "v").await.unwrap();

    let path = object_path(
        "secrets-store.csi.x-k8s.io/v1",
        "secretproviderclasspodstatuses",
        "default",
        "pod-default-v",
    );
    let status = api.get(&path).expect("the pod status is applied");
    assert_eq!(
        status["status"]["objects"],
        json!([
            {"id": "secret/db/pass", "version": "p1"},
            {"id": "secret/foo", "version": "v1"},
        ])
    );
    assert_eq!(status["status"]["podName"], "pod");
    assert_eq!(status["status"]["secretProviderClassName"], "v");
    assert_eq!(status["status"]["mounted"], true);
    assert_eq!(
        status["status"]["targetPath"],
        s.target("st-1").to_str().unwrap()
    );

    // A new version from the provider reaches the status on refresh.
    provider.set_file("foo", b"rotated", "v2");
    s.driver.refresh(&s.target("st-1")).await.unwrap();
    let status = api.get(&path).unwrap();
    assert_eq!(
        status["status"]["objects"],
        json!([
            {"id": "secret/db/pass", "version": "p1"},
            {"id": "secret/foo", "version": "v2"},
        ])
    );
    s.unpublish("st-1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mode_the_provider_sends_is_the_files_mode() {
    if !fuse_available() {
        return;
    }
    let (s, provider) = with_test_provider(|_| {}).await;
    provider.set_file("tls.key", b"-----BEGIN PRIVATE KEY-----\n", "k1");
    provider.set_mode("tls.key", 0o400);
    provider.set_file("group-readable", b"g", "g1");
    provider.set_mode("group-readable", 0o440);
    s.publish("modes", "v").await.unwrap();
    let target = s.target("modes");
    let mode = |name: &str| {
        std::fs::metadata(target.join(name))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777
    };
    assert_eq!(mode("tls.key"), 0o400);
    assert_eq!(mode("group-readable"), 0o440);
    assert_eq!(mode("foo"), 0o644, "420, the default, is 0644");
    assert_eq!(provider.calls()[0].permission, "420");
    s.unpublish("modes").await;
}

/// Mode 0 is proto3's "not set" (upstream's own e2e provider sends it): the
/// file gets the volume's default mode, so a non-root container can list
/// and read the volume as with any other provider.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_sent_without_a_mode_gets_the_volumes_default_mode() {
    if !fuse_available() {
        return;
    }
    let (s, provider) = with_test_provider(|_| {}).await;
    provider.set_mode("foo", 0);
    s.publish("nomode", "v").await.unwrap();
    let target = s.target("nomode");
    let mode =
        |path: &std::path::Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o7777;
    assert_eq!(
        mode(&target.join("foo")),
        0o644,
        "no fsGroup: 0644, as `permission` 420 says"
    );
    assert_eq!(mode(&target), 0o555, "the root lists for everyone");
    s.unpublish("nomode").await;

    // With an fsGroup, the group's default (0640), like every other file.
    let mut request = s.request("grouped", "v");
    request.mount_group = Some(2000);
    secretfs_csi::VolumeManager::publish(&*s.driver, request)
        .await
        .unwrap();
    let target = s.target("grouped");
    assert_eq!(mode(&target.join("foo")), 0o640);
    assert_eq!(mode(&target), 0o550);
    s.unpublish("grouped").await;
}

/// `secretfs status` shows the versions an external provider reported,
/// whose object ids (`secret/foo`) are not its file paths (`foo`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_the_versions_an_external_provider_reported() {
    if !fuse_available() {
        return;
    }
    let (s, provider) = with_test_provider(|_| {}).await;
    provider.set_file("db/pass", b"hunter2", "p1");
    s.publish("versions", "v").await.unwrap();
    let status = s.driver.status().await;
    let table = secretfs::cmd::admin::render_status(&status);
    for (id, version) in [("secret/db/pass", "p1"), ("secret/foo", "v1")] {
        assert!(
            status[0]
                .objects
                .iter()
                .any(|o| o.id == id && o.version == version),
            "{:?}",
            status[0].objects
        );
        assert!(
            table
                .lines()
                .any(|l| l.contains(id) && l.trim_end().ends_with(version)),
            "{id} {version} in:\n{table}"
        );
    }
    s.unpublish("versions").await;
}
