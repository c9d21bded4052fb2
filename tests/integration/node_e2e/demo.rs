//! `secretfs demo`, the README's first command: the real binary, start to
//! finish, and with `--keep` until Ctrl-C.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::harness::fuse_available;

/// Mount points of FUSE file systems below `dir`.
fn mounts_below(dir: &Path) -> Vec<String> {
    let dir = dir.to_string_lossy().into_owned();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(str::to_owned))
        .filter(|m| m.starts_with(&dir))
        .collect()
}

#[test]
fn the_demo_mounts_reads_rotates_and_unpublishes() {
    if !fuse_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_secretfs"))
        .arg("demo")
        .arg("--dir")
        .arg(dir.path())
        .env("SECRETFS_LOG", "error")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "demo failed: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    // The steps of the README, in order.
    let steps = [
        "NodePublishVolume for pod default/nginx-secrets-store-inline (SecretProviderClass azure-kvname): mounted",
        "$ ls -la ",
        " SECRET_1\n",
        "Sql-Passw0rd-from-kv-demo\n",
        "of sql-password into the vault",
        "1 file(s) replaced in place, no remount",
        "Sql-Passw0rd-rotated-v2\n",
        "NodeUnpublishVolume: unmounted and removed",
    ];
    let mut at = 0;
    for step in steps {
        let found = stdout[at..]
            .find(step)
            .unwrap_or_else(|| panic!("demo output lacks {step:?} after byte {at}:\n{stdout}"));
        at += found + step.len();
    }
    // The file the container would see: root-owned, 0644 (no fsGroup).
    assert!(stdout.contains("-rw-r--r-- 1 root root   25 "), "{stdout}");
    assert_eq!(mounts_below(dir.path()), Vec::<String>::new());
}

#[test]
fn the_demo_with_keep_stays_mounted_until_ctrl_c() {
    if !fuse_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_secretfs"))
        .arg("demo")
        .arg("--keep")
        .arg("--dir")
        .arg(dir.path())
        .env("SECRETFS_LOG", "error")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let deadline = Instant::now() + Duration::from_secs(60);
    let target = loop {
        assert!(
            Instant::now() < deadline,
            "demo --keep never said where it stays mounted"
        );
        let line = lines
            .next()
            .expect("demo exited before keeping the volume")
            .unwrap();
        if let Some(rest) = line.strip_prefix("the volume stays mounted at ") {
            let path = rest.split("; press Ctrl-C").next().unwrap();
            break std::path::PathBuf::from(path);
        }
    };
    // Still mounted, the rotated value at the same path.
    assert_eq!(
        mounts_below(dir.path()),
        [target.to_string_lossy().into_owned()]
    );
    assert_eq!(
        std::fs::read_to_string(target.join("SECRET_1")).unwrap(),
        "Sql-Passw0rd-rotated-v2"
    );
    // Ctrl-C: unpublish and exit 0.
    rustix::process::kill_process(
        rustix::process::Pid::from_child(&child),
        rustix::process::Signal::INT,
    )
    .unwrap();
    let rest: Vec<String> = lines.map(Result::unwrap).collect();
    let status = child.wait().unwrap();
    assert!(status.success(), "demo --keep exited with {status}");
    assert!(
        rest.iter()
            .any(|l| l.starts_with("NodeUnpublishVolume: unmounted and removed")),
        "{rest:?}"
    );
    assert_eq!(mounts_below(dir.path()), Vec::<String>::new());
    assert!(!target.exists());
}
