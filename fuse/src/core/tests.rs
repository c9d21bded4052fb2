//! Attributes and reads of the core, with no kernel.

use std::time::Duration;

use futures::executor::block_on;

use super::*;
use crate::spec::{Content, VolumeSpec};

const VOLUME: &str = "vol-attrs";

fn file(path: &str, mode: u32, uid: u32, gid: u32, bytes: &[u8]) -> FileSpec {
    FileSpec::new(path, mode, uid, gid, Content::bytes(bytes)).unwrap()
}

fn core(files: Vec<FileSpec>) -> FsCore {
    FsCore::new(
        Tree::build(VolumeSpec {
            id: VolumeId::new(VOLUME),
            dir_uid: 10,
            dir_gid: 20,
            files,
        })
        .unwrap(),
    )
}

fn bytes(b: &[u8]) -> Arc<SecretBytes> {
    Arc::new(SecretBytes::from_slice(b))
}

/// Attributes of `path`, looked up from the root one name at a time.
fn stat(core: &FsCore, path: &str) -> Attr {
    let mut attr = block_on(core.getattr(ROOT_INO)).unwrap();
    for name in path.split('/').filter(|n| !n.is_empty()) {
        attr = block_on(core.lookup(attr.ino, name)).unwrap();
    }
    attr
}

fn read(core: &FsCore, ino: u64) -> Vec<u8> {
    block_on(core.read(ino, 0, 1 << 20))
        .unwrap()
        .as_slice()
        .to_vec()
}

#[test]
fn files_report_kind_size_owner_mode_one_link_and_their_derived_numbers() {
    let core = core(vec![
        file("SECRET_1", 0o640, 1000, 2000, b"p@ssw0rd"),
        file("empty", 0o400, 0, 0, b""),
    ]);
    let attr = stat(&core, "SECRET_1");
    assert_eq!(attr.kind, Kind::File);
    assert_eq!(attr.size, 8);
    assert_eq!((attr.perm, attr.uid, attr.gid), (0o640, 1000, 2000));
    assert_eq!(attr.nlink, 1);
    assert_eq!(attr.ino, crate::inode::inode_number(VOLUME, "SECRET_1", 0));
    assert_eq!(
        attr.generation,
        crate::inode::generation(VOLUME, "SECRET_1")
    );
    assert_ne!(attr.generation, 0);
    assert_eq!(block_on(core.getattr(attr.ino)).unwrap(), attr);

    let empty = stat(&core, "empty");
    assert_eq!((empty.kind, empty.size, empty.nlink), (Kind::File, 0, 1));
    assert_eq!(empty.generation, crate::inode::generation(VOLUME, "empty"));
}

#[test]
fn directories_report_two_links_plus_one_per_subdirectory() {
    let core = core(vec![
        file("top", 0o644, 0, 0, b"t"),
        file("a/f", 0o640, 0, 0, b"f"),
        file("a/b/x", 0o600, 0, 0, b"x"),
        file("a/c/y", 0o600, 0, 0, b"y"),
        file("a/c/d/z", 0o600, 0, 0, b"z"),
    ]);
    let root = stat(&core, "");
    assert_eq!(
        (root.ino, root.kind, root.size),
        (ROOT_INO, Kind::Directory, 0)
    );
    assert_eq!((root.perm, root.uid, root.gid), (0o555, 10, 20));
    assert_eq!(root.nlink, 3, "root: . and .. plus a");
    assert_eq!(root.generation, 1);
    let nlink = |path| stat(&core, path).nlink;
    assert_eq!(nlink("a"), 4, "a: b and c, the file f does not count");
    assert_eq!(nlink("a/b"), 2);
    assert_eq!(nlink("a/c"), 3);
    let dir = stat(&core, "a/c");
    assert_eq!(dir.kind, Kind::Directory);
    assert_eq!((dir.uid, dir.gid), (10, 20));
    assert_eq!(dir.generation, crate::inode::generation(VOLUME, "a/c"));
    assert_eq!(dir.ino, crate::inode::inode_number(VOLUME, "a/c", 0));
    // Directories keep the volume's creation time.
    assert_eq!(dir.mtime, root.crtime);
    assert_eq!(root.mtime, root.crtime);

    // Adding and removing subdirectories moves the counts.
    core.add(file("a/e/w", 0o600, 0, 0, b"w")).unwrap();
    assert_eq!(nlink("a"), 5);
    core.remove("a/c/d/z").unwrap();
    assert_eq!(nlink("a/c"), 2);
    core.remove("a/c/y").unwrap();
    assert_eq!(nlink("a"), 4, "a/c went with its last file");
    assert_eq!(
        block_on(core.lookup(stat(&core, "a").ino, "c")),
        Err(FsError::NotFound)
    );
}

