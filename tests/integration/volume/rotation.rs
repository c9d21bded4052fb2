//! The refresh scheduler: rotation without remount, last good bytes kept on
//! failure, on-demand refresh through the class annotation.
//!
//! The scheduler runs on tokio's clock. The tests that check when it
//! refreshes run with that clock paused (`start_paused`) and move it
//! themselves: [`advance`] moves it, and [`settle`] waits in real time for
//! the refreshes it started while the clock stands still, so a loaded
//! machine makes a test slower, never wrong.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use secretfs::node::rotation::{self, RotationConfig};
use secretfs_csi::VolumeManager;

use super::fake::*;

fn fast() -> RotationConfig {
    RotationConfig {
        interval: Duration::from_millis(300),
        jitter: 0.1,
        concurrency: 4,
        tick: Duration::from_millis(50),
        request_check: Duration::from_millis(100),
        max_backoff: Duration::from_secs(1),
    }
}

/// Waits (in real time, up to 30 s) until `check` holds, without letting
/// the paused clock move: this task never waits on a timer, so the runtime
/// never parks and never advances the clock by itself; the scheduler and
/// its refreshes run at each yield (their file work on blocking threads).
async fn settle(what: &str, mut check: impl FnMut() -> bool) {
    let real = Instant::now();
    while !check() {
        assert!(
            real.elapsed() < Duration::from_secs(30),
            "{what} did not happen with the clock stopped"
        );
        for _ in 0..8 {
            tokio::task::yield_now().await;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Lets every task that is ready run, the clock stopped, and the blocking
/// work they start finish (each running refresh holds its volume, which
/// `Driver::volumes` then leaves out).
async fn quiesce(s: &Setup, volumes: usize) {
    for _ in 0..4 {
        settle("the refreshes in flight to end", || {
            s.driver.volumes().len() == volumes
        })
        .await;
        for _ in 0..8 {
            tokio::task::yield_now().await;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Moves the paused clock by `by`, in steps of `step`, letting the
/// scheduler act at each step as it would at that time.
async fn advance(s: &Setup, volumes: usize, by: Duration, step: Duration) {
    let end = tokio::time::Instant::now() + by;
    while tokio::time::Instant::now() < end {
        let left = end - tokio::time::Instant::now();
        tokio::time::advance(step.min(left)).await;
        quiesce(s, volumes).await;
    }
}

async fn wait_for(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_new_version_reaches_every_volume_within_the_interval() {
    if !fuse_available() {
        return;
    }
    let s = setup();
    for uid in ["r1", "r2", "r3"] {
        s.driver.publish(s.request(uid, "ok")).await.unwrap();
    }
    let held = std::fs::File::open(s.target("r1").join("SECRET_1")).unwrap();
    let old_value = std::fs::read(s.target("r1").join("SECRET_1")).unwrap();
    let new_value = b"rotated by the scheduler".to_vec();
    // Readers in the containers: open, one read(2), close, without pause,
    // across the rotation; every read must be all of the old value or all
    // of the new one, and no file may go back to the old one.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let readers: Vec<_> = (0..4)
        .map(|_| {
            let stop = stop.clone();
            let files: Vec<_> = ["r1", "r2", "r3"]
                .iter()
                .map(|uid| s.target(uid).join("SECRET_1"))
                .collect();
            let (old_value, new_value) = (old_value.clone(), new_value.clone());
            std::thread::spawn(move || {
                let (mut reads, mut bad) = (0u64, Vec::new());
                let mut seen_new = [false; 3];
                while !stop.load(Ordering::Relaxed) {
                    for (i, path) in files.iter().enumerate() {
                        let mut f = std::fs::File::open(path).unwrap();
                        let mut buf = vec![0u8; 4096];
                        let n = std::io::Read::read(&mut f, &mut buf).unwrap();
                        buf.truncate(n);
                        reads += 1;
                        if buf == new_value {
                            seen_new[i] = true;
                        } else if buf != old_value || seen_new[i] {
                            bad.push(String::from_utf8_lossy(&buf).into_owned());
                        }
                    }
                }
                (reads, bad)
            })
        })
        .collect();
    let no_class_reads = RotationConfig {
        request_check: Duration::from_secs(3600),
        ..fast()
    };
    let scheduler = rotation::spawn(s.driver.clone(), no_class_reads);
    s.provider.set("SECRET_1", "rotated by the scheduler");
    let all_rotated = || {
        ["r1", "r2", "r3"].iter().all(|uid| {
            std::fs::read(s.target(uid).join("SECRET_1")).unwrap() == b"rotated by the scheduler"
        })
    };
    // Jitter shortens the 300 ms interval by at most 10 %: nothing before
    // 270 ms, every volume by 300 ms plus one 50 ms tick.
    advance(&s, 3, Duration::from_millis(260), Duration::from_millis(10)).await;
    assert_eq!(
        s.provider.calls.load(Ordering::SeqCst),
        3,
        "no refresh before 0.9 × the interval"
    );
    advance(&s, 3, Duration::from_millis(90), Duration::from_millis(10)).await;
    settle("all volumes rotated", all_rotated).await;
    // Readers go on a little after the rotation (real time).
    std::thread::sleep(Duration::from_millis(200));
    stop.store(true, Ordering::Relaxed);
    let mut total = 0;
    for reader in readers {
        let (reads, bad) = reader.join().unwrap();
        total += reads;
        assert!(
            bad.is_empty(),
            "torn, unknown or older-after-newer reads: {bad:?}"
        );
    }
    assert!(total > 30, "the readers ran ({total} reads)");
    let mut buf = [0u8; 64];
    let n = std::os::unix::fs::FileExt::read_at(&held, &mut buf, 0).unwrap();
    assert_eq!(
        &buf[..n],
        b"rotated by the scheduler",
        "an open descriptor sees it too"
    );
    scheduler.abort();
    drop(held);
    for uid in ["r1", "r2", "r3"] {
        s.unpublish(uid).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_refresh_keeps_the_last_good_bytes() {
    if !fuse_available() {
        return;
    }
    let s = setup_with(&[class("flaky", "fake", &[("file:SECRET_1", "good")])]);
    s.driver.publish(s.request("f1", "flaky")).await.unwrap();
    let scheduler = rotation::spawn(s.driver.clone(), fast());
    s.provider.fail.store(true, Ordering::SeqCst);
    let calls = s.provider.calls.load(Ordering::SeqCst);
    wait_for("refreshes tried", Duration::from_secs(3), || {
        s.provider.calls.load(Ordering::SeqCst) >= calls + 2
    })
    .await;
    assert_eq!(
        std::fs::read(s.target("f1").join("SECRET_1")).unwrap(),
        b"good"
    );
    s.provider.fail.store(false, Ordering::SeqCst);
    s.provider.set("SECRET_1", "better");
    wait_for("recovered", Duration::from_secs(4), || {
        std::fs::read(s.target("f1").join("SECRET_1")).unwrap() == b"better"
    })
    .await;
    scheduler.abort();
    s.unpublish("f1").await;
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn refresh_requested_on_the_class_skips_the_interval() {
    if !fuse_available() {
        return;
    }
    let s = setup();
    s.driver.publish(s.request("q1", "ok")).await.unwrap();
    let slow = RotationConfig {
        interval: Duration::from_secs(3600),
        ..fast()
    };
    let scheduler = rotation::spawn(s.driver.clone(), slow);
    // Let the scheduler see the class once without a request (it looks
    // every 100 ms).
    advance(&s, 1, Duration::from_millis(300), Duration::from_millis(50)).await;
    s.provider.set("SECRET_1", "on demand");
    s.annotate_class(
        "ok",
        "secretfs.io/refresh-requested-at",
        "2026-11-26T16:40:00Z",
    );
    // Seen at the next look, an hour before the interval would be up.
    advance(&s, 1, Duration::from_millis(150), Duration::from_millis(50)).await;
    settle("on-demand refresh", || {
        std::fs::read(s.target("q1").join("SECRET_1")).unwrap() == b"on demand"
    })
    .await;
    scheduler.abort();
    s.unpublish("q1").await;
}

/// A `subPath` mount is a bind mount of the file itself, which pins its
/// inode: rotation in place reaches it (upstream's symlink swap does not).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_reaches_a_sub_path_bind_mount_of_the_file() {
    if !fuse_available() {
        return;
    }
    let s = setup();
    s.driver.publish(s.request("sp1", "ok")).await.unwrap();
    let container = tempfile::tempdir().unwrap();
    let sub_path = container.path().join("SECRET_1");
    std::fs::write(&sub_path, b"").unwrap();
    rustix::mount::mount_bind(s.target("sp1").join("SECRET_1"), &sub_path).unwrap();
    assert_eq!(std::fs::read(&sub_path).unwrap(), b"s3cr3t");
    s.provider.set("SECRET_1", "seen through subPath");
    s.driver.refresh(&s.target("sp1")).await.unwrap();
    assert_eq!(std::fs::read(&sub_path).unwrap(), b"seen through subPath");
    rustix::mount::unmount(&sub_path, rustix::mount::UnmountFlags::empty()).unwrap();
    s.unpublish("sp1").await;
}

/// More due volumes than permits: a finished refresh starts the next due
/// volume at once (not at the next tick), most overdue first, so every
/// volume is reached, not only the first ones in path order.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn more_volumes_than_permits_all_rotate_without_waiting_for_ticks() {
    if !fuse_available() {
        return;
    }
    let s = setup();
    let uids: Vec<String> = (0..40).map(|i| format!("many{i:02}")).collect();
    for uid in &uids {
        s.driver.publish(s.request(uid, "ok")).await.unwrap();
    }
    // A long tick and two permits: waiting for ticks would take 20 s.
    let config = RotationConfig {
        concurrency: 2,
        tick: Duration::from_secs(1),
        ..fast()
    };
    let scheduler = rotation::spawn(s.driver.clone(), config);
    s.provider.set("SECRET_1", "rotated, all of them");
    // Every volume is due by 300 ms; the first tick after that (1 s) finds
    // them. From then on the clock stands still: all 40 rotate, two at a
    // time, without another tick.
    quiesce(&s, 40).await; // the scheduler's first look, at 0
    tokio::time::advance(Duration::from_secs(1)).await;
    settle("all 40 volumes rotated with no further tick", || {
        uids.iter().all(|uid| {
            std::fs::read(s.target(uid).join("SECRET_1")).unwrap() == b"rotated, all of them"
        })
    })
    .await;
    scheduler.abort();
    for uid in &uids {
        s.unpublish(uid).await;
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// `secretfs status` shows the scheduler's own plan: the node interval,
/// a class's override and the jitter for new volumes, and after a failure
/// the backoff, never shorter than the vault's `Retry-After`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_the_next_refresh_the_scheduler_planned() {
    if !fuse_available() {
        return;
    }
    let s = setup_with(&[
        class(
            "twenty",
            "fake",
            &[
                ("file:SECRET_1", "twenty"),
                ("secretfs.io/rotation-poll-interval", "20s"),
            ],
        ),
        class(
            "every-second",
            "fake",
            &[
                ("file:SECRET_1", "fast"),
                ("secretfs.io/rotation-poll-interval", "1s"),
            ],
        ),
    ]);
    s.driver.publish(s.request("n1", "ok")).await.unwrap();
    s.driver.publish(s.request("n2", "twenty")).await.unwrap();
    s.driver
        .publish(s.request("n3", "every-second"))
        .await
        .unwrap();
    let before = s.driver.status().await;
    assert!(
        before.iter().all(|v| v.next_refresh_at.is_none()),
        "no scheduler, no plan"
    );
    // The vault throttles: failures carry Retry-After: 30.
    s.provider.fail.store(true, Ordering::SeqCst);
    *s.provider.retry_after.lock().unwrap() = Some(Duration::from_secs(30));
    let config = RotationConfig {
        interval: Duration::from_secs(100),
        max_backoff: Duration::from_secs(60),
        ..fast()
    };
    let started = unix_now();
    let scheduler = rotation::spawn(s.driver.clone(), config);
    let deadline = Instant::now() + Duration::from_secs(5);
    let (statuses, failed_by) = loop {
        let statuses = s.driver.status().await;
        if statuses.iter().any(|v| v.refresh_failures > 0) {
            break (statuses, unix_now());
        }
        assert!(Instant::now() < deadline, "no failed refresh: {statuses:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let by_uid = |uid: &str| {
        let target = s.target(uid).to_string_lossy().into_owned();
        statuses
            .iter()
            .find(|v| v.target == target)
            .unwrap()
            .clone()
    };
    // New volumes: interval less up to 10 % jitter (second resolution).
    let node = by_uid("n1");
    let next = node.next_refresh_at.expect("planned");
    assert!(
        (started + 89..=failed_by + 100).contains(&next),
        "node interval 100 s: {next} vs {started}"
    );
    let class_override = by_uid("n2");
    let next = class_override.next_refresh_at.expect("planned");
    assert!(
        (started + 17..=failed_by + 20).contains(&next),
        "class interval 20 s: {next} vs {started}"
    );
    assert_eq!(class_override.refresh_failures, 0);
    // The 1 s class was tried and failed: the next try waits for the
    // Retry-After (30 s), not the 1 s backoff, and jitter does not cut it.
    let failing = by_uid("n3");
    assert_eq!(failing.refresh_failures, 1);
    let next = failing.next_refresh_at.expect("planned");
    assert!(
        (failed_by + 29..=failed_by + 31).contains(&next),
        "Retry-After 30 s honoured: {next} vs {failed_by}"
    );
    let table = secretfs::cmd::admin::render_status(&statuses);
    assert_eq!(table.matches("; next refresh in ").count(), 3, "{table}");
    assert!(
        table.contains("every 20s (class); next refresh in "),
        "{table}"
    );
    assert!(table.contains(" after 1 failed refresh\n"), "{table}");
    assert!(table.contains("node interval; next refresh in "), "{table}");

    scheduler.abort();
    for uid in ["n1", "n2", "n3"] {
        s.unpublish(uid).await;
    }
}

/// A class's `secretfs.io/rotation-poll-interval` drives its own volumes;
/// a volume of another class keeps the node's (long) interval.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_class_interval_override_refreshes_on_its_own_schedule() {
    if !fuse_available() {
        return;
    }
    let s = setup_with(&[class(
        "short",
        "fake",
        &[
            ("file:SECRET_1", "short-lived"),
            ("secretfs.io/rotation-poll-interval", "500ms"),
        ],
    )]);
    s.driver.publish(s.request("o1", "ok")).await.unwrap();
    s.driver.publish(s.request("o2", "short")).await.unwrap();
    let config = RotationConfig {
        interval: Duration::from_secs(3600),
        // No class reads (on blocking threads) in the scheduler's loop: with
        // the clock stepped, one still running at a step would cost ticks.
        request_check: Duration::from_secs(3600),
        ..fast()
    };
    let scheduler = rotation::spawn(s.driver.clone(), config);
    s.provider.set("SECRET_1", "rotated");
    advance(&s, 2, Duration::from_millis(550), Duration::from_millis(50)).await;
    settle("the short class rotated", || {
        std::fs::read(s.target("o2").join("SECRET_1")).unwrap() == b"rotated"
    })
    .await;
    // It keeps refreshing every 0.45–0.5 s, plus up to a 50 ms tick (each
    // refresh is one provider call): 4 times in the next 2 s of the clock…
    let calls = s.provider.calls.load(Ordering::SeqCst);
    advance(
        &s,
        2,
        Duration::from_millis(2000),
        Duration::from_millis(50),
    )
    .await;
    let more = s.provider.calls.load(Ordering::SeqCst) - calls;
    assert!(
        (4..=5).contains(&more),
        "the 500 ms class refreshed {more} times in 2 s"
    );
    // …while the volume on the node's hour-long interval was not touched.
    assert_eq!(
        std::fs::read(s.target("o1").join("SECRET_1")).unwrap(),
        b"s3cr3t"
    );
    let status = s.driver.status().await;
    let node = status
        .iter()
        .find(|v| v.target == s.target("o1").to_string_lossy())
        .unwrap();
    assert!(
        node.next_refresh_at.unwrap() > unix_now() + 3000,
        "{node:?}"
    );
    scheduler.abort();
    s.unpublish("o1").await;
    s.unpublish("o2").await;
}
