//! Whether each file was read since it was mounted or rotated, and when
//! first (`Volume::reads`), in both read modes, on a real mount: the first
//! READ of each version reaches the server and is recorded; in page-cache
//! mode the reads after it are the kernel's and make no request.

use std::os::unix::fs::MetadataExt;
use std::time::{Duration, SystemTime};

use secretfs_fuse::{FileReads, ReadMode};

use super::fixture::*;

macro_rules! in_both_read_modes {
    ($($name:ident),* $(,)?) => {
        mod atomic {
            $(#[test]
            fn $name() {
                super::$name(secretfs_fuse::ReadMode::Atomic);
            })*
        }
        mod page_cache {
            $(#[test]
            fn $name() {
                super::$name(secretfs_fuse::ReadMode::PageCache);
            })*
        }
    };
}

in_both_read_modes!(
    a_file_never_read_is_unread_and_its_first_read_is_recorded,
    a_rotation_makes_the_file_unread_again,
    a_record_restored_from_another_process_is_kept_until_the_next_change,
);

fn record(m: &Mounted, path: &str) -> FileReads {
    m.volume()
        .reads()
        .into_iter()
        .find(|r| r.path == path)
        .unwrap()
}

fn a_file_never_read_is_unread_and_its_first_read_is_recorded(mode: ReadMode) {
    if !fuse_available() {
        return;
    }
    let before = SystemTime::now();
    let m = mount_in(
        mode,
        vec![
            file("a", 0o644, 0, b"alpha"),
            file("dir/b", 0o644, 0, b"beta"),
        ],
    );
    let reads = m.volume().reads();
    assert_eq!(
        reads.iter().map(|r| r.path.as_str()).collect::<Vec<_>>(),
        ["a", "dir/b"]
    );
    for r in &reads {
        assert_eq!(r.first_read, None, "{r:?}");
        assert!(r.since >= before - Duration::from_millis(1), "{r:?}");
    }
    // A stat or a listing is not a read.
    std::fs::metadata(m.path("a")).unwrap();
    std::fs::read_dir(m.path("dir")).unwrap().for_each(drop);
    assert_eq!(record(&m, "a").first_read, None);

    let start = SystemTime::now() - Duration::from_millis(1);
    assert_eq!(std::fs::read(m.path("a")).unwrap(), b"alpha");
    let end = SystemTime::now() + Duration::from_millis(1);
    let first = record(&m, "a").first_read.expect("read, so recorded");
    assert!(start <= first && first <= end, "{first:?}");
    assert_eq!(record(&m, "dir/b").first_read, None, "b was not read");

    // Later reads keep the first read's time.
    std::thread::sleep(Duration::from_millis(5));
    for _ in 0..5 {
        assert_eq!(std::fs::read(m.path("a")).unwrap(), b"alpha");
    }
    assert_eq!(record(&m, "a").first_read, Some(first));
}

fn a_rotation_makes_the_file_unread_again(mode: ReadMode) {
    if !fuse_available() {
        return;
    }
    let m = mount_in(mode, vec![file("a", 0o644, 0, b"alpha")]);
    assert_eq!(std::fs::read(m.path("a")).unwrap(), b"alpha");
    let first = record(&m, "a");
    assert!(first.first_read.is_some());

    std::thread::sleep(Duration::from_millis(5));
    let replaced_at = SystemTime::now() - Duration::from_millis(1);
    m.replace("a", b"alpha, rotated");
    let after = record(&m, "a");
    assert_eq!(after.first_read, None, "the new version was not read");
    assert!(after.since >= replaced_at, "{after:?}");

    // The first read of the new version is seen, whatever the mode.
    assert_eq!(std::fs::read(m.path("a")).unwrap(), b"alpha, rotated");
    let read = record(&m, "a")
        .first_read
        .expect("the new version was read");
    assert!(read >= after.since, "{read:?}");

    // A file never looked up changes in place, and is unread too.
    m.volume().add(file("b", 0o644, 0, b"beta")).unwrap();
    m.replace("b", b"beta 2");
    assert_eq!(record(&m, "b").first_read, None);
    assert_eq!(std::fs::read(m.path("b")).unwrap(), b"beta 2");
    assert!(record(&m, "b").first_read.is_some());
}

fn a_record_restored_from_another_process_is_kept_until_the_next_change(mode: ReadMode) {
    if !fuse_available() {
        return;
    }
    let m = mount_in(
        mode,
        vec![file("a", 0o644, 0, b"alpha"), file("b", 0o644, 0, b"beta")],
    );
    let t = |s: u64| SystemTime::UNIX_EPOCH + Duration::from_secs(s);
    let recorded = vec![
        FileReads {
            path: "a".into(),
            since: t(1_700_000_000),
            first_read: Some(t(1_700_000_100)),
        },
        FileReads {
            path: "b".into(),
            since: t(1_700_000_000),
            first_read: None,
        },
        // A file the volume no longer has is ignored.
        FileReads {
            path: "gone".into(),
            since: t(1),
            first_read: None,
        },
    ];
    m.volume().restore_reads(&recorded);
    assert_eq!(m.volume().reads(), recorded[..2]);
    // Reads after that: the first one of b is recorded, a keeps its time.
    assert_eq!(std::fs::read(m.path("a")).unwrap(), b"alpha");
    assert_eq!(std::fs::read(m.path("b")).unwrap(), b"beta");
    assert_eq!(record(&m, "a").first_read, Some(t(1_700_000_100)));
    assert!(record(&m, "b").first_read.unwrap() > t(1_700_000_000));
}

