//! `secretfs mount --spc FILE DIR`: one volume outside Kubernetes, in the
//! foreground until Ctrl-C or SIGTERM, refreshed every interval.
//!
//! The identity is chosen once, at start, from the class and the
//! environment; the first source that applies wins ([`Source`],
//! docs/CONFIGURATION.md):
//!
//! 1. the class's own `useVMManagedIdentity: "true"` or
//!    `usePodIdentity: "true"`, as on a node (the environment is not used);
//! 2. workload identity: `AZURE_FEDERATED_TOKEN_FILE`, with the class's
//!    `clientID` or else `AZURE_CLIENT_ID` (the token file is read again at
//!    every refresh);
//! 3. service principal: `AZURE_CLIENT_ID` and `AZURE_CLIENT_SECRET`;
//! 4. managed identity, when IMDS (`--azure-imds-endpoint`) answers a token
//!    request within [`IMDS_PROBE_TIMEOUT`]: the user-assigned identity
//!    `AZURE_CLIENT_ID`, or else the system-assigned one;
//! 5. the Azure CLI's signed-in account (`az account get-access-token`, the
//!    `az` on `PATH`, in the class's tenant).
//!
//! `AZURE_TENANT_ID` fills in a class without `tenantId`, and
//! `AZURE_AUTHORITY_HOST` replaces the cloud's Entra host unless
//! `--azure-authority-host` is given. Secrets, tokens and the token file's
//! contents never appear in output, logs or errors.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use secretfs_fuse::{Content, FileSpec, MountOptions, MountedVolume, VolumeId, VolumeSpec};
use secretfs_secrets::{SecretMap, SecretString};
use thiserror::Error;

use crate::cmd::cli::MountArgs;
use crate::provider::azure::{
    AzureParameters, AzureProvider, AzureProviderConfig, ParseOptions, params::read_cloud_env_file,
};
use crate::provider::{FileMode, MountRequest, PodRef, Provider};
use crate::spc::parse_manifests;

/// How long IMDS has to answer the managed-identity probe.
pub const IMDS_PROBE_TIMEOUT: Duration = Duration::from_secs(2);

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
    Node(#[from] crate::cmd::node::NodeError),
    #[error("{0}")]
    Provider(String),
    #[error("{0}")]
    Mount(#[from] secretfs_fuse::MountError),
    #[error("cannot start the async runtime: {0}")]
    Runtime(#[source] std::io::Error),
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// Where the identity of `secretfs mount` comes from (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The class names it (`useVMManagedIdentity` or `usePodIdentity`).
    Class,
    /// `AZURE_FEDERATED_TOKEN_FILE`, for this client id.
    WorkloadIdentity {
        client_id: String,
        token_file: PathBuf,
    },
    /// `AZURE_CLIENT_ID` and `AZURE_CLIENT_SECRET`.
    ServicePrincipal { client_id: String },
    /// IMDS answered; `None` is the system-assigned identity.
    ManagedIdentity { client_id: Option<String> },
    /// `az account get-access-token`.
    AzureCli,
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Class => f.write_str("the identity the class names"),
            Source::WorkloadIdentity {
                client_id,
                token_file,
            } => write!(
                f,
                "workload identity {client_id} (token file {})",
                token_file.display()
            ),
            Source::ServicePrincipal { client_id } => {
                write!(f, "service principal {client_id} (AZURE_CLIENT_SECRET)")
            }
            Source::ManagedIdentity {
                client_id: Some(id),
            } => write!(f, "user-assigned managed identity {id} (IMDS)"),
            Source::ManagedIdentity { client_id: None } => {
                f.write_str("system-assigned managed identity (IMDS)")
            }
            Source::AzureCli => f.write_str("the Azure CLI's signed-in account (az)"),
        }
    }
}