#[test]
fn a_replace_of_a_looked_up_file_gives_the_name_a_new_inode_and_keeps_the_old_version() {
    let core = core(vec![file("s", 0o600, 7, 8, b"first")]);
    let before = stat(&core, "s");
    assert_eq!(read(&core, before.ino), b"first");
    std::thread::sleep(Duration::from_millis(2));

    let swap = core.replace("s", bytes(b"second, longer")).unwrap();
    let after = stat(&core, "s");
    assert_eq!(swap.moved, Some((ROOT_INO, "s".to_owned())));
    assert_eq!(swap.ino, after.ino);
    assert_ne!(after.ino, before.ino, "a new version is a new inode");
    assert_eq!(
        after.ino,
        crate::inode::version_inode_number(VOLUME, "s", 1, 0)
    );
    assert_eq!(read(&core, after.ino), b"second, longer");
    assert_eq!(after.size, 14);
    assert!(after.mtime > before.mtime, "mtime moves on replace");
    assert_eq!(after.crtime, before.crtime);
    assert_eq!(
        (after.generation, after.kind, after.nlink),
        (before.generation, Kind::File, 1)
    );
    assert_eq!((after.perm, after.uid, after.gid), (0o600, 7, 8));

    // The old version, still held by the kernel, keeps its bytes and
    // attributes: a descriptor opened before reads it whole.
    assert_eq!(swap.kept, vec![before.ino]);
    assert_eq!(read(&core, before.ino), b"first");
    assert_eq!(block_on(core.getattr(before.ino)).unwrap(), before);
    // Until the kernel forgets it.
    core.forget(before.ino, 1);
    assert_eq!(block_on(core.getattr(before.ino)), Err(FsError::NotFound));

    std::thread::sleep(Duration::from_millis(2));
    core.replace("s", bytes(b"3rd")).unwrap();
    let shorter = stat(&core, "s");
    assert_eq!(read(&core, shorter.ino), b"3rd");
    assert_eq!(shorter.size, 3);
    assert!(shorter.mtime > after.mtime);
    // The volume's figures follow the current versions only.
    assert_eq!(core.statfs().blocks, 1);
    assert_eq!(core.statfs().files, 1);

    assert_eq!(
        core.replace("missing", bytes(b"x")),
        Err(TreeError::NotFound {
            path: "missing".to_owned()
        })
    );
}

#[test]
fn a_file_the_kernel_never_looked_up_changes_in_place() {
    let core = core(vec![file("s", 0o644, 0, 0, b"one")]);
    let ino = core.read_tree().ino_of("s").unwrap();
    let swap = core.replace("s", bytes(b"two!")).unwrap();
    assert_eq!(swap.moved, None);
    assert_eq!(swap.ino, ino);
    assert_eq!(stat(&core, "s").ino, ino);
    assert_eq!(read(&core, ino), b"two!");
    // Looked up once and forgotten: in place again.
    core.forget(ino, 1);
    assert_eq!(core.replace("s", bytes(b"3")).unwrap().moved, None);
    assert_eq!(stat(&core, "s").ino, ino);
}

#[test]
fn an_older_version_that_follows_answers_the_newest_under_its_own_number() {
    let core = core(vec![file("d/s", 0o640, 1, 2, b"pinned")]);
    let pinned = stat(&core, "d/s");
    core.replace("d/s", bytes(b"second")).unwrap();
    assert!(core.follow(pinned.ino), "a kept version can follow");
    assert!(!core.follow(pinned.ino), "only once");
    let attr = block_on(core.getattr(pinned.ino)).unwrap();
    assert_eq!((attr.ino, attr.size), (pinned.ino, 6));
    assert_eq!(read(&core, pinned.ino), b"second");
    stat(&core, "d/s");
    let swap = core.replace("d/s", bytes(b"third, longer")).unwrap();
    assert_eq!(
        swap.follows,
        vec![pinned.ino],
        "invalidated at every change"
    );
    assert_eq!(read(&core, pinned.ino), b"third, longer");
    assert_eq!(block_on(core.getattr(pinned.ino)).unwrap().size, 13);
    // Removing the file leaves it the last bytes.
    core.remove("d/s").unwrap();
    assert_eq!(read(&core, pinned.ino), b"third, longer");
    assert_eq!(core.file_paths(), Vec::<String>::new());
}

