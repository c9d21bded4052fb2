//! Contents and entries change in place, with no remount.

use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::{FileExt, MetadataExt};

use secretfs_fuse::{Content, FileSpec};

use super::fixture::*;

#[test]
fn a_replace_is_seen_at_the_same_path_longer_and_shorter() {
    if !fuse_available() {
        return;
    }
    let m = mount(vec![file("s", 0o644, 0, b"first")]);
    assert_eq!(std::fs::read(m.path("s")).unwrap(), b"first");
    m.replace("s", b"second, and longer");
    assert_eq!(std::fs::read(m.path("s")).unwrap(), b"second, and longer");
    assert_eq!(std::fs::metadata(m.path("s")).unwrap().len(), 18);
    m.replace("s", b"3rd");
    assert_eq!(std::fs::read(m.path("s")).unwrap(), b"3rd");
    assert_eq!(std::fs::metadata(m.path("s")).unwrap().len(), 3);
}

#[test]
fn a_replace_is_seen_through_a_descriptor_opened_before_it() {
    if !fuse_available() {
        return;
    }
    let m = mount(vec![file("s", 0o644, 0, b"old value")]);
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
    held.seek(SeekFrom::Start(0)).unwrap();
    let mut text = String::new();
    held.read_to_string(&mut text).unwrap();
    assert_eq!(text, "short");
    assert_eq!(held.metadata().unwrap().len(), 5);
}

#[test]
fn a_replace_updates_mtime() {
    if !fuse_available() {
        return;
    }
    let m = mount(vec![file("s", 0o644, 0, b"a")]);
    let before = std::fs::metadata(m.path("s")).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(20));
    m.replace("s", b"b");
    let after = std::fs::metadata(m.path("s")).unwrap();
    let nanos = |m: &std::fs::Metadata| m.mtime() as i128 * 1_000_000_000 + m.mtime_nsec() as i128;
    assert!(nanos(&after) > nanos(&before));
}

#[test]
fn files_added_and_removed_appear_and_disappear() {
    if !fuse_available() {
        return;
    }
    let m = mount(vec![file("keep", 0o644, 0, b"k")]);
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
}

#[test]
fn files_can_be_memory_mapped_and_follow_replaces() {
    if !fuse_available() {
        return;
    }
    let m = mount(vec![file("s", 0o644, 0, b"mapped one")]);
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import mmap,sys; f=open(sys.argv[1],'rb'); print(mmap.mmap(f.fileno(),0,prot=mmap.PROT_READ)[:].decode())",
        ])
        .arg(m.path("s"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), "mapped one");
}
