//! `secretfs mount`: one class outside Kubernetes, identity from the
//! environment, refreshed in the foreground, unmounted on SIGTERM.

use std::process::{Child, Command};
use std::time::{Duration, Instant};

use secretfs_e2e::{Emulator, EmulatorConfig, EmulatorHandle, Seed};

use super::harness::*;

fn spawn(
    emulator: &EmulatorHandle,
    class: &std::path::Path,
    dir: &std::path::Path,
    env: &[(&str, &str)],
    log: &LogCheck,
) -> Child {
    let addr = emulator.https_addr();
    let (stdout, stderr) = log.output();
    Command::new(env!("CARGO_BIN_EXE_secretfs"))
        .arg("mount")
        .arg("--spc")
        .arg(class)
        .args(["--rotation-poll-interval", "1s"])
        .arg(dir)
        .arg("--azure-ca-file")
        .arg(emulator.ca_path())
        .arg(format!("--azure-resolve=*.vault.azure.net={addr}"))
        .arg(format!("--azure-resolve=login.microsoftonline.com={addr}"))
        .arg(format!("--azure-vault-port={}", addr.port()))
        .arg(format!(
            "--azure-authority-host={}",
            emulator.authority_url()
        ))
        .arg(format!("--azure-imds-endpoint={}", emulator.imds_url()))
        .envs(log_envs())
        .envs(env.iter().copied())
        .stdout(stdout)
        .stderr(stderr)
        .spawn()
        .unwrap()
}

async fn wait_for(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn stop(mut child: Child) {
    rustix::process::kill_process(
        rustix::process::Pid::from_child(&child),
        rustix::process::Signal::TERM,
    )
    .unwrap();
    let status = child.wait().unwrap();
    assert!(
        status.success(),
        "secretfs mount exits cleanly on SIGTERM: {status}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seed_class_mounts_standalone_and_rotates() {
    if !fuse_available() {
        return;
    }
    let emulator = Emulator::start(EmulatorConfig::with_seed(Seed::demo()))
        .await
        .unwrap();
    let work = tempfile::tempdir().unwrap();
    let class = work.path().join("spc.yaml");
    std::fs::write(&class, SEED_CLASS).unwrap();
    let dir = work.path().join("secrets");
    std::fs::create_dir(&dir).unwrap();
    let log = LogCheck::new(work.path().join("mount.log"), emulator.control());
    let child = spawn(&emulator, &class, &dir, &[], &log);
    let file = dir.join("SECRET_1");
    wait_for("the mount", Duration::from_secs(20), || {
        std::fs::read(&file).is_ok()
    })
    .await;
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        "Sql-Passw0rd-from-kv-demo"
    );
    emulator
        .control()
        .set_secret("kv-demo", "sql-password", "standalone-rotated")
        .unwrap();
    wait_for("the rotation", Duration::from_secs(5), || {
        std::fs::read_to_string(&file).is_ok_and(|v| v == "standalone-rotated")
    })
    .await;
    stop(child);
    assert!(!is_mounted(&dir));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_principal_from_the_environment() {
    if !fuse_available() {
        return;
    }
    let emulator = Emulator::start(EmulatorConfig::with_seed(Seed::demo()))
        .await
        .unwrap();
    let work = tempfile::tempdir().unwrap();
    let class = work.path().join("spc.yaml");
    std::fs::write(
        &class,
        azure_class("sp", &[], &one_secret("sql-password", "password")),
    )
    .unwrap();
    let dir = work.path().join("secrets");
    std::fs::create_dir(&dir).unwrap();
    let log = LogCheck::new(work.path().join("mount.log"), emulator.control());
    let child = spawn(
        &emulator,
        &class,
        &dir,
        &[
            ("AZURE_CLIENT_ID", "3f8e2d1c-7b6a-4c5d-9e8f-1a2b3c4d5e6f"),
            ("AZURE_CLIENT_SECRET", "emulator-test-client-secret"),
        ],
        &log,
    );
    let file = dir.join("password");
    wait_for("the mount", Duration::from_secs(20), || {
        std::fs::read(&file).is_ok()
    })
    .await;
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        "Sql-Passw0rd-from-kv-demo"
    );
    stop(child);
}
