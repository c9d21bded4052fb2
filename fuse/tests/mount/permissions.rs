//! What other users may do: the kernel checks modes (`default_permissions`)
//! and every user may reach the mount (`allow_other`).

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
    let out = run_as(1001, 1001, &[], "cat", &[secret.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("Permission denied"),
        "{}",
        stderr(&out)
    );
    let owner_only = m.path("owner-only");
    let out = run_as(1001, 2000, &[], "cat", &[owner_only.to_str().unwrap()]);
    assert!(
        stderr(&out).contains("Permission denied"),
        "{}",
        stderr(&out)
    );
    // In-process check of the errno itself.
    let err = std::process::Command::new("setpriv")
        .args([
            "--reuid=1001",
            "--regid=1001",
            "--clear-groups",
            "test",
            "-r",
        ])
        .arg(&secret)
        .status()
        .unwrap();
    assert!(!err.success());
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
