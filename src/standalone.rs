//! `secretfs mount --spc FILE DIR`: one volume outside Kubernetes, in the
//! foreground until Ctrl-C or SIGTERM, refreshed every interval. The
//! identity comes from the SecretProviderClass and the environment:
//!
//! - workload identity: `AZURE_CLIENT_ID`, `AZURE_TENANT_ID`,
//!   `AZURE_FEDERATED_TOKEN_FILE` (the token file is read again at every
//!   refresh; `AZURE_AUTHORITY_HOST` is honoured);
//! - service principal: `AZURE_CLIENT_ID`, `AZURE_TENANT_ID`,
//!   `AZURE_CLIENT_SECRET`;
//! - otherwise what the class says (e.g. `useVMManagedIdentity` through IMDS).
//!
//! The Azure CLI's login is not a supported source.

use std::path::PathBuf;
use std::time::Duration;

use secretfs_csi::SecretMap;
use secretfs_fuse::{Content, FileSpec, MountOptions, MountedVolume, VolumeId, VolumeSpec};
use thiserror::Error;

use crate::cli::MountArgs;
use crate::provider::azure::AzureProvider;
use crate::provider::{FileMode, MountRequest, PodRef, Provider, SecretString};
use crate::spc::parse_manifests;

/// Why `secretfs mount` stopped.
#[derive(Debug, Error)]
pub enum StandaloneError {
    #[error("cannot read {path:?}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Class(String),
    #[error("{0}")]
    Node(#[from] crate::node::NodeError),
    #[error("{0}")]
    Provider(String),
    #[error("{0}")]
    Mount(#[from] secretfs_fuse::MountError),
    #[error("cannot start the async runtime: {0}")]
    Runtime(#[source] std::io::Error),
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// The request for the class, with the identity from the environment.
fn request(
    parameters: std::collections::BTreeMap<String, String>,
    namespace: &str,
) -> Result<MountRequest, StandaloneError> {
    let mut parameters = parameters;
    let mut secrets = Vec::new();
    let mut tokens = None;
    if let (Some(client), Some(file)) = (env("AZURE_CLIENT_ID"), env("AZURE_FEDERATED_TOKEN_FILE"))
    {
        let token = std::fs::read_to_string(&file).map_err(|source| StandaloneError::Read {
            path: file.clone().into(),
            source,
        })?;
        let json = serde_json::json!({"api://AzureADTokenExchange": {"token": token.trim()}});
        tokens = Some(SecretString::from(json.to_string()));
        parameters.entry("clientID".into()).or_insert(client);
    } else if let (Some(client), Some(secret)) =
        (env("AZURE_CLIENT_ID"), env("AZURE_CLIENT_SECRET"))
    {
        secrets.push(("clientid".to_owned(), client));
        secrets.push(("clientsecret".to_owned(), secret));
    }
    if let Some(tenant) = env("AZURE_TENANT_ID")
        && !parameters.contains_key("tenantID")
        && !parameters.contains_key("tenantId")
    {
        parameters.insert("tenantID".into(), tenant);
    }
    Ok(MountRequest {
        parameters,
        pod: PodRef {
            name: "standalone".into(),
            namespace: namespace.to_owned(),
            uid: "standalone".into(),
            service_account: "standalone".into(),
        },
        service_account_tokens: tokens,
        secrets: SecretMap::new(secrets),
        default_mode: FileMode::DEFAULT,
        current: Vec::new(),
        node_name: "standalone".into(),
        max_age: Duration::ZERO,
    })
}

/// Runs `secretfs mount`.
pub fn run(args: &MountArgs) -> Result<(), StandaloneError> {
    let runtime = tokio::runtime::Runtime::new().map_err(StandaloneError::Runtime)?;
    runtime.block_on(mount(args))
}

async fn mount(args: &MountArgs) -> Result<(), StandaloneError> {
    // Listen before anything is mounted: a SIGTERM that arrives while the
    // mount is made, or while a refresh runs, must still unmount.
    let stop = crate::node::shutdown_signal();
    tokio::pin!(stop);
    // As `secretfs node`: no swap, no core dumps, no ptrace by the user.
    if let Err(err) = crate::hygiene::harden() {
        tracing::warn!(error = %err, "memory hygiene");
    }
    let text = std::fs::read_to_string(&args.spc).map_err(|source| StandaloneError::Read {
        path: args.spc.clone(),
        source,
    })?;
    let classes =
        parse_manifests(&args.spc, &text).map_err(|e| StandaloneError::Class(e.to_string()))?;
    let class = classes
        .into_iter()
        .find(|c| {
            args.namespace
                .as_deref()
                .is_none_or(|ns| c.metadata.namespace.as_deref() == Some(ns))
        })
        .ok_or_else(|| {
            StandaloneError::Class(format!(
                "{:?} holds no SecretProviderClass{}",
                args.spc,
                args.namespace
                    .as_deref()
                    .map(|n| format!(" in namespace {n}"))
                    .unwrap_or_default()
            ))
        })?;
    if class.spec.provider != "azure" {
        return Err(StandaloneError::Class(format!(
            "SecretProviderClass {} uses provider {:?}: `secretfs mount` serves the built-in azure provider",
            class.metadata.name.unwrap_or_default(),
            class.spec.provider
        )));
    }
    let mut config = crate::node::azure_config(&args.azure)?;
    if config.authority_host.is_none() {
        config.authority_host = env("AZURE_AUTHORITY_HOST");
    }
    let provider =
        AzureProvider::new(config).map_err(|e| StandaloneError::Provider(e.to_string()))?;
    let namespace = class
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    let response = provider
        .mount(&request(class.spec.parameters.clone(), &namespace)?)
        .await
        .map_err(|e| StandaloneError::Provider(e.to_string()))?;
    for warning in &response.warnings {
        tracing::warn!("{warning}");
    }
    let files = response
        .files
        .iter()
        .map(|f| {
            FileSpec::new(
                &f.path,
                f.mode.bits(),
                0,
                0,
                Content::Ready(f.contents.clone()),
            )
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| StandaloneError::Class(e.to_string()))?;
    let spec = VolumeSpec {
        id: VolumeId::new(format!("standalone-{}", args.dir.display())),
        dir_uid: 0,
        dir_gid: 0,
        files,
    };
    let mounted = MountedVolume::mount(
        spec,
        &args.dir,
        &MountOptions::default(),
        tokio::runtime::Handle::current(),
    )?;
    println!(
        "mounted {} file(s) at {}; Ctrl-C to unmount",
        response.files.len(),
        args.dir.display()
    );
    let parameters = class.spec.parameters;
    let mut tick = tokio::time::interval(args.rotation_poll_interval);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = &mut stop => break,
            _ = tick.tick() => {
                match request(parameters.clone(), &namespace) {
                    Ok(req) => match provider.mount(&req).await {
                        Ok(fresh) => {
                            let volume = mounted.volume().clone();
                            let applied = tokio::task::spawn_blocking(move || crate::volume::apply(&volume, 0, &fresh.files)).await;
                            if let Ok(Ok(outcome)) = applied && outcome.changed() {
                                tracing::info!(replaced = outcome.replaced, added = outcome.added, removed = outcome.removed, "rotated");
                            }
                        }
                        Err(e) => tracing::warn!(error = %e, "refresh failed; keeping the last good contents"),
                    },
                    Err(e) => tracing::warn!(error = %e, "refresh failed"),
                }
            }
        }
    }
    tokio::task::spawn_blocking(move || mounted.unmount())
        .await
        .map_err(|e| StandaloneError::Provider(e.to_string()))??;
    println!("unmounted {}", args.dir.display());
    Ok(())
}
