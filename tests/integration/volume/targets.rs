//! Target paths and republishes that must be refused, with real mounts:
//! a republish of another volume, symbolic links below `pods/`, unpublish
//! outside kubelet's volumes, and a publish whose mount fails.

use std::sync::atomic::Ordering;

use secretfs_csi::{ErrorCode, UnpublishRequest, VolumeManager};

use super::fake::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_republish_of_another_volume_is_refused_and_changes_nothing() {
    if !fuse_available() {
        return;
    }
    let s = setup_with(&[class("other", "fake", &[("file:OTHER", "theirs")])]);
    s.driver.publish(s.request("uid-1", "ok")).await.unwrap();
    let target = s.target("uid-1");

    let err = s
        .driver
        .publish(s.request("uid-1", "other"))
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::AlreadyExists, "{}", err.message);
    assert!(
        err.message
            .contains("SecretProviderClass default/ok, not default/other")
            && err.message.contains("nothing was changed"),
        "{}",
        err.message
    );

    let mut renamed = s.request("uid-1", "ok");
    renamed.volume_id = "csi-another-volume".into();
    let err = s.driver.publish(renamed).await.unwrap_err();
    assert_eq!(err.code, ErrorCode::AlreadyExists, "{}", err.message);
    assert!(
        err.message
            .contains("volume id \"csi-uid-1\", not \"csi-another-volume\""),
        "{}",
        err.message
    );

    let mut regrouped = s.request("uid-1", "ok");
    regrouped.mount_group = Some(3000);
    let err = s.driver.publish(regrouped).await.unwrap_err();
    assert!(
        err.message.contains("fsGroup 2000, not 3000"),
        "{}",
        err.message
    );

    // The first class's volume, as it was; the other class was never asked.
    assert_eq!(std::fs::read(target.join("SECRET_1")).unwrap(), b"s3cr3t");
    assert!(!target.join("OTHER").exists());
    assert_eq!(s.provider.calls.load(Ordering::SeqCst), 1);
    let status = s.driver.status().await;
    assert_eq!(status[0].class, "ok");
    // The same volume again is a plain republish.
    s.driver.publish(s.request("uid-1", "ok")).await.unwrap();
    s.unpublish("uid-1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn symbolic_links_below_pods_are_refused_and_their_unpublish_succeeds() {
    if !fuse_available() {
        return;
    }
    let s = setup();
    let elsewhere = tempfile::tempdir().unwrap();

    // pods/<uid>/volumes is a link elsewhere.
    let target = s.target("uid-1");
    let pod_dir = target.ancestors().nth(4).unwrap().to_owned();
    std::fs::create_dir_all(&pod_dir).unwrap();
    std::os::unix::fs::symlink(elsewhere.path(), pod_dir.join("volumes")).unwrap();
    let err = s
        .driver
        .publish(s.request("uid-1", "ok"))
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::InvalidArgument, "{}", err.message);
    assert!(
        err.message
            .contains(&format!("{:?} is a symbolic link", pod_dir.join("volumes"))),
        "{}",
        err.message
    );
    assert_eq!(
        std::fs::read_dir(elsewhere.path()).unwrap().count(),
        0,
        "nothing was made through the link"
    );
    assert_eq!(s.provider.calls.load(Ordering::SeqCst), 0, "no vault call");
    s.unpublish("uid-1").await;
    assert!(pod_dir.join("volumes").is_symlink(), "left as it was");

    // The final `mount` is a link to a directory.
    let target = s.target("uid-2");
    std::fs::create_dir_all(target.parent().unwrap()).unwrap();
    let victim = elsewhere.path().join("victim");
    std::fs::create_dir(&victim).unwrap();
    std::fs::write(victim.join("keep"), "mine").unwrap();
    std::os::unix::fs::symlink(&victim, &target).unwrap();
    let err = s
        .driver
        .publish(s.request("uid-2", "ok"))
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::InvalidArgument, "{}", err.message);
    assert!(
        err.message
            .contains(&format!("{target:?} is a symbolic link")),
        "{}",
        err.message
    );
    assert!(!is_mounted(&victim) && !is_mounted(&target));
    assert_eq!(std::fs::read(victim.join("keep")).unwrap(), b"mine");
    // Kubelet's unpublish of it succeeds at once (it would retry an error
    // forever), and touches nothing.
    for _ in 0..2 {
        s.unpublish("uid-2").await;
    }
    assert!(target.is_symlink());
    assert_eq!(std::fs::read(victim.join("keep")).unwrap(), b"mine");
    assert!(s.driver.published().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unpublish_removes_nothing_outside_kubelet_volumes() {
    if !fuse_available() {
        return;
    }
    let s = setup();
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let mut other_kind = s.target("uid-1");
    other_kind = other_kind
        .to_string_lossy()
        .replace("kubernetes.io~csi", "kubernetes.io~empty-dir")
        .into();
    std::fs::create_dir_all(&other_kind).unwrap();
    for path in [empty.clone(), other_kind.clone()] {
        let err = s
            .driver
            .unpublish(UnpublishRequest {
                volume_id: "csi-x".into(),
                target_path: path.clone(),
            })
            .await
            .unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidArgument, "{}", err.message);
        assert!(
            err.message.contains("is not a kubelet volume path")
                && err
                    .message
                    .contains("<kubelet dir>/pods/<pod uid>/volumes/kubernetes.io~csi"),
            "{}",
            err.message
        );
        assert!(path.is_dir(), "{path:?} stays");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_mount_leaves_no_directory_it_made() {
    if !fuse_available() {
        return;
    }
    // `a` and `a/b`: the provider's answer passes, the volume cannot be
    // built, so the mount step fails after the directories were made.
    let s = setup_with(&[class(
        "clash",
        "fake",
        &[("file:a", "1"), ("file:a/b", "2")],
    )]);
    let target = s.target("uid-1");
    let volume_dir = target.parent().unwrap();
    // Kubelet made the volume's directory; the driver makes `mount`.
    std::fs::create_dir_all(volume_dir).unwrap();
    let err = s
        .driver
        .publish(s.request("uid-1", "clash"))
        .await
        .unwrap_err();
    assert_eq!(err.error_type, "FailedToMount", "{}", err.message);
    assert!(!is_mounted(&target));
    assert!(!target.exists(), "the target directory it made is gone");
    assert!(volume_dir.is_dir(), "kubelet's directory stays");

    // With nothing made by kubelet, every directory the driver made goes.
    let target = s.target("uid-2");
    s.driver
        .publish(s.request("uid-2", "clash"))
        .await
        .unwrap_err();
    let pods = target.ancestors().nth(5).unwrap();
    assert!(pods.is_dir(), "pods/ was there already");
    assert!(
        !pods.join("uid-2").exists(),
        "{:?}",
        std::fs::read_dir(pods).unwrap().collect::<Vec<_>>()
    );
}
