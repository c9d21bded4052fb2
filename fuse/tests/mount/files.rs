//! Contents, sizes, modes, owners and the mount itself.

use std::os::unix::fs::MetadataExt;
use std::process::Command;

use super::fixture::*;

#[test]
fn files_show_their_contents_sizes_modes_and_owners() {
    if !fuse_available() {
        return;
    }
    let m = mount(vec![
        file("SECRET_1", 0o644, 0, b"p@ssw0rd"),
        file("db/password", 0o640, 2000, b"hunter2\n"),
        file("big", 0o444, 0, &vec![b'x'; 70_000]),
    ]);

    assert_eq!(std::fs::read(m.path("SECRET_1")).unwrap(), b"p@ssw0rd");
    assert_eq!(std::fs::read(m.path("db/password")).unwrap(), b"hunter2\n");
    assert_eq!(std::fs::read(m.path("big")).unwrap().len(), 70_000);

    let meta = std::fs::metadata(m.path("db/password")).unwrap();
    assert_eq!(meta.len(), 8);
    assert_eq!(meta.mode() & 0o7777, 0o640);
    assert_eq!((meta.uid(), meta.gid()), (0, 2000));
    assert!(meta.is_file());

    let dir = std::fs::metadata(m.path("db")).unwrap();
    assert!(dir.is_dir());
    assert_eq!(
        dir.mode() & 0o7777,
        0o550,
        "directory mode follows its files"
    );
    assert_eq!(dir.gid(), 2000);
    let root = std::fs::metadata(&m.target).unwrap();
    assert_eq!(root.mode() & 0o7777, 0o555);

    let cat = Command::new("cat")
        .arg(m.path("SECRET_1"))
        .output()
        .unwrap();
    assert_eq!(cat.stdout, b"p@ssw0rd");
    let stat = Command::new("stat")
        .args(["-c", "%s %a %u %g %F"])
        .arg(m.path("db/password"))
        .output()
        .unwrap();
    assert_eq!(stdout(&stat).trim(), "8 640 0 2000 regular file");

    let ls = Command::new("ls")
        .arg("-la")
        .arg(&m.target)
        .output()
        .unwrap();
    let listing = stdout(&ls);
    assert!(ls.status.success(), "{}", stderr(&ls));
    let names: Vec<&str> = listing
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().last())
        .collect();
    assert_eq!(names, [".", "..", "SECRET_1", "big", "db"], "{listing}");
    assert!(listing.contains("-rw-r--r--"), "{listing}");

    let mut entries: Vec<String> = std::fs::read_dir(m.path("db"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    entries.sort();
    assert_eq!(entries, ["password"]);
}

#[test]
fn the_mount_is_read_only_nosuid_nodev_noexec_and_shared() {
    if !fuse_available() {
        return;
    }
    let m = mount(vec![file("a", 0o644, 0, b"1")]);
    let line = mount_line(&m.target).expect("mounted");
    let fields: Vec<&str> = line.split(' ').collect();
    assert_eq!(fields[0], "secretfs", "{line}");
    assert_eq!(fields[2], "fuse.secretfs", "{line}");
    let options: Vec<&str> = fields[3].split(',').collect();
    for wanted in [
        "ro",
        "nosuid",
        "nodev",
        "noexec",
        "default_permissions",
        "allow_other",
    ] {
        assert!(options.contains(&wanted), "{wanted} missing in {line}");
    }
    let df = Command::new("df").arg(&m.target).output().unwrap();
    assert!(stdout(&df).contains("secretfs"), "{}", stdout(&df));
}

#[test]
fn writes_and_every_change_get_erofs() {
    if !fuse_available() {
        return;
    }
    let m = mount(vec![file("a", 0o666, 0, b"1")]);
    let erofs = |result: std::io::Result<()>| {
        let err = result.expect_err("must fail");
        assert_eq!(err.raw_os_error(), Some(libc::EROFS), "{err}");
    };
    erofs(std::fs::write(m.path("a"), b"2"));
    erofs(std::fs::write(m.path("new"), b"2"));
    erofs(std::fs::create_dir(m.path("d")));
    erofs(std::fs::remove_file(m.path("a")));
    erofs(std::fs::rename(m.path("a"), m.path("b")));
    erofs(
        std::fs::OpenOptions::new()
            .append(true)
            .open(m.path("a"))
            .map(drop),
    );
    assert_eq!(std::fs::read(m.path("a")).unwrap(), b"1");
}

#[test]
fn missing_names_are_enoent_and_files_are_not_directories() {
    if !fuse_available() {
        return;
    }
    let m = mount(vec![file("a", 0o644, 0, b"1")]);
    let err = std::fs::read(m.path("nope")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ENOENT));
    let err = std::fs::read(m.path("a/b")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ENOTDIR));
    let err = std::fs::read(&m.target).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EISDIR));
}

