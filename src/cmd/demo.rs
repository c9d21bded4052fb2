//! `secretfs demo`: the seed example end to end on this machine, with no
//! cloud and no cluster.
//!
//! It starts the Key Vault + Entra ID + IMDS emulator seeded like the seed
//! example (vault `kv-demo` with `sql-password`, the node's managed
//! identity), serves the CSI node plugin on a temporary socket, and plays
//! kubelet for the seed pod with the seed SecretProviderClass (both
//! unchanged, from `tests/fixtures/seed/`): NodePublishVolume, `ls -la`, `cat`;
//! then writes a new version into the vault, refreshes, shows the same path
//! again (no remount), and unpublishes.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use secretfs_e2e::kubelet::{Kubelet, KubeletError, PublishExtras, parse_pod};
use secretfs_e2e::{Emulator, EmulatorConfig, EmulatorError, EmulatorHandle, Seed};
use secretfs_fuse::ReadMode;
use thiserror::Error;

use crate::cmd::cli::DemoArgs;
use crate::node::driver::{Driver, DriverConfig};
use crate::provider::Provider;
use crate::provider::azure::AzureProvider;
use crate::provider::azure::config::{AzureProviderConfig, HostOverride};
use crate::spc::SpcDir;

const SEED_CLASS: &str = include_str!("../../tests/fixtures/seed/secretproviderclass.yaml");
const SEED_POD: &str = include_str!("../../tests/fixtures/seed/pod.yaml");
const VOLUME: &str = "secrets-store-inline";
const NEW_VALUE: &str = "Sql-Passw0rd-rotated-v2";

