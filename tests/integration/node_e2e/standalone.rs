//! `secretfs mount`: one class outside Kubernetes, identity from the
//! environment, refreshed in the foreground, unmounted on SIGTERM.

use std::process::{Child, Command};
use std::time::{Duration, Instant};

use secretfs_e2e::{CounterFilter, Emulator, EmulatorConfig, EmulatorHandle, Route, Seed};

use super::harness::*;

fn spawn(
    emulator: &EmulatorHandle,
    class: &std::path::Path,
    dir: &std::path::Path,
    env: &[(&str, &str)],
    log: &LogCheck,
) -> Child {
    let (stdout, stderr) = log.output();
    command(emulator, class, dir, &emulator.imds_url())
        .envs(env.iter().copied())
        .stdout(stdout)
        .stderr(stderr)
        .spawn()
        .unwrap()
}

/// `secretfs mount` of `class` at `dir` against the emulator, IMDS at `imds`.
fn command(
    emulator: &EmulatorHandle,
    class: &std::path::Path,
    dir: &std::path::Path,
    imds: &str,
) -> Command {
    let addr = emulator.https_addr();
    let mut command = Command::new(env!("CARGO_BIN_EXE_secretfs"));
    command
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
        .arg(format!("--azure-imds-endpoint={imds}"))
        .envs(log_envs())
        .env_remove("AZURE_CLIENT_ID")
        .env_remove("AZURE_CLIENT_SECRET")
        .env_remove("AZURE_TENANT_ID")
        .env_remove("AZURE_FEDERATED_TOKEN_FILE")
        .env_remove("AZURE_AUTHORITY_HOST");
    command
}

/// Where nothing listens: IMDS "is not there" (connection refused at once).
const NO_IMDS: &str = "http://127.0.0.1:9";

/// `secretfs mount` hardens its memory as `secretfs node` does: memory is
/// locked (`VmLck`), and the secret it holds is in an anonymous mapping both
/// locked and excluded from core dumps (`lo` and `dd` in smaps).
fn assert_hardened(pid: u32) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let locked: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmLck:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap();
    assert!(locked > 0, "VmLck of secretfs mount: {locked} kB");
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap();
    let mut anonymous = false;
    let found = smaps.lines().any(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields
            .first()
            .is_some_and(|f| f.contains('-') && !f.ends_with(':'))
        {
            // A mapping's first line: range, perms, offset, dev, inode[, path].
            anonymous = fields.len() == 5;
            return false;
        }
        anonymous
            && line.strip_prefix("VmFlags:").is_some_and(|flags| {
                let flags: Vec<&str> = flags.split_whitespace().collect();
                flags.contains(&"dd") && flags.contains(&"lo")
            })
    });
    assert!(
        found,
        "a locked, non-dumped anonymous mapping holds the secret"
    );
    // mlockall (hygiene::harden), not only the secrets' own mlock: the
    // executable's mappings are locked too.
    let mut exe = false;
    let exe_locked = smaps.lines().any(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields
            .first()
            .is_some_and(|f| f.contains('-') && !f.ends_with(':'))
        {
            exe = fields.get(5).is_some_and(|p| p.ends_with("/secretfs"));
            return false;
        }
        exe && line
            .strip_prefix("VmFlags:")
            .is_some_and(|flags| flags.split_whitespace().any(|f| f == "lo"))
    });
    assert!(exe_locked, "mlockall locked the executable's pages");
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
    assert_hardened(child.id());
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

/// A class naming no identity, on `kv-demo`'s `sql-password` as `password`,
/// and the directory to mount it at.
fn plain_class(work: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let class = work.join("spc.yaml");
    std::fs::write(
        &class,
        azure_class("plain", &[], &one_secret("sql-password", "password")),
    )
    .unwrap();
    let dir = work.join("secrets");
    std::fs::create_dir(&dir).unwrap();
    (class, dir)
}

async fn demo_emulator() -> EmulatorHandle {
    Emulator::start(EmulatorConfig::with_seed(Seed::demo()))
        .await
        .unwrap()
}

