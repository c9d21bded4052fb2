//! `secretfs node`: the CSI node plugin process.

use std::net::SocketAddr;
use std::sync::Arc;

use secretfs_fuse::ReadMode;
use thiserror::Error;

use crate::cmd::cli::{AzureArgs, NodeArgs, ReadModeArg};
use crate::node::driver::{Driver, DriverConfig, Persistence};
use crate::provider::azure::config::{AzureProviderConfig, HostOverride};
use crate::provider::azure::{AzureProvider, CloudName};
use crate::provider::external::ExternalConfig;
use crate::provider::{Provider, ProviderRegistry};
use crate::spc::{KubeSpcs, SpcDir, SpcSource};

/// The version reported to kubelet.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Why the node plugin could not start or stopped.
#[derive(Debug, Error)]
pub enum NodeError {
    #[error(
        "--azure-resolve {value:?}: expected HOST=IP:PORT, e.g. *.vault.azure.net=127.0.0.1:8443"
    )]
    Resolve { value: String },
    #[error("--azure-cloud-name {value:?}: {message}")]
    Cloud { value: String, message: String },
    #[error("cannot read --azure-ca-file {path:?}: {source}")]
    CaFile {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("Azure provider: {0}")]
    Azure(String),
    #[error(
        "cannot reach the Kubernetes API ({0}): run in a pod with a service account, set KUBECONFIG, \
         or pass --spc-dir DIR to read SecretProviderClass manifests from a directory"
    )]
    Kube(String),
    #[error(transparent)]
    Server(#[from] secretfs_csi::ServerError),
    #[error(
        "--keeper-socket needs --state-dir: the keeper holds connections, the state directory says what they are"
    )]
    KeeperWithoutState,
    #[error("cannot create --state-dir {path:?}: {source}")]
    StateDir {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot open --audit-log {path:?}: {source}")]
    AuditLog {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start the async runtime: {0}")]
    Runtime(#[source] std::io::Error),
}

/// The Azure provider's configuration from the command line.
pub fn azure_config(args: &AzureArgs) -> Result<AzureProviderConfig, NodeError> {
    let default_cloud = CloudName::parse(&args.cloud_name)
        .map_err(|e| NodeError::Cloud {
            value: args.cloud_name.clone(),
            message: e.to_string(),
        })?
        .unwrap_or(CloudName::Public);
    let extra_ca_pem = match &args.ca_file {
        Some(path) => Some(
            std::fs::read_to_string(path).map_err(|source| NodeError::CaFile {
                path: path.clone(),
                source,
            })?,
        ),
        None => None,
    };
    let resolve = args
        .resolve
        .iter()
        .map(|value| {
            value
                .split_once('=')
                .and_then(|(h, a)| Some((h, a.parse::<SocketAddr>().ok()?)))
                .filter(|(h, _)| !h.is_empty())
                .map(|(host, addr)| HostOverride::new(host, addr))
                .ok_or_else(|| NodeError::Resolve {
                    value: value.clone(),
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(AzureProviderConfig {
        default_cloud,
        extra_ca_pem,
        resolve,
        vault_port: args.vault_port,
        authority_host: args.authority_host.clone(),
        imds_url: args.imds_endpoint.clone(),
        nmi_url: args.nmi_endpoint.clone(),
        cache_bytes: args.cache_max_bytes,
        rate_limit: args.vault_rate_limit,
        ..AzureProviderConfig::default()
    })
}

/// How external providers are reached, from the command line: the socket
/// directories in order (`--provider-volume`, then
/// `--additional-provider-volume-paths`), the response size limit and the
/// Mount deadline.
pub fn external_config(args: &NodeArgs) -> ExternalConfig {
    let mut dirs = vec![args.provider_volume.clone()];
    dirs.extend(args.additional_provider_volume_paths.iter().cloned());
    ExternalConfig {
        dirs,
        max_recv_msg_size: args.max_call_recv_msg_size,
        timeout: args.provider_timeout,
        ..ExternalConfig::default()
    }
}

/// Warnings about flags accepted for upstream's manifests that do nothing
/// here (logged at start).
pub fn ignored_flags(args: &NodeArgs) -> Vec<String> {
    let mut warnings = Vec::new();
    if args.enable_pprof {
        warnings.push(format!(
            "--enable-pprof (--pprof-port={}) has no effect: pprof is the Go runtime's profiler and \
             secretfs is not a Go program; remove the flag (use /metrics, or perf on the node)",
            args.pprof_port
        ));
    }
    if args.klog_verbosity > 0 {
        warnings.push(format!(
            "-v={} (klog verbosity) has no effect: set --log instead (e.g. --log=info or \
             --log=secretfs=debug)",
            args.klog_verbosity
        ));
    }
    warnings
}

/// The volume manager with the built-in providers (inside a runtime).
pub async fn driver(args: &NodeArgs) -> Result<Driver, NodeError> {
    let (classes, client): (Arc<dyn SpcSource>, Option<kube::Client>) = match &args.spc_dir {
        // Without a cluster there is nothing to sync to.
        Some(dir) => (Arc::new(SpcDir::new(dir)), None),
        None => {
            let client = kube::Client::try_default()
                .await
                .map_err(|e| NodeError::Kube(e.to_string()))?;
            (Arc::new(KubeSpcs::start(client.clone())), Some(client))
        }
    };
    let azure = AzureProvider::new(azure_config(&args.azure)?)
        .map_err(|e| NodeError::Azure(e.to_string()))?;
    let providers: Vec<Arc<dyn Provider>> = vec![Arc::new(azure)];
    let providers = ProviderRegistry::new(providers).with_external(external_config(args));
    let read_mode = match args.read_mode {
        ReadModeArg::Atomic => ReadMode::Atomic,
        ReadModeArg::PageCache => ReadMode::PageCache,
    };
    let driver = Driver::new(
        DriverConfig {
            node_name: args.node_id.clone(),
            read_mode,
            rotation_interval: args.rotation_poll_interval,
        },
        classes,
        providers,
    )
    .with_expiry_warning(args.expiry_warning)
    .with_unread_threshold(args.unread_threshold);
    let sink = crate::node::audit::AuditSink::open(&args.audit_log).map_err(|source| {
        NodeError::AuditLog {
            path: args.audit_log.clone().into(),
            source,
        }
    })?;
    let names = client.clone().map(|c| {
        Arc::new(crate::node::audit::KubeContainerNames(c))
            as Arc<dyn crate::node::audit::ContainerNames>
    });
    let auditor = crate::node::audit::Auditor::new(
        sink,
        names,
        "/proc",
        driver.metrics(),
        tokio::runtime::Handle::current(),
    );
    let driver = driver.with_auditor(auditor);
    let driver = match client {
        Some(client) => driver.with_syncer(Arc::new(
            crate::node::sync::Syncer::new(client, &args.node_id)
                .with_secrets(args.sync_secrets)
                .with_recheck(args.sync_recheck_interval),
        )),
        None => driver,
    };
    if args.state_dir.is_empty() {
        if !args.keeper_socket.is_empty() {
            return Err(NodeError::KeeperWithoutState);
        }
        return Ok(driver);
    }
    let keeper =
        (!args.keeper_socket.is_empty()).then(|| std::path::Path::new(&args.keeper_socket));
    let persistence =
        Persistence::new(std::path::Path::new(&args.state_dir), keeper).map_err(|source| {
            NodeError::StateDir {
                path: args.state_dir.clone().into(),
                source,
            }
        })?;
    Ok(driver.with_persistence(persistence))
}

/// Serves CSI on `--endpoint` until SIGTERM or SIGINT.
pub fn run(args: &NodeArgs) -> Result<(), NodeError> {
    let runtime = tokio::runtime::Runtime::new().map_err(NodeError::Runtime)?;
    runtime.block_on(serve(args))
}

async fn serve(args: &NodeArgs) -> Result<(), NodeError> {
    // Registered first: a SIGTERM during start-up must not kill the
    // process between two steps (it is handled once serving).
    let stop = shutdown_signal();
    for warning in ignored_flags(args) {
        tracing::warn!("{warning}");
    }
    if let Err(err) = secretfs_secrets::hygiene::harden() {
        tracing::warn!(error = %err, "memory hygiene");
    }
    let driver = Arc::new(driver(args).await?);
    // Before kubelet can call: the previous process's volumes first.
    let restored = driver.restore().await;
    if restored.adopted > 0 || !restored.lost.is_empty() {
        tracing::info!(
            adopted = restored.adopted,
            lost = restored.lost.len(),
            "volumes of the previous process"
        );
    }
    for pod in &restored.lost {
        tracing::warn!(pod = %pod, "this pod lost its secrets volume with the previous process: restart it");
    }
    let keeper_watch = tokio::spawn(driver.clone().watch_keeper());
    let path = secretfs_csi::socket_path(&args.endpoint)?;
    // Removed again when this function returns (a clean stop).
    let (listener, socket_file) = secretfs_csi::bind_owned(&path)?;
    let (identity, node) =
        secretfs_csi::services(&args.driver_name, VERSION, &args.node_id, driver.clone());
    let scheduler = args.enable_secret_rotation.then(|| {
        crate::node::rotation::spawn(
            driver.clone(),
            crate::node::rotation::RotationConfig {
                interval: args.rotation_poll_interval,
                ..Default::default()
            },
        )
    });
    let health_check = args.provider_health_check.then(|| {
        crate::node::health::spawn_checker(driver.clone(), args.provider_health_check_interval)
    });
    let endpoints = match args.metrics_addr.as_deref().filter(|a| !a.is_empty()) {
        Some(addr) => {
            let (addr, manager) = (addr.to_owned(), driver.clone());
            Some(tokio::spawn(async move {
                if let Err(err) =
                    crate::node::endpoints::serve(&addr, manager, std::future::pending()).await
                {
                    tracing::error!(error = %err, "metrics endpoint stopped");
                }
            }))
        }
        None => None,
    };
    let admin = (!args.admin_socket.is_empty()).then(|| {
        let (path, driver) = (std::path::PathBuf::from(&args.admin_socket), driver.clone());
        tokio::spawn(async move {
            if let Err(err) = crate::node::admin::serve(&path, driver, std::future::pending()).await
            {
                tracing::error!(error = %err, "admin endpoint stopped");
            }
        })
    });
    tracing::info!(endpoint = %args.endpoint, driver = %args.driver_name, node = %args.node_id, "serving CSI");
    secretfs_csi::serve(listener, identity, node, stop).await?;
    drop(socket_file);
    if let Some(endpoints) = endpoints {
        endpoints.abort();
    }
    if let Some(admin) = admin {
        // Its socket goes with it (dropped with the aborted task).
        admin.abort();
        let _ = admin.await;
    }
    if let Some(scheduler) = scheduler {
        scheduler.abort();
    }
    if let Some(health_check) = health_check {
        health_check.abort();
    }
    keeper_watch.abort();
    // Stop between requests and leave every mount to the keeper; the next
    // process takes them over.
    let handed = driver.hand_over(std::time::Duration::from_secs(5)).await;
    if handed > 0 {
        tracing::info!(
            volumes = handed,
            "volumes left to the keeper for the next process"
        );
    }
    let left = driver.published().await;
    if !left.is_empty() {
        tracing::warn!(
            volumes = left.len(),
            "stopping with volumes mounted and no keeper: their pods lose access until they restart (see --keeper-socket)"
        );
    }
    Ok(())
}

/// Registers SIGTERM and SIGINT now; the future ends at the first one.
pub(crate) fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{SignalKind, signal};
    let term = signal(SignalKind::terminate()).ok();
    let interrupt = signal(SignalKind::interrupt()).ok();
    async move {
        async fn next(signal: Option<tokio::signal::unix::Signal>) {
            match signal {
                Some(mut s) => {
                    s.recv().await;
                }
                None => std::future::pending().await,
            }
        }
        tokio::select! {
            _ = next(term) => {}
            _ = next(interrupt) => {}
        }
        tracing::info!("shutting down");
    }
}