/// Page-cache mode: the first read of each version is one READ request
/// (that is what is recorded); every read after it is the kernel's, with
/// no request and no change to the record, before and after a rotation.
#[test]
fn page_cache_mode_records_the_first_read_of_each_version_with_one_request_and_warm_reads_with_none()
 {
    if !fuse_available() {
        return;
    }
    let m = mount_in(ReadMode::PageCache, vec![file("s", 0o644, 0, b"cached")]);
    let counters = || m.volume().core().counters().snapshot();
    // (lookups, getattrs, reads, readdirs, loads)
    std::fs::metadata(m.path("s")).unwrap();
    let looked_up = counters();
    assert_eq!(std::fs::read(m.path("s")).unwrap(), b"cached");
    let mut expected = looked_up;
    expected[2] += 1;
    assert_eq!(
        counters(),
        expected,
        "the first read: one READ, nothing else"
    );
    let first = record(&m, "s").first_read.unwrap();
    for _ in 0..20 {
        assert_eq!(std::fs::read(m.path("s")).unwrap(), b"cached");
    }
    assert_eq!(counters(), expected, "warm reads reached the server");
    assert_eq!(record(&m, "s").first_read, Some(first));

    let old = std::fs::metadata(m.path("s")).unwrap().ino();
    m.replace("s", b"rotated");
    let new = std::fs::metadata(m.path("s")).unwrap().ino();
    assert_ne!(old, new);
    let rotated = counters();
    assert_eq!(std::fs::read(m.path("s")).unwrap(), b"rotated");
    let mut expected = rotated;
    expected[2] += 1;
    assert_eq!(
        counters(),
        expected,
        "the first read after a rotation: one READ (the replace looked the name up)"
    );
    assert!(record(&m, "s").first_read.is_some());
    for _ in 0..20 {
        assert_eq!(std::fs::read(m.path("s")).unwrap(), b"rotated");
    }
    assert_eq!(counters(), expected, "warm reads after the rotation");
}

/// Atomic mode: every read reaches the server; only the first is recorded.
#[test]
fn atomic_mode_records_the_first_of_many_reads() {
    if !fuse_available() {
        return;
    }
    let m = mount_in(ReadMode::Atomic, vec![file("s", 0o644, 0, b"direct")]);
    assert_eq!(std::fs::read(m.path("s")).unwrap(), b"direct");
    let first = record(&m, "s").first_read.unwrap();
    let reads = m.volume().core().counters().snapshot()[2];
    std::thread::sleep(Duration::from_millis(5));
    for _ in 0..5 {
        assert_eq!(std::fs::read(m.path("s")).unwrap(), b"direct");
    }
    assert!(m.volume().core().counters().snapshot()[2] >= reads + 5);
    assert_eq!(record(&m, "s").first_read, Some(first));
}

/// Page-cache mode, a file of several pages: a rotation hands the kernel
/// every page but the first, so the first read of the new version is one
/// READ (of that page) and returns the new bytes whole; the reads after it
/// make none.
#[test]
fn page_cache_mode_a_rotated_file_of_several_pages_is_read_whole_with_one_request() {
    if !fuse_available() {
        return;
    }
    let pattern = |seed: u8, len: usize| -> Vec<u8> {
        (0..len)
            .map(|i| seed.wrapping_add((i % 251) as u8))
            .collect()
    };
    let old = pattern(1, 3 * 4096 + 100);
    let m = mount_in(ReadMode::PageCache, vec![file("big", 0o644, 0, &old)]);
    let counters = || m.volume().core().counters().snapshot();
    assert_eq!(std::fs::read(m.path("big")).unwrap(), old);
    for (seed, len) in [(7, 64 * 1024), (9, 5000), (11, 200 * 1024 + 17)] {
        let new = pattern(seed, len);
        m.replace("big", &new);
        assert_eq!(record(&m, "big").first_read, None);
        let before = counters();
        assert_eq!(std::fs::read(m.path("big")).unwrap(), new, "{len} bytes");
        let mut expected = before;
        expected[2] += 1;
        assert_eq!(counters(), expected, "{len} bytes: one READ");
        assert!(record(&m, "big").first_read.is_some());
        assert_eq!(std::fs::read(m.path("big")).unwrap(), new);
        assert_eq!(counters(), expected, "{len} bytes: warm");
    }
}
