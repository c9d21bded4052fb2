//! Contents and entries change with no remount, in both read modes:
//! `PageCache` (the default: the kernel is told "no open" and keeps pages
//! across opens; each version of a file is its own inode) and `Atomic`
//! (direct I/O: every read comes to the server). What each kind of reader
//! sees after a replace is docs/SEMANTICS.md's table, checked here.

use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::process::{Command, Stdio};

use secretfs_fuse::{Content, FileSpec, ReadMode};

use super::fixture::*;

/// Each named function below, run as a test once per read mode:
/// `rotation::atomic::<name>` and `rotation::page_cache::<name>`.
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
    a_replace_is_seen_at_the_same_path_longer_and_shorter,
    a_descriptor_opened_before_a_replace_reads_one_whole_version,
    a_replace_updates_mtime,
    files_added_and_removed_appear_and_disappear,
    files_can_be_memory_mapped,
    a_file_bind_mounted_on_its_own_follows_replaces,
    a_directory_bind_mounted_shows_each_new_version_whole,
);

fn a_replace_is_seen_at_the_same_path_longer_and_shorter(mode: ReadMode) {
    if !fuse_available() {
        return;
    }
    let m = mount_in(mode, vec![file("s", 0o644, 0, b"first")]);
    let ino = std::fs::metadata(m.path("s")).unwrap().ino();
    // Read twice: in page-cache mode the second read is served from the
    // kernel's cache, which the replace must drop.
    for _ in 0..2 {
        assert_eq!(std::fs::read(m.path("s")).unwrap(), b"first");
    }
    m.replace("s", b"second, and longer");
    assert_eq!(std::fs::metadata(m.path("s")).unwrap().len(), 18);
    for _ in 0..2 {
        assert_eq!(std::fs::read(m.path("s")).unwrap(), b"second, and longer");
    }
    m.replace("s", b"3rd");
    // Size first this time, then contents: `stat` must not keep the
    // cached size, and a read must not return the old tail.
    assert_eq!(std::fs::metadata(m.path("s")).unwrap().len(), 3);
    assert_eq!(std::fs::read(m.path("s")).unwrap(), b"3rd");
    let cat = Command::new("cat").arg(m.path("s")).output().unwrap();
    assert_eq!(cat.stdout, b"3rd");
    // Same length, different bytes: only an invalidation can show these.
    m.replace("s", b"4th");
    assert_eq!(std::fs::read(m.path("s")).unwrap(), b"4th");
    // Each version the kernel saw is an inode of its own.
    let meta = std::fs::metadata(m.path("s")).unwrap();
    assert_eq!(meta.len(), 3);
    assert_ne!(meta.ino(), ino, "a new version, a new inode ({mode:?})");
}

/// Page-cache mode: the descriptor keeps the version it opened, whole
/// (as with upstream's symlink swap), while new opens read the new one.
/// Atomic mode: the descriptor reads the newest version.
fn a_descriptor_opened_before_a_replace_reads_one_whole_version(mode: ReadMode) {
    if !fuse_available() {
        return;
    }
    let m = mount_in(mode, vec![file("s", 0o644, 0, b"old value")]);
    let mut held = std::fs::File::open(m.path("s")).unwrap();
    let mut text = String::new();
    held.read_to_string(&mut text).unwrap();
    assert_eq!(text, "old value");
    let held_ino = held.metadata().unwrap().ino();

    let follows = mode == ReadMode::Atomic;
    let seen = |now: &'static [u8], before: &'static [u8]| if follows { now } else { before };
    m.replace("s", b"a new, longer value");
    assert_eq!(std::fs::read(m.path("s")).unwrap(), b"a new, longer value");
    let mut buf = vec![0u8; 64];
    let n = held.read_at(&mut buf, 0).unwrap();
    assert_eq!(&buf[..n], seen(b"a new, longer value", b"old value"));
    assert_eq!(held.metadata().unwrap().len(), n as u64);
    assert_eq!(held.metadata().unwrap().ino(), held_ino);

    m.replace("s", b"short");
    held.seek(SeekFrom::Start(0)).unwrap();
    let mut text = String::new();
    held.read_to_string(&mut text).unwrap();
    assert_eq!(text.as_bytes(), seen(b"short", b"old value"));
    assert_eq!(held.metadata().unwrap().len(), text.len() as u64);

    m.replace("s", b"ab");
    assert_eq!(
        held.read_at(&mut buf, 4).unwrap(),
        if follows { 0 } else { 5 }
    );
    let n = held.read_at(&mut buf, 0).unwrap();
    assert_eq!(&buf[..n], seen(b"ab", b"old value"));

    // Removed: a held descriptor still reads its version (page-cache
    // mode: the one it opened; atomic: the last).
    m.volume().remove("s").unwrap();
    let n = held.read_at(&mut buf, 0).unwrap();
    assert_eq!(&buf[..n], seen(b"ab", b"old value"));
    assert_eq!(
        std::fs::read(m.path("s")).unwrap_err().raw_os_error(),
        Some(libc::ENOENT)
    );
}