#[test]
fn in_atomic_mode_older_versions_follow_the_newest() {
    let core = core(vec![file("s", 0o644, 0, 0, b"old")]);
    core.set_keep_versions(false);
    let held = stat(&core, "s");
    let swap = core.replace("s", bytes(b"new")).unwrap();
    assert_eq!(swap.follows, vec![held.ino]);
    assert!(swap.kept.is_empty());
    assert_eq!(read(&core, held.ino), b"new");
}

#[test]
fn a_removed_file_stays_readable_through_a_held_version_until_forgotten() {
    let core = core(vec![file("s", 0o644, 0, 0, b"gone soon")]);
    let held = stat(&core, "s");
    core.remove("s").unwrap();
    assert_eq!(read(&core, held.ino), b"gone soon");
    assert_eq!(block_on(core.lookup(ROOT_INO, "s")), Err(FsError::NotFound));
    core.forget(held.ino, 1);
    assert!(block_on(core.read(held.ino, 0, 10)).is_err());
    // Added again: a new inode, never the old number.
    core.add(file("s", 0o644, 0, 0, b"back")).unwrap();
    let back = stat(&core, "s");
    assert_ne!(back.ino, held.ino);
    assert_eq!(read(&core, back.ino), b"back");
}

#[test]
fn a_process_taking_over_answers_every_recorded_inode_and_moves_every_name() {
    let first = core(vec![
        file("a", 0o644, 0, 0, b"a1"),
        file("b", 0o644, 0, 0, b"b1"),
    ]);
    let a0 = stat(&first, "a");
    first.replace("a", bytes(b"a2")).unwrap();
    let a1 = stat(&first, "a");
    let b0 = stat(&first, "b");
    let recorded =
        crate::tree::decode_versions(&crate::tree::encode_versions(&first.version_state()))
            .unwrap()
            .unwrap();
    assert_eq!(recorded.len(), 2);

    // The next process has the newest bytes only.
    let next = core(vec![
        file("a", 0o644, 0, 0, b"a2"),
        file("b", 0o644, 0, 0, b"b1"),
    ]);
    let inval = next.adopt(Some(&recorded));
    for old in [a0.ino, a1.ino, b0.ino] {
        assert!(inval.inodes.contains(&old), "{old:x} invalidated");
        assert!(block_on(next.getattr(old)).is_ok(), "{old:x} answered");
    }
    assert_eq!(
        read(&next, a0.ino),
        b"a2",
        "taken over with the bytes kept now"
    );
    assert_eq!(read(&next, a1.ino), b"a2");
    assert_eq!(read(&next, b0.ino), b"b1");
    assert_eq!(inval.entries.len(), 2, "every name");
    let a = stat(&next, "a");
    assert!(![a0.ino, a1.ino].contains(&a.ino), "the name moved on");
    assert_eq!(
        a.ino,
        crate::inode::version_inode_number(VOLUME, "a", 1 + 5, 0)
    );
    // Versions a crash may have left unrecorded are answered too.
    let ghost = crate::inode::version_inode_number(VOLUME, "a", 2, 0);
    assert_eq!(read(&next, ghost), b"a2");
    // Taken-over versions go at their first FORGET.
    next.forget(a0.ino, 1);
    assert_eq!(block_on(next.getattr(a0.ino)), Err(FsError::NotFound));

    // From a build that recorded nothing: version 0 was every file's.
    let old = core(vec![file("a", 0o644, 0, 0, b"x")]);
    let v0 = stat(&old, "a").ino;
    let inval = old.adopt(None);
    assert!(inval.inodes.contains(&v0));
    assert_ne!(stat(&old, "a").ino, v0);
    assert_eq!(read(&old, v0), b"x");
}

fn first_read(core: &FsCore, path: &str) -> Option<SystemTime> {
    core.reads()
        .into_iter()
        .find(|r| r.path == path)
        .unwrap()
        .first_read
}