async fn reads_the_secret(dir: &std::path::Path) {
    let file = dir.join("password");
    wait_for("the mount", Duration::from_secs(20), || {
        std::fs::read(&file).is_ok()
    })
    .await;
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        "Sql-Passw0rd-from-kv-demo"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workload_identity_from_the_environment_with_a_token_file() {
    if !fuse_available() {
        return;
    }
    let emulator = demo_emulator().await;
    let work = tempfile::tempdir().unwrap();
    let (class, dir) = plain_class(work.path());
    let token_file = work.path().join("azure-identity-token");
    let token = emulator
        .control()
        .service_account_token("default", "workload-sa")
        .unwrap();
    std::fs::write(&token_file, &token).unwrap();
    let log = LogCheck::new(work.path().join("mount.log"), emulator.control());
    let child = spawn(
        &emulator,
        &class,
        &dir,
        &[
            // workload-app, federated with default/workload-sa.
            ("AZURE_CLIENT_ID", "7c6b5a49-3e2d-4f1a-8b9c-0d1e2f3a4b5c"),
            ("AZURE_TENANT_ID", "9c0d2e7b-1a3f-4b6c-8d5e-7f1a2b3c4d5e"),
            ("AZURE_FEDERATED_TOKEN_FILE", token_file.to_str().unwrap()),
        ],
        &log,
    );
    reads_the_secret(&dir).await;
    let control = emulator.control();
    assert!(control.count(&CounterFilter::route(Route::EntraToken)) >= 1);
    assert_eq!(control.count(&CounterFilter::route(Route::ImdsToken)), 0);
    stop(child);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn managed_identity_is_the_fallback_when_the_environment_names_none() {
    if !fuse_available() {
        return;
    }
    let emulator = demo_emulator().await;
    let work = tempfile::tempdir().unwrap();
    let (class, dir) = plain_class(work.path());
    let log = LogCheck::new(work.path().join("mount.log"), emulator.control());
    let child = spawn(&emulator, &class, &dir, &[], &log);
    reads_the_secret(&dir).await;
    let control = emulator.control();
    // The probe and the provider's own request: the node identity.
    assert!(control.count(&CounterFilter::route(Route::ImdsToken).status(200)) >= 1);
    assert_eq!(control.count(&CounterFilter::route(Route::EntraToken)), 0);
    stop(child);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_azure_cli_is_the_last_source() {
    if !fuse_available() {
        return;
    }
    let emulator = demo_emulator().await;
    let work = tempfile::tempdir().unwrap();
    let (class, dir) = plain_class(work.path());
    // A fake `az` that records its arguments and prints what
    // `az account get-access-token -o json` prints.
    let bin = work.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let calls = work.path().join("az-calls");
    let token = emulator
        .control()
        .access_token("app-sp", "https://vault.azure.net", 3600)
        .unwrap();
    let expires = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600;
    let output = serde_json::json!({
        "accessToken": token,
        "expiresOn": "2099-01-01 00:00:00.000000",
        "expires_on": expires,
        "subscription": "2b7e4f1a-93c4-4d8e-b1f0-6a2c5d8e0f37",
        "tenant": "9c0d2e7b-1a3f-4b6c-8d5e-7f1a2b3c4d5e",
        "tokenType": "Bearer"
    });
    std::fs::write(work.path().join("az-output.json"), output.to_string()).unwrap();
    let az = bin.join("az");
    std::fs::write(
        &az,
        format!(
            "#!/bin/sh\nprintf '%s\\n' \"$*\" >> {calls:?}\ncat {:?}\n",
            work.path().join("az-output.json")
        ),
    )
    .unwrap();
    std::fs::set_permissions(&az, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());

    let log = LogCheck::new(work.path().join("mount.log"), emulator.control());
    let (stdout, stderr) = log.output();
    let child = command(&emulator, &class, &dir, NO_IMDS)
        .env("PATH", &path)
        .stdout(stdout)
        .stderr(stderr)
        .spawn()
        .unwrap();
    reads_the_secret(&dir).await;
    let recorded = std::fs::read_to_string(&calls).unwrap();
    let first = recorded.lines().next().unwrap();
    assert_eq!(
        first,
        "account get-access-token -o json --scope https://vault.azure.net/.default --tenant 9c0d2e7b-1a3f-4b6c-8d5e-7f1a2b3c4d5e",
        "the command az is run with"
    );
    // Refreshes reuse the token until it nears expiry: az ran once.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(std::fs::read_to_string(&calls).unwrap().lines().count(), 1);
    assert_eq!(
        emulator
            .control()
            .count(&CounterFilter::route(Route::EntraToken)),
        0
    );
    stop(child);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_no_source_at_all_the_error_names_every_one() {
    if !fuse_available() {
        return;
    }
    let emulator = demo_emulator().await;
    let work = tempfile::tempdir().unwrap();
    let (class, dir) = plain_class(work.path());
    let empty = work.path().join("empty-bin");
    std::fs::create_dir(&empty).unwrap();
    // `sh` is found through its absolute path; `az` is on no PATH entry.
    let output = command(&emulator, &class, &dir, NO_IMDS)
        .env("PATH", &empty)
        .env("AZURE_CLIENT_ID", "3f8e2d1c-7b6a-4c5d-9e8f-1a2b3c4d5e6f")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    for needle in [
        "az not found on PATH",
        "AZURE_FEDERATED_TOKEN_FILE",
        "AZURE_CLIENT_SECRET",
        "useVMManagedIdentity",
        NO_IMDS,
        "az login",
    ] {
        assert!(stderr.contains(needle), "names {needle}: {stderr}");
    }
    assert!(!is_mounted(&dir));
}
