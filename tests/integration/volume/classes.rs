//! `--spc-dir` with a manifest that cannot be read: only the classes it
//! would define fail; the others publish, and readiness names the file.

use secretfs_csi::{ErrorCode, Readiness, VolumeManager};

use super::fake::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_manifest_fails_only_the_classes_it_would_define() {
    if !fuse_available() {
        return;
    }
    let s = setup();
    // A YAML syntax error (an unclosed flow mapping from line 3 on).
    s.write_manifest(
        "broken.yaml",
        "apiVersion: secrets-store.csi.x-k8s.io/v1\nkind: SecretProviderClass\nmetadata: {name: broken\nspec: {provider: fake}\n",
    );
    // Readable YAML, but not a class this driver serves.
    s.write_manifest(
        "wrong.yaml",
        "apiVersion: secrets-store.csi.x-k8s.io/v2\nkind: SecretProviderClass\nmetadata: {name: wrong}\nspec: {provider: fake}\n",
    );

    // The classes of the good file publish.
    s.driver.publish(s.request("uid-1", "ok")).await.unwrap();
    assert_eq!(
        std::fs::read(s.target("uid-1").join("SECRET_1")).unwrap(),
        b"s3cr3t"
    );

    // The class of the bad document fails with that document's error.
    let err = s
        .driver
        .publish(s.request("uid-2", "wrong"))
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::Unavailable, "{}", err.message);
    assert!(
        err.message.contains("wrong.yaml") && err.message.contains("apiVersion"),
        "{}",
        err.message
    );
    // A class found nowhere, while a file cannot be read at all: the
    // error names that file and line.
    let err = s
        .driver
        .publish(s.request("uid-3", "broken"))
        .await
        .unwrap_err();
    assert!(
        err.message.contains("default/broken is not in --spc-dir")
            && err.message.contains("broken.yaml")
            && err.message.contains("line "),
        "{}",
        err.message
    );
    assert!(!s.target("uid-2").exists() && !s.target("uid-3").exists());

    // Readiness says which files, and that the others are served.
    match s.driver.readiness().await {
        Readiness::NotReady(reason) => assert!(
            reason.contains("broken.yaml")
                && reason.contains("wrong.yaml")
                && reason.contains("the classes of the other manifests are served"),
            "{reason}"
        ),
        Readiness::Ready => panic!("ready with two bad manifests"),
    }
    s.write_manifest("broken.yaml", "");
    s.write_manifest("wrong.yaml", "");
    assert_eq!(s.driver.readiness().await, Readiness::Ready);
    s.unpublish("uid-1").await;
}