/// Sources 1–3, which need no network; `Ok(None)`: probe IMDS, then the
/// Azure CLI. `env` reads one environment variable (blank counts as unset).
pub fn choose_without_network(
    params: &AzureParameters,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<Source>, StandaloneError> {
    if params.use_vm_managed_identity || params.use_pod_identity {
        return Ok(Some(Source::Class));
    }
    if let Some(file) = env("AZURE_FEDERATED_TOKEN_FILE") {
        let client_id = params
            .client_id
            .clone()
            .or_else(|| env("AZURE_CLIENT_ID"))
            .ok_or_else(|| {
                StandaloneError::Class(
                    "AZURE_FEDERATED_TOKEN_FILE is set but no client id is: set AZURE_CLIENT_ID or the class's clientID".into(),
                )
            })?;
        return Ok(Some(Source::WorkloadIdentity {
            client_id,
            token_file: file.into(),
        }));
    }
    if let (Some(client_id), Some(_)) = (env("AZURE_CLIENT_ID"), env("AZURE_CLIENT_SECRET")) {
        return Ok(Some(Source::ServicePrincipal { client_id }));
    }
    Ok(None)
}

/// Whether IMDS gives the managed identity `client_id` (or the
/// system-assigned one) a Key Vault token within [`IMDS_PROBE_TIMEOUT`]. The
/// token is dropped unread.
async fn imds_answers(config: &AzureProviderConfig, client_id: Option<&str>) -> bool {
    use azure_core::credentials::TokenCredential as _;
    let Ok(http) = reqwest::Client::builder()
        .no_proxy()
        .connect_timeout(IMDS_PROBE_TIMEOUT)
        .timeout(IMDS_PROBE_TIMEOUT)
        .build()
    else {
        return false;
    };
    let probe = crate::provider::azure::imds::ImdsCredential::new(
        http,
        &config.imds_url,
        client_id.map(str::to_owned),
    );
    let answer = tokio::time::timeout(
        IMDS_PROBE_TIMEOUT,
        probe.get_token(&["https://vault.azure.net/.default"], None),
    )
    .await;
    match answer {
        Ok(Ok(_)) => true,
        Ok(Err(e)) => {
            tracing::debug!(imds = %config.imds_url, error = %e, "no managed identity");
            false
        }
        Err(_) => false,
    }
}

/// The request for the class with the identity of `source` (the token file
/// of a workload identity is read here, so at every refresh).
fn request(
    parameters: &BTreeMap<String, String>,
    namespace: &str,
    source: &Source,
) -> Result<MountRequest, StandaloneError> {
    let mut parameters = parameters.clone();
    let mut secrets = Vec::new();
    let mut tokens = None;
    match source {
        Source::Class | Source::AzureCli => {}
        Source::WorkloadIdentity {
            client_id,
            token_file,
        } => {
            let token =
                zeroize::Zeroizing::new(std::fs::read_to_string(token_file).map_err(|source| {
                    StandaloneError::Read {
                        path: token_file.clone(),
                        source,
                    }
                })?);
            let json = serde_json::json!({"api://AzureADTokenExchange": {"token": token.trim()}});
            tokens = Some(SecretString::from(json.to_string()));
            parameters
                .entry("clientID".into())
                .or_insert_with(|| client_id.clone());
        }
        Source::ServicePrincipal { client_id } => {
            let secret = env("AZURE_CLIENT_SECRET").ok_or_else(|| {
                StandaloneError::Class(
                    "AZURE_CLIENT_SECRET is no longer set: set it again or choose another credential source".into(),
                )
            })?;
            secrets.push(("clientid".to_owned(), client_id.clone()));
            secrets.push(("clientsecret".to_owned(), secret));
        }
        Source::ManagedIdentity { client_id } => {
            parameters.insert("useVMManagedIdentity".into(), "true".into());
            match client_id {
                Some(id) => parameters.insert("userAssignedIdentityID".into(), id.clone()),
                None => parameters.remove("userAssignedIdentityID"),
            };
        }
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
        fresh_since: None,
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
    let stop = crate::cmd::node::shutdown_signal();
    tokio::pin!(stop);
    // As `secretfs node`: no swap, no core dumps, no ptrace by the user.
    if let Err(err) = secretfs_secrets::hygiene::harden() {
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
    let mut config = crate::cmd::node::azure_config(&args.azure)?;
    if config.authority_host.is_none() {
        config.authority_host = env("AZURE_AUTHORITY_HOST");
    }
    let namespace = class
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    let parameters = class.spec.parameters;
    let params = {
        // The tenant as the request will carry it.
        let probe = request(&parameters, &namespace, &Source::Class)?;
        AzureParameters::parse(
            &probe.parameters,
            &ParseOptions {
                default_cloud: config.default_cloud,
                load_cloud_env: &read_cloud_env_file,
            },
        )
        .map_err(|e| StandaloneError::Class(e.to_string()))?
    };
    let source = match choose_without_network(&params, &env)? {
        Some(source) => source,
        None => {
            let client_id = env("AZURE_CLIENT_ID");
            if imds_answers(&config, client_id.as_deref()).await {
                Source::ManagedIdentity { client_id }
            } else {
                Source::AzureCli
            }
        }
    };
    config.azure_cli = source == Source::AzureCli;
    tracing::info!(source = %source, "credential source");
    let provider =
        AzureProvider::new(config.clone()).map_err(|e| StandaloneError::Provider(e.to_string()))?;
    let response = provider
        .mount(&request(&parameters, &namespace, &source)?)
        .await
        .map_err(|e| {
            StandaloneError::Provider(if source == Source::AzureCli {
                format!(
                    "{e}\nno other credential source applied: AZURE_FEDERATED_TOKEN_FILE and AZURE_CLIENT_ID + AZURE_CLIENT_SECRET are not set, the class sets no useVMManagedIdentity, and IMDS at {} did not answer; set one of them, or run `az login`",
                    config.imds_url
                )
            } else {
                format!("{e} (credential source: {source})")
            })
        })?;
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
        "mounted {} file(s) at {} as {source}; Ctrl-C to unmount",
        response.files.len(),
        args.dir.display()
    );
    let mut tick = tokio::time::interval(args.rotation_poll_interval);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = &mut stop => break,
            _ = tick.tick() => {
                match request(&parameters, &namespace, &source) {
                    Ok(req) => match provider.mount(&req).await {
                        Ok(fresh) => {
                            let volume = mounted.volume().clone();
                            let applied = tokio::task::spawn_blocking(move || crate::node::driver::apply(&volume, 0, &fresh.files)).await;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::azure::CloudName;

    fn params(extra: &[(&str, &str)]) -> (BTreeMap<String, String>, AzureParameters) {
        let mut map: BTreeMap<String, String> = [
            ("keyvaultName", "kv-demo"),
            ("tenantId", "9c0d2e7b-1a3f-4b6c-8d5e-7f1a2b3c4d5e"),
            (
                "objects",
                "array:\n  - |\n    objectName: s\n    objectType: secret\n",
            ),
        ]
        .iter()
        .chain(extra)
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        map.retain(|_, v| !v.is_empty());
        let parsed = AzureParameters::parse(
            &map,
            &ParseOptions {
                default_cloud: CloudName::Public,
                load_cloud_env: &read_cloud_env_file,
            },
        )
        .unwrap();
        (map, parsed)
    }

    fn env_of(vars: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
                .filter(|v| !v.trim().is_empty())
        }
    }

    const SP: &[(&str, &str)] = &[
        ("AZURE_CLIENT_ID", "sp-client"),
        ("AZURE_CLIENT_SECRET", "sp-secret-value"),
    ];

    #[test]
    fn the_class_identity_wins_then_workload_identity_then_the_service_principal() {
        let (_, mi) = params(&[("useVMManagedIdentity", "true")]);
        assert_eq!(
            choose_without_network(&mi, &env_of(SP)).unwrap(),
            Some(Source::Class)
        );
        let (_, plain) = params(&[]);
        let wi_and_sp: &[(&str, &str)] = &[
            ("AZURE_CLIENT_ID", "env-client"),
            ("AZURE_CLIENT_SECRET", "sp-secret-value"),
            ("AZURE_FEDERATED_TOKEN_FILE", "/var/run/token"),
        ];
        assert_eq!(
            choose_without_network(&plain, &env_of(wi_and_sp)).unwrap(),
            Some(Source::WorkloadIdentity {
                client_id: "env-client".into(),
                token_file: "/var/run/token".into()
            })
        );
        // The class's clientID names the federated application.
        let (_, with_client) = params(&[("clientID", "3f8e2d1c-7b6a-4c5d-9e8f-1a2b3c4d5e6f")]);
        assert!(matches!(
            choose_without_network(&with_client, &env_of(wi_and_sp)).unwrap(),
            Some(Source::WorkloadIdentity { client_id, .. }) if client_id == "3f8e2d1c-7b6a-4c5d-9e8f-1a2b3c4d5e6f"
        ));
        let source = choose_without_network(&plain, &env_of(SP))
            .unwrap()
            .unwrap();
        assert_eq!(
            source,
            Source::ServicePrincipal {
                client_id: "sp-client".into()
            }
        );
        assert!(!format!("{source} {source:?}").contains("sp-secret-value"));
        // Nothing set (or only blanks): IMDS and the Azure CLI are probed.
        assert_eq!(choose_without_network(&plain, &env_of(&[])).unwrap(), None);
        let blank: &[(&str, &str)] = &[("AZURE_CLIENT_ID", "x"), ("AZURE_CLIENT_SECRET", " ")];
        assert_eq!(
            choose_without_network(&plain, &env_of(blank)).unwrap(),
            None
        );
    }

    #[test]
    fn a_token_file_without_a_client_id_names_the_fix() {
        let (_, plain) = params(&[]);
        let err = choose_without_network(
            &plain,
            &env_of(&[("AZURE_FEDERATED_TOKEN_FILE", "/var/run/token")]),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("AZURE_CLIENT_ID") && err.contains("clientID"),
            "{err}"
        );
    }

    #[test]
    fn the_managed_identity_fallback_asks_for_the_node_identity() {
        let (map, _) = params(&[("userAssignedIdentityID", "stale")]);
        let user = request(
            &map,
            "default",
            &Source::ManagedIdentity {
                client_id: Some("mi-client".into()),
            },
        )
        .unwrap();
        assert_eq!(user.parameters["useVMManagedIdentity"], "true");
        assert_eq!(user.parameters["userAssignedIdentityID"], "mi-client");
        let system = request(
            &map,
            "default",
            &Source::ManagedIdentity { client_id: None },
        )
        .unwrap();
        assert!(!system.parameters.contains_key("userAssignedIdentityID"));
        let cli = request(&map, "default", &Source::AzureCli).unwrap();
        assert_eq!(cli.parameters, map, "the Azure CLI changes no parameter");
        assert!(cli.secrets.is_empty() && cli.service_account_tokens.is_none());
    }

    #[test]
    fn a_workload_identity_request_carries_the_token_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "eyJ.federated.jwt\n").unwrap();
        let (map, _) = params(&[]);
        let source = Source::WorkloadIdentity {
            client_id: "wi-client".into(),
            token_file: file.clone(),
        };
        let req = request(&map, "default", &source).unwrap();
        assert_eq!(req.parameters["clientID"], "wi-client");
        let tokens = req.service_account_tokens.unwrap();
        assert!(tokens.expose().contains("\"token\":\"eyJ.federated.jwt\""));
        assert!(!format!("{source} {source:?}").contains("eyJ"));
        std::fs::remove_file(&file).unwrap();
        let err = request(&map, "default", &source).unwrap_err().to_string();
        assert!(err.contains("token"), "names the file: {err}");
    }
}