/// Why the demo stopped.
#[derive(Debug, Error)]
pub enum DemoError {
    #[error("the demo mounts a FUSE file system: run it as root on a machine with /dev/fuse")]
    NotPrivileged,
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("emulator: {0}")]
    Emulator(#[from] EmulatorError),
    #[error("kubelet: {0}")]
    Kubelet(#[from] KubeletError),
    #[error("Azure provider: {0}")]
    Provider(String),
    #[error(transparent)]
    Server(#[from] secretfs_csi::ServerError),
    #[error("refresh: {0}")]
    Refresh(#[from] secretfs_csi::VolumeError),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> DemoError {
    let what = what.into();
    move |source| DemoError::Io { what, source }
}

/// The Azure provider's configuration for talking to `emulator`: the real
/// host names (`kv-demo.vault.azure.net`, `login.microsoftonline.com`)
/// resolved to it, and its CA trusted.
pub fn emulator_azure_config(emulator: &EmulatorHandle) -> AzureProviderConfig {
    let addr = emulator.https_addr();
    AzureProviderConfig {
        extra_ca_pem: Some(emulator.ca_pem().to_owned()),
        resolve: vec![
            HostOverride::new("*.vault.azure.net", addr),
            HostOverride::new("login.microsoftonline.com", addr),
        ],
        vault_port: Some(addr.port()),
        authority_host: Some(emulator.authority_url()),
        imds_url: emulator.imds_url(),
        nmi_url: emulator.imds_url(),
        ..AzureProviderConfig::default()
    }
}

fn show(comment: &str, program: &str, args: &[&str], path: &Path) -> Result<(), DemoError> {
    let mut shown: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    shown.push(path.display().to_string());
    println!("\n$ {program} {}   # {comment}", shown.join(" "));
    let out = Command::new(program)
        .args(args)
        .arg(path)
        .output()
        .map_err(io(format!("cannot run {program}")))?;
    print!("{}", String::from_utf8_lossy(&out.stdout));
    print!("{}", String::from_utf8_lossy(&out.stderr));
    if !out.stdout.ends_with(b"\n") {
        println!();
    }
    Ok(())
}

/// Runs the demo; see the module docs.
pub fn run(args: &DemoArgs) -> Result<(), DemoError> {
    if !rustix::process::geteuid().is_root() || !Path::new("/dev/fuse").exists() {
        return Err(DemoError::NotPrivileged);
    }
    let runtime = tokio::runtime::Runtime::new().map_err(io("cannot start the async runtime"))?;
    runtime.block_on(demo(args))
}

async fn demo(args: &DemoArgs) -> Result<(), DemoError> {
    let work = tempfile::Builder::new()
        .prefix("secretfs-demo-")
        .tempdir()
        .map_err(io("cannot create a temporary directory"))?;
    let kubelet_root = match &args.dir {
        Some(dir) => dir.clone(),
        None => work.path().join("kubelet"),
    };
    let classes = work.path().join("classes");
    std::fs::create_dir_all(&classes).map_err(io(format!("cannot create {classes:?}")))?;
    std::fs::write(classes.join("secretproviderclass.yaml"), SEED_CLASS)
        .map_err(io("cannot write the SecretProviderClass"))?;

    let emulator = Emulator::start(EmulatorConfig::with_seed(Seed::demo())).await?;
    println!(
        "Key Vault emulator: https://kv-demo.vault.azure.net (at {}), Entra ID and IMDS (at {})",
        emulator.https_addr(),
        emulator.imds_addr()
    );

    let azure = AzureProvider::new(emulator_azure_config(&emulator))
        .map_err(|e| DemoError::Provider(e.to_string()))?;
    let driver = Arc::new(Driver::new(
        DriverConfig {
            node_name: "demo-node".into(),
            read_mode: ReadMode::Atomic,
            rotation_interval: std::time::Duration::from_secs(120),
        },
        Arc::new(SpcDir::new(&classes)),
        [Arc::new(azure) as Arc<dyn Provider>],
    ));
    let socket = work.path().join("csi/csi.sock");
    let listener = secretfs_csi::bind(&socket)?;
    let (identity, node) = secretfs_csi::services(
        "secrets-store.csi.k8s.io",
        crate::cmd::node::VERSION,
        "demo-node",
        driver.clone(),
    );
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(secretfs_csi::serve(listener, identity, node, async {
        let _ = stopped.await;
    }));

    let kubelet = Kubelet::connect(&socket, &kubelet_root).await?;
    let (name, version) = kubelet.plugin_info().await?;
    println!("CSI node plugin {name} {version} on {}", socket.display());

    let mut pod = parse_pod(SEED_POD)?;
    pod.metadata.uid = Some("7f3c1b2a-0d4e-4f5a-9b6c-8d7e6f5a4b3c".into());
    let target = kubelet
        .publish(&pod, VOLUME, &PublishExtras::default())
        .await?;
    println!(
        "NodePublishVolume for pod default/{} (SecretProviderClass azure-kvname): mounted",
        pod.metadata.name.as_deref().unwrap_or_default()
    );
    show(
        "what the container sees at /mnt/secrets-store",
        "ls",
        &["-la"],
        &target,
    )?;
    show(
        "the secret, fetched with the node's managed identity",
        "cat",
        &[],
        &target.join("SECRET_1"),
    )?;

    let new_version = emulator
        .control()
        .set_secret("kv-demo", "sql-password", NEW_VALUE)?;
    println!("\nwrote version {new_version} of sql-password into the vault");
    let outcome = driver.refresh(&target).await?;
    println!(
        "rotation check: {} file(s) replaced in place, no remount",
        outcome.replaced
    );
    show("same path, new value", "cat", &[], &target.join("SECRET_1"))?;

    if args.keep {
        // Listen before saying so: a Ctrl-C right after the message must
        // unpublish, not kill the process with the volume mounted.
        let mut interrupt =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
                .map_err(io("listening for Ctrl-C"))?;
        println!(
            "\nthe volume stays mounted at {}; press Ctrl-C to unpublish and exit",
            target.display()
        );
        interrupt.recv().await;
    }
    kubelet.unpublish(&pod, VOLUME).await?;
    println!(
        "\nNodeUnpublishVolume: unmounted and removed {}",
        target.display()
    );
    let _ = stop.send(());
    if let Ok(result) = server.await {
        result?;
    }
    Ok(())
}
