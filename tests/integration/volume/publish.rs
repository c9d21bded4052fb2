//! The publish flow with real mounts: files, errors (each a clear message
//! and no mount), republish, unpublish, refresh.

use std::os::unix::fs::MetadataExt;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use secretfs_csi::{ErrorCode, PublishRequest, VolumeContext, VolumeManager};

use super::fake::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_mounts_the_files_with_the_pods_fs_group() {
    if !fuse_available() {
        return;
    }
    let s = setup();
    s.driver.publish(s.request("uid-1", "ok")).await.unwrap();
    let target = s.target("uid-1");
    assert_eq!(std::fs::read(target.join("SECRET_1")).unwrap(), b"s3cr3t");
    assert_eq!(std::fs::read(target.join("db/pass")).unwrap(), b"hunter2");
    let meta = std::fs::metadata(target.join("SECRET_1")).unwrap();
    assert_eq!(
        (meta.mode() & 0o777, meta.uid(), meta.gid()),
        (0o640, 0, 2000)
    );

    // Without an fsGroup: root-owned, world-readable like upstream.
    let mut plain = s.request("uid-2", "ok");
    plain.mount_group = None;
    s.driver.publish(plain).await.unwrap();
    let meta = std::fs::metadata(s.target("uid-2").join("SECRET_1")).unwrap();
    assert_eq!((meta.mode() & 0o777, meta.gid()), (0o644, 0));

    s.unpublish("uid-1").await;
    s.unpublish("uid-2").await;
    assert!(!is_mounted(&target));
    assert!(!target.exists(), "unpublish removes the target directory");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn republish_neither_remounts_nor_asks_the_provider() {
    if !fuse_available() {
        return;
    }
    let s = setup();
    s.driver.publish(s.request("uid-1", "ok")).await.unwrap();
    let held = std::fs::File::open(s.target("uid-1").join("SECRET_1")).unwrap();
    for _ in 0..3 {
        s.driver.publish(s.request("uid-1", "ok")).await.unwrap();
    }
    assert_eq!(s.provider.calls.load(Ordering::SeqCst), 1);
    let mut buf = [0u8; 6];
    std::os::unix::fs::FileExt::read_at(&held, &mut buf, 0).unwrap();
    assert_eq!(&buf, b"s3cr3t", "the original mount still serves");
    drop(held);
    s.unpublish("uid-1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unpublish_of_unknown_or_gone_targets_succeeds() {
    if !fuse_available() {
        return;
    }
    let s = setup();
    s.unpublish("never-published").await;
    s.driver.publish(s.request("uid-1", "ok")).await.unwrap();
    s.unpublish("uid-1").await;
    s.unpublish("uid-1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_publishes_are_clear_errors_and_mount_nothing() {
    if !fuse_available() {
        return;
    }
    let s = setup();
    let mut cases: Vec<(PublishRequest, ErrorCode, &str)> = vec![
        (
            s.request("u1", "missing"),
            ErrorCode::NotFound,
            "SecretProviderClass default/missing not found",
        ),
        (
            s.request("u2", "elsewhere"),
            ErrorCode::InvalidArgument,
            "provider \"vault\"",
        ),
        (
            s.request("u3", "denied"),
            ErrorCode::PermissionDenied,
            "vault said no",
        ),
    ];
    let mut other_pod = s.request("u4", "ok");
    other_pod.target_path = s.target("someone-else");
    cases.push((
        other_pod,
        ErrorCode::InvalidArgument,
        "is not a volume of pod u4",
    ));
    let mut override_attr = s.request("u5", "ok");
    override_attr.volume_context = VolumeContext::new(
        override_attr
            .volume_context
            .iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .chain([("keyvaultName".to_owned(), "evil".to_owned())]),
    );
    cases.push((override_attr, ErrorCode::InvalidArgument, "keyvaultName"));

    for (request, code, message) in cases {
        let target = request.target_path.clone();
        let err = s.driver.publish(request).await.unwrap_err();
        assert_eq!(err.code, code, "{}", err.message);
        assert!(
            err.message.contains(message),
            "{message:?} not in {:?}",
            err.message
        );
        assert!(!is_mounted(&target), "nothing mounted at {target:?}");
    }
    assert!(s.driver.published().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_pods_publish_concurrently_and_unpublish() {
    if !fuse_available() {
        return;
    }
    let s = Arc::new(setup());
    let tasks: Vec<_> = (0..100)
        .map(|i| {
            let s = s.clone();
            tokio::spawn(
                async move { s.driver.publish(s.request(&format!("pod-{i}"), "ok")).await },
            )
        })
        .collect();
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    assert_eq!(s.driver.published().await.len(), 100);
    for i in 0..100 {
        let target = s.target(&format!("pod-{i}"));
        assert_eq!(std::fs::read(target.join("SECRET_1")).unwrap(), b"s3cr3t");
    }
    let tasks: Vec<_> = (0..100)
        .map(|i| {
            let s = s.clone();
            tokio::spawn(async move { s.unpublish(&format!("pod-{i}")).await })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    assert!(s.driver.published().await.is_empty());
    assert!(!is_mounted(&s.target("pod-0")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_rotates_files_in_place_with_no_remount() {
    if !fuse_available() {
        return;
    }
    let s = setup();
    s.driver.publish(s.request("uid-1", "ok")).await.unwrap();
    let target = s.target("uid-1");
    let held = std::fs::File::open(target.join("SECRET_1")).unwrap();

    let unchanged = s.driver.refresh(&target).await.unwrap();
    assert!(!unchanged.changed(), "{unchanged:?}");

    s.provider.overrides.lock().unwrap().extend([
        (
            "SECRET_1".to_owned(),
            Some("rotated, and longer".to_owned()),
        ),
        ("db/pass".to_owned(), None),
        ("new/file".to_owned(), Some("appeared".to_owned())),
    ]);
    let outcome = s.driver.refresh(&target).await.unwrap();
    assert_eq!(
        (outcome.replaced, outcome.added, outcome.removed),
        (1, 1, 1)
    );
    let mut buf = [0u8; 64];
    let n = std::os::unix::fs::FileExt::read_at(&held, &mut buf, 0).unwrap();
    assert_eq!(
        &buf[..n],
        b"rotated, and longer",
        "seen through the descriptor opened before"
    );
    assert_eq!(std::fs::read(target.join("new/file")).unwrap(), b"appeared");
    assert!(
        !target.join("db").exists(),
        "the emptied directory went away"
    );
    let meta = std::fs::metadata(target.join("new/file")).unwrap();
    assert_eq!(meta.gid(), 2000, "added files get the pod's fsGroup too");
    drop(held);
    s.unpublish("uid-1").await;
    let err = s.driver.refresh(&target).await.unwrap_err();
    assert_eq!(err.code, ErrorCode::NotFound);
}

/// `secretfs.io/fetch: lazy`: the mount makes no provider call; the first
/// read of a file does; an unknown value is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lazy_volume_fetches_on_first_read() {
    if !fuse_available() {
        return;
    }
    let s = setup_with(&[
        class(
            "lazy",
            "fake",
            &[
                ("secretfs.io/fetch", "lazy"),
                ("file:SECRET_1", "lazy value"),
            ],
        ),
        class(
            "sometimes",
            "fake",
            &[("secretfs.io/fetch", "sometimes"), ("file:a", "x")],
        ),
    ]);
    s.driver.publish(s.request("l1", "lazy")).await.unwrap();
    assert_eq!(
        s.provider.calls.load(Ordering::SeqCst),
        0,
        "no provider call at mount"
    );
    let names: Vec<_> = std::fs::read_dir(s.target("l1")).unwrap().collect();
    assert_eq!(names.len(), 1, "the listing is there without a fetch");
    assert_eq!(
        s.provider.calls.load(Ordering::SeqCst),
        0,
        "listing does not fetch"
    );
    assert_eq!(
        std::fs::read(s.target("l1").join("SECRET_1")).unwrap(),
        b"lazy value"
    );
    assert_eq!(s.provider.calls.load(Ordering::SeqCst), 1);
    // A refresh of a read lazy volume works like any other.
    s.provider.set("SECRET_1", "rotated lazily");
    s.driver.refresh(&s.target("l1")).await.unwrap();
    assert_eq!(
        std::fs::read(s.target("l1").join("SECRET_1")).unwrap(),
        b"rotated lazily"
    );
    s.unpublish("l1").await;

    let err = s
        .driver
        .publish(s.request("l2", "sometimes"))
        .await
        .unwrap_err();
    assert!(
        err.message.contains("secretfs.io/fetch") && err.message.contains("lazy"),
        "{}",
        err.message
    );
    assert!(!is_mounted(&s.target("l2")));
}
