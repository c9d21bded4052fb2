//! A node plugin restarting while its external provider restarts too: the
//! volume is taken over with its kept files, and refreshes find the
//! provider again once it is back (it is not lost for a missing socket).

use std::sync::Arc;
use std::time::Duration;

use secretfs::node::driver::{Driver, DriverConfig, Persistence};
use secretfs::node::keeper::KeeperServer;
use secretfs::provider::ProviderRegistry;
use secretfs::spc::SpcDir;
use secretfs_e2e::test_provider::TestProvider;
use secretfs_fuse::ReadMode;

use super::common::*;

fn driver(
    s: &Setup,
    classes: &std::path::Path,
    state: &std::path::Path,
    keeper: &std::path::Path,
) -> Driver {
    Driver::new(
        DriverConfig {
            node_name: "node-1".into(),
            read_mode: ReadMode::Atomic,
            rotation_interval: Duration::from_secs(120),
        },
        Arc::new(SpcDir::new(classes)),
        ProviderRegistry::new(vec![])
            .with_external(config(s.dirs.iter().map(|d| d.path().to_owned()).collect())),
    )
    .with_persistence(Persistence::new(state, Some(keeper)).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_volume_whose_provider_is_away_at_start_is_kept_and_refreshes_once_it_is_back() {
    if !fuse_available() {
        return;
    }
    let (s, provider) = with_test_provider(|_| {}).await;
    let scratch = tempfile::tempdir().unwrap();
    let classes = scratch.path().join("classes");
    std::fs::create_dir(&classes).unwrap();
    std::fs::write(
        classes.join("v.yaml"),
        class("v", "vault", &[("roleName", "app"), ("objects", "foo")]),
    )
    .unwrap();
    let state = scratch.path().join("state");
    let keeper_socket = scratch.path().join("keeper.sock");
    let keeper = KeeperServer::bind(&keeper_socket).unwrap();
    let stop_keeper = keeper.stopper();
    let keeper_thread = std::thread::spawn(move || keeper.serve());

    let first = driver(&s, &classes, &state, &keeper_socket);
    secretfs_csi::VolumeManager::publish(&first, s.request("away", "v"))
        .await
        .unwrap();
    let target = s.target("away");
    assert_eq!(std::fs::read(target.join("foo")).unwrap(), b"secret");

    // The node plugin stops, and so does its provider.
    assert_eq!(first.hand_over(Duration::from_secs(2)).await, 1);
    drop(first);
    let socket = provider.socket().to_owned();
    provider.stop().await;
    assert!(!socket.exists());

    let second = driver(&s, &classes, &state, &keeper_socket);
    let report = second.restore().await;
    assert_eq!(report.adopted, 1, "{report:?}");
    assert!(report.lost.is_empty(), "{report:?}");
    assert_eq!(std::fs::read(target.join("foo")).unwrap(), b"secret");

    // While it is away a refresh fails and the file keeps its bytes.
    let err = second.refresh(&target).await.unwrap_err();
    assert!(err.message.contains("vault"), "{}", err.message);
    assert_eq!(std::fs::read(target.join("foo")).unwrap(), b"secret");

    // Back, with a new version: the next refresh swaps it in place.
    let provider = TestProvider::start(&socket).await.unwrap();
    provider.set_file("foo", b"rotated", "v2");
    let outcome = second.refresh(&target).await.unwrap();
    assert_eq!(outcome.replaced, 1, "{outcome:?}");
    assert_eq!(std::fs::read(target.join("foo")).unwrap(), b"rotated");

    secretfs_csi::VolumeManager::unpublish(
        &second,
        secretfs_csi::UnpublishRequest {
            volume_id: "csi-away".into(),
            target_path: target.clone(),
        },
    )
    .await
    .unwrap();
    assert!(!is_mounted(&target));
    assert_eq!(std::fs::read_dir(&state).unwrap().count(), 0);
    provider.stop().await;
    stop_keeper.stop();
    let _ = keeper_thread.join();
}