#[test]
fn unmount_is_clean_idempotent_and_happens_on_drop() {
    if !fuse_available() {
        return;
    }
    let mut m = mount(vec![file("a", 0o644, 0, b"1")]);
    assert!(mount_line(&m.target).is_some());
    m.unmount();
    assert!(mount_line(&m.target).is_none());
    assert!(std::fs::read_dir(&m.target).unwrap().next().is_none());

    // The same directory can be mounted again; dropping the guard unmounts.
    {
        let again = secretfs_fuse::MountedVolume::mount(
            spec(vec![file("b", 0o644, 0, b"2")]),
            &m.target,
            &secretfs_fuse::MountOptions::default(),
            m.runtime.handle().clone(),
        )
        .unwrap();
        assert_eq!(std::fs::read(m.path("b")).unwrap(), b"2");
        drop(again);
    }
    assert!(mount_line(&m.target).is_none());
}

#[test]
fn unmount_of_a_busy_mount_detaches_it() {
    if !fuse_available() {
        return;
    }
    let mut m = mount(vec![file("a", 0o644, 0, b"held")]);
    let held = std::fs::File::open(m.path("a")).unwrap();
    m.unmount();
    assert!(mount_line(&m.target).is_none());
    // The open file keeps working until it is closed.
    let mut buf = [0u8; 4];
    std::os::unix::fs::FileExt::read_at(&held, &mut buf, 0).unwrap();
    assert_eq!(&buf, b"held");
}

/// Runs `f` on another thread; fails if it takes longer than `limit`
/// (an unmount that waits forever would otherwise hang the test run).
fn within<T: Send + 'static>(
    limit: std::time::Duration,
    what: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(limit)
        .unwrap_or_else(|_| panic!("{what} did not finish within {limit:?}"))
}

fn umount(args: &[&str], target: &std::path::Path) {
    let out = Command::new("umount")
        .args(args)
        .arg(target)
        .env("LC_ALL", "C")
        .output()
        .unwrap();
    assert!(out.status.success(), "umount {args:?}: {}", stderr(&out));
}

#[test]
fn unmount_and_drop_after_an_outside_umount_are_clean() {
    if !fuse_available() {
        return;
    }
    let limit = std::time::Duration::from_secs(10);
    // Explicit unmount after `umount`, then after `umount -l`.
    for args in [&[][..], &["-l"][..]] {
        let mut m = mount(vec![file("a", 0o644, 0, b"1")]);
        assert_eq!(std::fs::read(m.path("a")).unwrap(), b"1");
        umount(args, &m.target);
        assert!(mount_line(&m.target).is_none());
        let mounted = m.mounted.take().unwrap();
        within(limit, "unmount", move || mounted.unmount())
            .unwrap_or_else(|e| panic!("unmount after umount {args:?}: {e}"));
        assert!(mount_line(&m.target).is_none());
    }
    // The guard's Drop after `umount`.
    let mut m = mount(vec![file("a", 0o644, 0, b"1")]);
    umount(&[], &m.target);
    let mounted = m.mounted.take().unwrap();
    within(limit, "drop", move || drop(mounted));
    assert!(mount_line(&m.target).is_none());
}

/// `umount -l` while a file is open: the mount leaves the namespace but
/// lives on in the kernel until the file is closed. Unmounting or dropping
/// the guard then must neither fail nor wait for that close, and the open
/// file keeps reading until it is closed.
#[test]
fn unmount_and_drop_after_an_outside_lazy_umount_of_a_busy_mount_do_not_wait() {
    if !fuse_available() {
        return;
    }
    let limit = std::time::Duration::from_secs(10);
    for explicit in [true, false] {
        let mut m = mount(vec![file("a", 0o644, 0, b"held")]);
        let held = std::fs::File::open(m.path("a")).unwrap();
        umount(&["-l"], &m.target);
        assert!(mount_line(&m.target).is_none());
        let mounted = m.mounted.take().unwrap();
        if explicit {
            within(limit, "unmount", move || mounted.unmount())
                .unwrap_or_else(|e| panic!("unmount after umount -l: {e}"));
        } else {
            within(limit, "drop", move || drop(mounted));
        }
        let mut buf = [0u8; 4];
        std::os::unix::fs::FileExt::read_at(&held, &mut buf, 0).unwrap();
        assert_eq!(&buf, b"held");
        drop(held);
    }
}
