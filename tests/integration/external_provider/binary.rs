//! The real `secretfs provider` binary: serves the seed class over its
//! socket, and stops cleanly on SIGTERM.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use secretfs::cmd::demo::emulator_azure_config;
use secretfs::provider::azure::AzureProvider;
use secretfs::provider::external::{ExternalClient, ExternalProvider, ProviderVolume};
use secretfs::provider::{FileMode, MountRequest, PodRef, Provider};
use secretfs::spc::{SpcDir, SpcSource};
use secretfs_e2e::secrets_seen::LeakScanner;
use secretfs_e2e::{Emulator, EmulatorConfig, Seed};
use secretfs_secrets::SecretMap;

use super::common::config;

const SEED_CLASS: &str = include_str!("../../fixtures/seed/secretproviderclass.yaml");

async fn wait_for_socket(path: &Path) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !path.exists() {
        assert!(Instant::now() < deadline, "{path:?} never appeared");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Starts `secretfs provider` on `socket`, for the emulator `emu`, logging
/// to `stdout`/`stderr` at `filter`.
fn spawn_provider(
    emu: &secretfs_e2e::EmulatorHandle,
    socket: &Path,
    stdout: Stdio,
    stderr: Stdio,
    filter: &str,
) -> std::process::Child {
    let addr = emu.https_addr();
    Command::new(env!("CARGO_BIN_EXE_secretfs"))
        .arg("provider")
        .arg(format!("--endpoint=unix://{}", socket.display()))
        .args(["--nodeid", "e2e-node", "--cache-max-age", "0s"])
        .arg("--azure-ca-file")
        .arg(emu.ca_path())
        .arg(format!("--azure-resolve=*.vault.azure.net={addr}"))
        .arg(format!("--azure-resolve=login.microsoftonline.com={addr}"))
        .arg(format!("--azure-vault-port={}", addr.port()))
        .arg(format!("--azure-authority-host={}", emu.authority_url()))
        .arg(format!("--azure-imds-endpoint={}", emu.imds_url()))
        .arg(format!("--azure-nmi-endpoint={}", emu.imds_url()))
        .env("SECRETFS_LOG", filter)
        .env("NO_COLOR", "1")
        .stdout(stdout)
        .stderr(stderr)
        .spawn()
        .unwrap()
}

/// The seed pod's mount request for the seed class.
async fn seed_request() -> MountRequest {
    let classes = tempfile::tempdir().unwrap();
    std::fs::write(classes.path().join("c.yaml"), SEED_CLASS).unwrap();
    let class = SpcDir::new(classes.path())
        .get("default", "azure-kvname")
        .await
        .unwrap()
        .unwrap();
    MountRequest {
        parameters: class.spec.parameters.clone(),
        pod: PodRef {
            name: "nginx-secrets-store-inline".into(),
            namespace: "default".into(),
            uid: "7f3c1b2a-0d4e-4f5a-9b6c-8d7e6f5a4b3c".into(),
            service_account: "default".into(),
        },
        service_account_tokens: None,
        secrets: SecretMap::default(),
        default_mode: FileMode::DEFAULT,
        current: Vec::new(),
        node_name: "e2e-node".into(),
        max_age: std::time::Duration::ZERO,
        fresh_since: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secretfs_provider_serves_the_seed_class_and_stops_on_sigterm() {
    let emu = Emulator::start(EmulatorConfig::with_seed(Seed::demo()))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("providers/azure.sock");
    // At trace, into a file that must hold no secret (unless
    // SECRETFS_E2E_INHERIT_LOGS=1, as the node e2e suite).
    let log = dir.path().join("provider.log");
    let to_file = std::env::var_os("SECRETFS_E2E_INHERIT_LOGS").is_none_or(|v| v != "1");
    let (stdout, stderr, filter) = if to_file {
        let file = std::fs::File::create(&log).unwrap();
        (file.try_clone().unwrap().into(), file.into(), "trace")
    } else {
        (Stdio::null(), Stdio::inherit(), "secretfs=debug,warn")
    };
    let mut child = spawn_provider(&emu, &socket, stdout, stderr, filter);
    wait_for_socket(&socket).await;
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777,
        0o600
    );

    let request = seed_request().await;
    let client = Arc::new(ExternalClient::new(
        "azure",
        &socket,
        Arc::new(config(vec![socket.parent().unwrap().to_owned()])),
    ));
    let external = ExternalProvider::new(
        client,
        ProviderVolume::new("azure-kvname", Path::new("/t"), []),
    );
    let over_socket = external.mount(&request).await.unwrap();
    let direct = AzureProvider::new(emulator_azure_config(&emu))
        .unwrap()
        .mount(&request)
        .await
        .unwrap();
    assert_eq!(over_socket.files.len(), 1);
    assert_eq!(over_socket.files[0].path, "SECRET_1");
    assert_eq!(
        over_socket.files[0].contents.expose(),
        direct.files[0].contents.expose()
    );
    assert_eq!(over_socket.versions, direct.versions);

    rustix::process::kill_process(
        rustix::process::Pid::from_child(&child),
        rustix::process::Signal::TERM,
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "secretfs provider ignored SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "{status:?}");
    assert!(!socket.exists(), "the socket is removed on shutdown");
    if to_file {
        let text = String::from_utf8_lossy(&std::fs::read(&log).unwrap()).into_owned();
        assert!(text.contains("TRACE"), "the provider logs at trace");
        let leaks = LeakScanner::new(&emu.secrets_seen()).scan("provider.log", &text);
        let report: Vec<String> = leaks.iter().map(ToString::to_string).collect();
        assert!(
            leaks.is_empty(),
            "secrets in the log:\n{}",
            report.join("\n")
        );
    }
}

/// The provider freezes during a Mount, a new one takes its socket, and the
/// frozen one is killed: the broken call is retried (as gRPC-Go retries
/// `UNAVAILABLE`, upstream's retry policy) and reaches the new process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_killed_during_a_mount_is_retried_once_another_serves() {
    use std::os::unix::fs::MetadataExt;
    let emu = Emulator::start(EmulatorConfig::with_seed(Seed::demo()))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("providers/azure.sock");
    let quiet = || (Stdio::null(), Stdio::inherit(), "warn");
    let (out, err, filter) = quiet();
    let mut first = spawn_provider(&emu, &socket, out, err, filter);
    wait_for_socket(&socket).await;
    let first_inode = std::fs::metadata(&socket).unwrap().ino();

    // Upstream's retry policy (3 attempts, 1 s then 1.1 s apart).
    let mut config = config(vec![socket.parent().unwrap().to_owned()]);
    config.retry = secretfs::provider::external::ExternalRetry::default();
    config.timeout = Duration::from_secs(60);
    let client = Arc::new(ExternalClient::new("azure", &socket, Arc::new(config)));
    let external = ExternalProvider::new(
        client,
        ProviderVolume::new("azure-kvname", Path::new("/t"), []),
    );
    let request = seed_request().await;
    // A first call connects.
    external.mount(&request).await.unwrap();

    let first_pid = rustix::process::Pid::from_child(&first);
    rustix::process::kill_process(first_pid, rustix::process::Signal::STOP).unwrap();
    let call = tokio::spawn({
        let external = external.clone();
        let request = request.clone();
        async move { external.mount(&request).await }
    });
    // The frozen provider holds the call; a new one replaces the socket.
    let (out, err, filter) = quiet();
    let mut second = spawn_provider(&emu, &socket, out, err, filter);
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::fs::metadata(&socket)
        .map(|m| m.ino())
        .unwrap_or(first_inode)
        == first_inode
    {
        assert!(Instant::now() < deadline, "the second provider never bound");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!call.is_finished(), "the call waits on the frozen provider");
    rustix::process::kill_process(first_pid, rustix::process::Signal::KILL).unwrap();
    first.wait().unwrap();

    let started = Instant::now();
    let mounted = call
        .await
        .unwrap()
        .expect("the call is retried on the new provider");
    assert_eq!(mounted.files[0].path, "SECRET_1");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );

    // Killed with nothing to take over: the error says the provider went
    // away, and that the retries found nobody.
    rustix::process::kill_process(
        rustix::process::Pid::from_child(&second),
        rustix::process::Signal::STOP,
    )
    .unwrap();
    let call = tokio::spawn({
        let external = external.clone();
        async move { external.mount(&request).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    rustix::process::kill_process(
        rustix::process::Pid::from_child(&second),
        rustix::process::Signal::KILL,
    )
    .unwrap();
    second.wait().unwrap();
    let err = call.await.unwrap().unwrap_err();
    assert_eq!(
        err.kind(),
        secretfs::provider::ErrorKind::Transient,
        "{err}"
    );
    assert!(
        err.to_string().contains("Unavailable") && err.to_string().contains("went away"),
        "{err}"
    );
}