#[test]
fn a_read_marks_the_version_it_answers_and_only_a_read_does() {
    struct Source;
    impl crate::spec::ContentSource for Source {
        fn load(
            &self,
        ) -> futures::future::BoxFuture<'static, Result<Arc<SecretBytes>, crate::spec::LoadError>>
        {
            Box::pin(async { Ok(Arc::new(SecretBytes::from_slice(b"lazy"))) })
        }
    }
    let lazy = FileSpec::new("l", 0o644, 0, 0, Content::Lazy(Arc::new(Source))).unwrap();
    let core = core(vec![file("s", 0o644, 0, 0, b"one"), lazy]);
    // Lookups and attributes load and report, but are no read.
    let s = stat(&core, "s");
    let l = stat(&core, "l");
    block_on(core.getattr(l.ino)).unwrap();
    assert_eq!(
        (first_read(&core, "s"), first_read(&core, "l")),
        (None, None)
    );
    assert_eq!(read(&core, l.ino), b"lazy");
    let loaded = first_read(&core, "l").expect("the lazy file was read");
    // An unload keeps the record (same contents); a reload is no read.
    core.unload("l").unwrap();
    assert_eq!(first_read(&core, "l"), Some(loaded));

    // A read of the version a descriptor kept marks that version, not
    // the new one; a version that follows marks the newest.
    core.replace("s", bytes(b"two")).unwrap();
    assert_eq!(read(&core, s.ino), b"one");
    assert_eq!(first_read(&core, "s"), None, "the kept version was read");
    assert!(core.follow(s.ino));
    assert_eq!(read(&core, s.ino), b"two");
    assert!(first_read(&core, "s").is_some(), "it answered the newest");
}

#[test]
fn reads_cut_to_the_offset_and_length_asked() {
    let core = core(vec![file("s", 0o600, 0, 0, b"0123456789")]);
    let ino = stat(&core, "s").ino;
    let slice = |offset, size| {
        block_on(core.read(ino, offset, size))
            .unwrap()
            .as_slice()
            .to_vec()
    };
    assert_eq!(slice(2, 3), b"234");
    assert_eq!(slice(8, 100), b"89");
    assert_eq!(slice(10, 5), b"");
    assert_eq!(slice(u64::MAX, 5), b"");
    assert_eq!(
        block_on(core.read(ROOT_INO, 0, 1)).unwrap_err(),
        FsError::IsADirectory
    );
}

/// Reads raced against replaces: each read of the name's current
/// version answers one whole value, never one older than the last
/// replace completed before the lookup.
#[test]
fn looked_up_reads_racing_replaces_return_whole_values_never_older() {
    fn value(i: usize) -> Vec<u8> {
        let len = 8 + (i * 37) % 300;
        let mut v = format!("{i:06}|").into_bytes();
        v.resize(len, b'a' + (i % 26) as u8);
        v
    }
    fn number(read: &[u8]) -> usize {
        let i: usize = std::str::from_utf8(&read[..6]).unwrap().parse().unwrap();
        assert_eq!(read, value(i).as_slice(), "a mix of two values");
        i
    }
    const REPLACES: usize = 2000;
    let core = Arc::new(core(vec![file("s", 0o600, 0, 0, &value(0))]));
    let completed = Arc::new(AtomicU64::new(0));
    let readers: Vec<_> = (0..4)
        .map(|_| {
            let (core, completed) = (core.clone(), completed.clone());
            std::thread::spawn(move || {
                let mut reads = 0;
                loop {
                    let floor = completed.load(Ordering::SeqCst) as usize;
                    let attr = stat(&core, "s");
                    let read = read(&core, attr.ino);
                    let i = number(&read);
                    assert!(i >= floor, "read {i} after {floor} completed");
                    assert_eq!(attr.size, read.len() as u64);
                    core.forget(attr.ino, 1);
                    reads += 1;
                    if floor == REPLACES {
                        return reads;
                    }
                }
            })
        })
        .collect();
    for i in 1..=REPLACES {
        core.replace("s", bytes(&value(i))).unwrap();
        completed.store(i as u64, Ordering::SeqCst);
    }
    for reader in readers {
        assert!(reader.join().unwrap() > 0);
    }
    let last = stat(&core, "s");
    assert_eq!(number(&read(&core, last.ino)), REPLACES);
    // Every older version was forgotten and dropped.
    assert_eq!(core.version_state()[0].inodes, vec![last.ino]);
}
