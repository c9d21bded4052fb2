//! Contents and entries change in place, with no remount, in both read
//! modes: `Atomic` (direct I/O: every read comes to the server) and
//! `PageCache` (the kernel is told "no open", keeps pages across opens, and
//! drops them and the size when the server invalidates the inode).

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
    a_replace_is_seen_through_a_descriptor_opened_before_it,
    a_replace_updates_mtime,
    files_added_and_removed_appear_and_disappear,
    files_can_be_memory_mapped_and_follow_replaces,
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
    let meta = std::fs::metadata(m.path("s")).unwrap();
    assert_eq!((meta.len(), meta.ino()), (3, ino), "same inode, new size");
}

fn a_replace_is_seen_through_a_descriptor_opened_before_it(mode: ReadMode) {
    if !fuse_available() {
        return;
    }
    let m = mount_in(mode, vec![file("s", 0o644, 0, b"old value")]);
    let mut held = std::fs::File::open(m.path("s")).unwrap();
    let mut text = String::new();
    held.read_to_string(&mut text).unwrap();
    assert_eq!(text, "old value");

    m.replace("s", b"a new, longer value");
    let mut buf = vec![0u8; 64];
    let n = held.read_at(&mut buf, 0).unwrap();
    assert_eq!(&buf[..n], b"a new, longer value");
    assert_eq!(held.metadata().unwrap().len(), 19);

    m.replace("s", b"short");
    assert_eq!(held.metadata().unwrap().len(), 5);
    held.seek(SeekFrom::Start(0)).unwrap();
    let mut text = String::new();
    held.read_to_string(&mut text).unwrap();
    assert_eq!(text, "short");

    // A read at an offset past the new end finds nothing.
    m.replace("s", b"ab");
    assert_eq!(held.read_at(&mut buf, 4).unwrap(), 0);
    assert_eq!(held.read_at(&mut buf, 0).unwrap(), 2);
    assert_eq!(&buf[..2], b"ab");
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

/// A mapping made after a replace shows the new bytes. What a mapping made
/// before it shows depends on the mode (docs/SEMANTICS.md):
/// - atomic: the new bytes at once. The invalidation drops the pages under
///   every mapping, and the page fault that follows reads the newest value.
/// - page cache: the old bytes, until the kernel next asks for the file's
///   attributes (any `stat`, `open` or `read(2)` of it); then the new
///   bytes. The pages are dropped as well, but a page fault does not
///   revalidate the size, so the server answers the version whose size the
///   kernel still holds: the old one, whole, rather than new bytes cut to
///   the old length.
///
/// (A mapping longer than the new value, past its end: zeros within the
/// last page, SIGBUS beyond it, as on any file system; not tested.)
fn files_can_be_memory_mapped_and_follow_replaces(mode: ReadMode) {
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
    assert_eq!(
        old_mapping, "mapped two",
        "the mapping made before the replace, before anything asked for the attributes ({mode:?})"
    );
    assert_eq!(
        old_mapping_later, "mapped two",
        "the mapping made before the replace, after the new open"
    );
}

/// Page-cache mode only: warm opens and reads never reach the server (the
/// kernel was told "no open" and keeps the pages across opens), and after a
/// replace the invalidation makes exactly the next access come back for
/// the new attributes and bytes, once.
#[test]
fn page_cache_mode_serves_warm_reads_from_the_kernel_until_a_replace() {
    if !fuse_available() {
        return;
    }
    let m = mount_in(ReadMode::PageCache, vec![file("s", 0o644, 0, b"cached")]);
    let counters = || m.volume().core().counters().snapshot();
    let read = |expected: &[u8]| assert_eq!(std::fs::read(m.path("s")).unwrap(), expected);
    read(b"cached");
    let warm = counters();
    for _ in 0..20 {
        read(b"cached");
    }
    assert_eq!(counters(), warm, "warm open+read+close reached the server");

    m.replace("s", b"replaced, longer");
    read(b"replaced, longer");
    let [lookups, getattrs, reads, _, _] = counters();
    assert_eq!(lookups, warm[0], "the name stays cached");
    assert!(getattrs > warm[1], "the new size was asked for");
    assert!(reads > warm[2], "the new bytes were read");
    let after = counters();
    for _ in 0..20 {
        read(b"replaced, longer");
    }
    assert_eq!(counters(), after, "warm again after the replace");
}