fn a_replace_updates_mtime(mode: ReadMode) {
    if !fuse_available() {
        return;
    }
    let m = mount_in(mode, vec![file("s", 0o644, 0, b"a")]);
    let before = std::fs::metadata(m.path("s")).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(20));
    m.replace("s", b"b");
    let after = std::fs::metadata(m.path("s")).unwrap();
    let nanos = |m: &std::fs::Metadata| m.mtime() as i128 * 1_000_000_000 + m.mtime_nsec() as i128;
    assert!(nanos(&after) > nanos(&before));
}

fn files_added_and_removed_appear_and_disappear(mode: ReadMode) {
    if !fuse_available() {
        return;
    }
    let m = mount_in(mode, vec![file("keep", 0o644, 0, b"k")]);
    // Look the name up first so the kernel holds a (negative) entry.
    assert!(std::fs::metadata(m.path("hist/0")).is_err());
    let listing = |m: &Mounted, dir: &str| -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(m.path(dir))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    };
    assert_eq!(listing(&m, ""), ["keep"]);

    for (path, bytes) in [("hist/0", b"v2"), ("hist/1", b"v1")] {
        m.volume()
            .add(FileSpec::new(path, 0o640, 0, 2000, Content::bytes(&bytes[..])).unwrap())
            .unwrap();
    }
    assert_eq!(listing(&m, ""), ["hist", "keep"]);
    assert_eq!(listing(&m, "hist"), ["0", "1"]);
    assert_eq!(std::fs::read(m.path("hist/0")).unwrap(), b"v2");
    assert_eq!(std::fs::metadata(m.path("hist/1")).unwrap().len(), 2);
    assert_eq!(
        std::fs::metadata(m.path("hist")).unwrap().mode() & 0o777,
        0o550
    );

    m.volume().remove("hist/0").unwrap();
    assert_eq!(listing(&m, "hist"), ["1"]);
    let err = std::fs::read(m.path("hist/0")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ENOENT));
    m.volume().remove("hist/1").unwrap();
    assert_eq!(listing(&m, ""), ["keep"]);
    assert!(std::fs::metadata(m.path("hist")).is_err());

    // A removed name can come back with other contents, read fresh.
    m.volume()
        .add(FileSpec::new("hist/0", 0o644, 0, 0, Content::bytes(&b"back, longer"[..])).unwrap())
        .unwrap();
    assert_eq!(std::fs::read(m.path("hist/0")).unwrap(), b"back, longer");
    assert_eq!(std::fs::metadata(m.path("hist/0")).unwrap().len(), 12);
}

/// A mapping made after a replace shows the new bytes. A mapping made
/// before it keeps the version it mapped, whole, in page-cache mode (like
/// a descriptor); in atomic mode it shows the new bytes at once (the
/// invalidation drops the pages under every mapping, and the page fault
/// that follows reads the newest value).
///
/// (A mapping longer than the new value, past its end: zeros within the
/// last page, SIGBUS beyond it, as on any file system; not tested.)
fn files_can_be_memory_mapped(mode: ReadMode) {
    if !fuse_available() {
        return;
    }
    let m = mount_in(mode, vec![file("s", 0o644, 0, b"mapped one")]);
    // Maps the file and prints it; after a line on stdin, prints the old
    // mapping, a new mapping of the (replaced) file, and the old one again.
    let script = "\
import mmap, sys
def mapped():
    with open(sys.argv[1], 'rb') as f:
        return mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ)
