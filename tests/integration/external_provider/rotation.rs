//! Rotation through an external provider: `Driver::refresh` calls Mount
//! again with the versions mounted now, and swaps only changed files.

use super::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_sends_current_versions_and_swaps_only_changed_files() {
    if !fuse_available() {
        return;
    }
    let (s, provider) = with_test_provider(|_| {}).await;
    provider.set_file("db/pass", b"hunter2", "p1");
    s.publish("rot", "v").await.unwrap();
    let target = s.target("rot");
    assert_eq!(std::fs::read(target.join("db/pass")).unwrap(), b"hunter2");
    let held = std::fs::File::open(target.join("foo")).unwrap();

    // Nothing changed: nothing swapped, current versions sent.
    let outcome = s.driver.refresh(&target).await.unwrap();
    assert!(!outcome.changed(), "{outcome:?}");
    let calls = provider.calls();
    assert_eq!(calls.len(), 2);
    assert_eq!(
        calls[1].current,
        [
            ("secret/db/pass".to_owned(), "p1".to_owned()),
            ("secret/foo".to_owned(), "v1".to_owned())
        ]
    );

    // One object rotates: only its file is replaced, in place.
    provider.set_file("foo", b"rotated", "v2");
    let outcome = s.driver.refresh(&target).await.unwrap();
    assert_eq!(
        (outcome.replaced, outcome.added, outcome.removed),
        (1, 0, 0)
    );
    assert_eq!(std::fs::read(target.join("foo")).unwrap(), b"rotated");
    assert_eq!(std::fs::read(target.join("db/pass")).unwrap(), b"hunter2");
    let mut buf = [0u8; 16];
    let n = std::os::unix::fs::FileExt::read_at(&held, &mut buf, 0).unwrap();
    assert_eq!(&buf[..n], b"rotated", "an open descriptor sees it too");
    assert_eq!(
        provider.calls()[2].current,
        [
            ("secret/db/pass".to_owned(), "p1".to_owned()),
            ("secret/foo".to_owned(), "v1".to_owned())
        ]
    );
    // The next check reports the new version as current.
    s.driver.refresh(&target).await.unwrap();
    assert_eq!(
        provider.calls()[3].current[1],
        ("secret/foo".to_owned(), "v2".to_owned())
    );

    // A bad response on refresh keeps the last good files.
    provider.set_behavior(secretfs_e2e::test_provider::Behavior::AbsolutePath);
    let err = s.driver.refresh(&target).await.unwrap_err();
    assert!(err.message.contains("/etc/passwd"), "{}", err.message);
    assert_eq!(std::fs::read(target.join("foo")).unwrap(), b"rotated");
    drop(held);
    s.unpublish("rot").await;
}

/// The real scheduler against an external provider: each volume's Mount is
/// called once per interval, no more and no less (300 ms, ±10 % jitter, a
/// 50 ms tick: 4 or 5 calls per volume in 1.5 s; 6 allows for a late tick).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scheduler_calls_mount_once_per_volume_per_interval() {
    use std::collections::BTreeMap;
    use std::time::{Duration, Instant};

    use secretfs::node::rotation::{self, RotationConfig};

    if !fuse_available() {
        return;
    }
    let (s, provider) = with_test_provider(|_| {}).await;
    let uids = ["sched-1", "sched-2", "sched-3"];
    for uid in uids {
        s.publish(uid, "v").await.unwrap();
    }
    let per_target = |calls: &[secretfs_e2e::test_provider::RecordedMount]| {
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        for call in calls {
            *counts.entry(call.target_path.clone()).or_default() += 1;
        }
        counts
    };
    let published = provider.calls().len();
    assert_eq!(published, 3, "one Mount per publish");

    let scheduler = rotation::spawn(
        s.driver.clone(),
        RotationConfig {
            interval: Duration::from_millis(300),
            jitter: 0.1,
            concurrency: 4,
            tick: Duration::from_millis(50),
            request_check: Duration::from_secs(60),
            max_backoff: Duration::from_secs(1),
        },
    );
    let started = Instant::now();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    scheduler.abort();
    let elapsed = started.elapsed();
    let calls = provider.calls();
    let counts = per_target(&calls[published..]);
    let targets: Vec<String> = uids
        .iter()
        .map(|uid| s.target(uid).to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        counts.keys().cloned().collect::<Vec<_>>(),
        targets,
        "every volume and only them"
    );
    for (target, n) in &counts {
        assert!(
            (4..=6).contains(n),
            "{n} Mount calls for {target} in {elapsed:?} at a 300 ms interval: {counts:?}"
        );
    }
    // Refreshes send the versions mounted now.
    assert!(
        calls[published..]
            .iter()
            .all(|c| c.current == [("secret/foo".to_owned(), "v1".to_owned())])
    );
    for uid in uids {
        s.unpublish(uid).await;
    }
}
