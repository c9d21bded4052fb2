//! What other users may do: the kernel checks modes (`default_permissions`)
//! and every user may reach the mount (`allow_other`).

use std::os::unix::fs::MetadataExt;
use std::process::Command;

use super::fixture::*;

fn volume() -> Mounted {
    mount(vec![
        file("public", 0o644, 0, b"everyone"),
        file("group/secret", 0o640, 2000, b"group only"),
        file("owner-only", 0o600, 0, b"root only"),
    ])
}

#[test]
fn a_non_root_user_reads_what_the_mode_allows() {
    if !fuse_available() {
        return;
    }
    let m = volume();
    let public = m.path("public");
    let out = run_as(1000, 1000, &[], "cat", &[public.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(out.stdout, b"everyone");

    let ls = run_as(1000, 1000, &[], "ls", &["-la", m.target.to_str().unwrap()]);
    assert!(ls.status.success(), "{}", stderr(&ls));
    assert!(stdout(&ls).contains("public"));
}

#[test]
fn a_non_root_user_outside_the_group_is_refused() {
    if !fuse_available() {
        return;
    }
    let m = volume();
    let secret = m.path("group/secret");
    let owner_only = m.path("owner-only");

    // The errno of open(2) itself, from a process with those ids.
    assert_eq!(open_errno_as(1001, 1001, &secret), libc::EACCES);
    assert_eq!(open_errno_as(1001, 2000, &owner_only), libc::EACCES);
    // The same processes may open what the mode allows: the refusal above
    // is the mode's, not a set-up failure.
    assert_eq!(open_errno_as(1001, 1001, &m.path("public")), 0);
    assert_eq!(open_errno_as(1001, 2000, &secret), 0);

    // And what a user sees: cat fails, with the C locale's message.
    for (gid, path) in [(1001, &secret), (2000, &owner_only)] {
        let out = Command::new("setpriv")
            .args(["--reuid=1001", &format!("--regid={gid}"), "--clear-groups"])
            .arg("cat")
            .arg(path)
            .env("LC_ALL", "C")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
        assert!(out.stdout.is_empty());
        assert!(
            stderr(&out).contains("Permission denied"),
            "{}",
            stderr(&out)
        );
    }
}

#[test]
fn a_file_owned_by_another_user_shows_its_owner_and_the_owner_bits_apply() {
    if !fuse_available() {
        return;
    }
    let m = mount(vec![
        file_owned("mine", 0o400, 1000, 3000, b"only uid 1000"),
        // Owner bits deny what the other bits allow: the owner is refused.
        file_owned("inverted", 0o044, 1000, 3000, b"everyone but uid 1000"),
    ]);
    let mine = m.path("mine");
    let meta = std::fs::metadata(&mine).unwrap();
    assert_eq!(
        (meta.uid(), meta.gid(), meta.mode() & 0o7777),
        (1000, 3000, 0o400)
    );
    let stat = Command::new("stat")
        .args(["-c", "%u %g %a %U"])
        .arg(&mine)
        .env("LC_ALL", "C")
        .output()
        .unwrap();
    assert!(stat.status.success(), "{}", stderr(&stat));
    let shown = stdout(&stat);
    assert!(shown.starts_with("1000 3000 400 "), "{shown}");

    let out = run_as(1000, 1000, &[], "cat", &[mine.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(out.stdout, b"only uid 1000");
    // Same group as the file, not the owner: the group bits (none) apply.
    assert_eq!(open_errno_as(1001, 3000, &mine), libc::EACCES);
    assert_eq!(open_errno_as(1001, 1001, &mine), libc::EACCES);

    let inverted = m.path("inverted");
    assert_eq!(open_errno_as(1000, 1000, &inverted), libc::EACCES);
    assert_eq!(open_errno_as(1000, 3000, &inverted), libc::EACCES);
    assert_eq!(open_errno_as(1001, 3000, &inverted), 0);
    assert_eq!(open_errno_as(1001, 1001, &inverted), 0);
    // The root directory stays traversable for everyone.
    let ls = run_as(1000, 1000, &[], "ls", &[m.target.to_str().unwrap()]);
    assert!(ls.status.success(), "{}", stderr(&ls));
}

#[test]
fn a_member_of_the_files_group_reads_it() {
    if !fuse_available() {
        return;
    }
    let m = volume();
    let secret = m.path("group/secret");
    // fsGroup as primary group (what kubelet gives a container)...
    let out = run_as(1001, 2000, &[], "cat", &[secret.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(out.stdout, b"group only");
    // ...or as a supplementary group.
    let out = run_as(1001, 1001, &[2000], "cat", &[secret.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn root_reads_everything() {
    if !fuse_available() {
        return;
    }
    let m = volume();
    assert_eq!(std::fs::read(m.path("owner-only")).unwrap(), b"root only");
    assert_eq!(
        std::fs::read(m.path("group/secret")).unwrap(),
        b"group only"
    );
}