old = mapped()
print(old[:].decode(), flush=True)
sys.stdin.readline()
print(old[:].decode(), flush=True)
print(mapped()[:].decode(), flush=True)
print(old[:].decode(), flush=True)
";
    let mut child = Command::new("python3")
        .args(["-c", script])
        .arg(m.path("s"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut next = || lines.next().map(Result::unwrap).unwrap_or_default();
    assert_eq!(next(), "mapped one");

    m.replace("s", b"mapped two");
    writeln!(child.stdin.take().unwrap()).unwrap();
    let (old_mapping, new_mapping, old_mapping_later) = (next(), next(), next());
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(new_mapping, "mapped two", "a new mapping");
    let old = if mode == ReadMode::Atomic {
        "mapped two"
    } else {
        "mapped one"
    };
    assert_eq!(
        old_mapping, old,
        "the mapping made before the replace ({mode:?})"
    );
    assert_eq!(
        old_mapping_later, old,
        "the mapping made before the replace, after a new mapping ({mode:?})"
    );
}

/// kubelet mounts a `subPath` file by bind-mounting the file itself: the
/// mount pins the inode it was made of, and never looks the name up again.
/// That inode follows the file's newest bytes in place, in both modes, and
/// so does every descriptor of that inode: one opened through the mount,
/// and one opened by path before the rotation (the same inode: the kernel
/// has one copy of it). A mount made of a later version follows too.
fn a_file_bind_mounted_on_its_own_follows_replaces(mode: ReadMode) {
    if !fuse_available() {
        return;
    }
    let m = mount_in(mode, vec![file("dir/s", 0o644, 0, b"first")]);
    let by_path = std::fs::File::open(m.path("dir/s")).unwrap();
    let sub = BindMount::like_kubelet(&m.path("dir/s"));
    assert_eq!(std::fs::read(sub.path()).unwrap(), b"first");
    let through = std::fs::File::open(sub.path()).unwrap();
    let pinned = through.metadata().unwrap().ino();

    m.replace("dir/s", b"second, longer");
    assert_eq!(std::fs::read(sub.path()).unwrap(), b"second, longer");
    assert_eq!(std::fs::metadata(sub.path()).unwrap().len(), 14);
    assert_eq!(std::fs::metadata(sub.path()).unwrap().ino(), pinned);
    let mut buf = [0u8; 64];
    let n = through.read_at(&mut buf, 0).unwrap();
    assert_eq!(
        &buf[..n],
        b"second, longer",
        "a descriptor opened through the mount"
    );
    let n = by_path.read_at(&mut buf, 0).unwrap();
    assert_eq!(
        &buf[..n],
        b"second, longer",
        "a descriptor of the pinned inode"
    );
    // The name itself moved on, as for any replace.
    assert_eq!(std::fs::read(m.path("dir/s")).unwrap(), b"second, longer");
    assert_ne!(std::fs::metadata(m.path("dir/s")).unwrap().ino(), pinned);

    m.replace("dir/s", b"3rd");
    assert_eq!(std::fs::read(sub.path()).unwrap(), b"3rd");
    assert_eq!(std::fs::metadata(sub.path()).unwrap().len(), 3);

    // A subPath mounted after a rotation pins that version; it follows the
    // next one.
    let later = BindMount::new(&m.path("dir/s"));
    assert_eq!(std::fs::read(later.path()).unwrap(), b"3rd");
    m.replace("dir/s", b"fourth");
    assert_eq!(std::fs::read(later.path()).unwrap(), b"fourth");
    assert_eq!(std::fs::read(sub.path()).unwrap(), b"fourth");
    drop(through);
}

/// A `subPath` of a directory: the names inside are looked up as through
/// the volume, so each open gets the newest version, and a descriptor
/// opened before keeps its own (page-cache mode) or follows (atomic).
fn a_directory_bind_mounted_shows_each_new_version_whole(mode: ReadMode) {
    if !fuse_available() {
        return;
    }
    let m = mount_in(mode, vec![file("dir/s", 0o644, 0, b"first")]);
    let sub = BindMount::directory(&m.path("dir"));
    let inside = sub.path().join("s");
    assert_eq!(std::fs::read(&inside).unwrap(), b"first");
    let held = std::fs::File::open(&inside).unwrap();
    m.replace("dir/s", b"second, longer");
    assert_eq!(std::fs::read(&inside).unwrap(), b"second, longer");
    m.replace("dir/s", b"3rd");
    assert_eq!(std::fs::read(&inside).unwrap(), b"3rd");
    let mut buf = [0u8; 64];
    let n = held.read_at(&mut buf, 0).unwrap();
    let expected: &[u8] = if mode == ReadMode::Atomic {
        b"3rd"
    } else {
        b"first"
    };
    assert_eq!(&buf[..n], expected);
}

/// Page-cache mode only: warm opens and reads never reach the server (the
/// kernel was told "no open" and keeps the pages across opens); a replace
/// makes the kernel look the new version up before it returns, so the first
/// open+read after it makes one request, the READ of the new version (which
/// records its first read), and none after; and the version it replaced,
/// which nothing holds, is forgotten by the kernel and dropped.
#[test]
fn page_cache_mode_serves_warm_reads_from_the_kernel_and_the_first_read_after_a_replace_with_one_read()
 {
    if !fuse_available() {
        return;
    }
    let m = mount_in(ReadMode::PageCache, vec![file("s", 0o644, 0, b"cached")]);
    let counters = || m.volume().core().counters().snapshot();
    let read = |expected: &[u8]| assert_eq!(std::fs::read(m.path("s")).unwrap(), expected);
    read(b"cached");
    let old = std::fs::metadata(m.path("s")).unwrap().ino();
    let warm = counters();
    for _ in 0..20 {
        read(b"cached");
    }
    assert_eq!(counters(), warm, "warm open+read+close reached the server");

    m.replace("s", b"replaced, longer");
    let mut after = counters();
    read(b"replaced, longer");
    after[2] += 1;
    assert_eq!(
        counters(),
        after,
        "the first read after a replace: one READ, no lookup"
    );
    for _ in 0..20 {
        read(b"replaced, longer");
    }
    assert_eq!(counters(), after, "warm after the replace");

    // The kernel lets the old version go (FORGET) once nothing holds it.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while futures::executor::block_on(m.volume().core().getattr(old)).is_ok() {
        assert!(
            std::time::Instant::now() < deadline,
            "the old version was never forgotten"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}
