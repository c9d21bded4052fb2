//! Starting and stopping the emulator: [`Emulator::start`] binds the three
//! listeners, writes the CA PEM and returns an [`EmulatorHandle`].

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

use crate::control::Control;
use crate::directory::Directory;
use crate::error::EmulatorError;
use crate::seed::Seed;
use crate::server::{Service, serve};
use crate::state::{Settings, Shared};
use crate::store::Store;
use crate::tls::EmulatorPki;
use crate::tokens::{TokenService, TrustedIssuer};
use crate::util::{hex, random_bytes};

/// How to start an emulator.
#[derive(Debug, Clone)]
pub struct EmulatorConfig {
    pub seed: Seed,
    /// HTTPS listener for Key Vault and Entra ID (`127.0.0.1:0` by default;
    /// `127.0.0.1:443` lets clients use real host names unchanged).
    pub https_listen: SocketAddr,
    /// Plain-HTTP listener for IMDS and NMI.
    pub imds_listen: SocketAddr,
    /// Plain-HTTP listener for the admin API.
    pub admin_listen: SocketAddr,
    /// Where to write the CA PEM; a fresh file under the temp dir (removed
    /// when the handle drops) when `None`.
    pub ca_path: Option<PathBuf>,
    /// Authority in the 401 challenge (`https://login.windows.net`, as Azure).
    pub challenge_authority: String,
    /// Vault answering hosts that name no vault (IPs, `localhost`); default:
    /// the only vault, if there is exactly one.
    pub default_vault: Option<String>,
    /// Lifetime of issued access tokens.
    pub token_lifetime: Duration,
    /// The stale api-version written into `nextLink`.
    pub next_link_api_version: String,
    /// Code of the 404 for a missing secret version.
    pub secret_version_not_found_code: String,
    /// OIDC issuers outside the emulator whose tokens are accepted as
    /// client assertions (e.g. a real Kubernetes API server's).
    pub trusted_issuers: Vec<TrustedIssuer>,
}

impl Default for EmulatorConfig {
    fn default() -> Self {
        let local = SocketAddr::from(([127, 0, 0, 1], 0));
        Self {
            seed: Seed::demo(),
            https_listen: local,
            imds_listen: local,
            admin_listen: local,
            ca_path: None,
            challenge_authority: "https://login.windows.net".to_string(),
            default_vault: None,
            token_lifetime: Duration::from_secs(3599),
            next_link_api_version: "7.2".to_string(),
            secret_version_not_found_code: "SecretNotFound".to_string(),
            trusted_issuers: Vec::new(),
        }
    }
}

impl EmulatorConfig {
    /// The default configuration with `seed`.
    pub fn with_seed(seed: Seed) -> Self {
        Self {
            seed,
            ..Self::default()
        }
    }
}

/// Entry point.
#[derive(Debug)]
pub struct Emulator;

impl Emulator {
    /// Seed the state, create the PKI, bind the listeners and serve on the
    /// current Tokio runtime until the handle is dropped.
    pub async fn start(config: EmulatorConfig) -> Result<EmulatorHandle, EmulatorError> {
        let directory = Directory::from_seed(&config.seed)?;
        let store = Store::from_seed(&config.seed, &directory)?;
        if let Some(v) = &config.default_vault
            && store.vault(v).is_none()
        {
            return Err(EmulatorError::VaultNotFound(v.clone()));
        }
        let tokens = TokenService::new(config.token_lifetime, config.trusted_issuers.clone())?;
        let pki = EmulatorPki::generate()?;
        let (ca_path, remove_ca) = match &config.ca_path {
            Some(p) => (p.clone(), false),
            None => {
                let dir = std::env::temp_dir().join(format!(
                    "kv-emulator-{}-{}",
                    std::process::id(),
                    hex(&random_bytes(4))
                ));
                std::fs::create_dir_all(&dir)?;
                (dir.join("ca.pem"), true)
            }
        };
        std::fs::write(&ca_path, &pki.ca_pem)?;

        let https = TcpListener::bind(config.https_listen).await?;
        let imds = TcpListener::bind(config.imds_listen).await?;
        let admin = TcpListener::bind(config.admin_listen).await?;
        let https_addr = https.local_addr()?;
        let imds_addr = imds.local_addr()?;
        let admin_addr = admin.local_addr()?;

        let settings = Settings {
            challenge_authority: config.challenge_authority.clone(),
            default_vault: config.default_vault.clone(),
            next_link_api_version: config.next_link_api_version.clone(),
            secret_version_not_found_code: config.secret_version_not_found_code.clone(),
        };
        let shared = Arc::new(Shared::new(settings, directory, store, tokens));
        let admin_url = format!("http://{admin_addr}/admin");
        let info = json!({
            "https": https_addr.to_string(),
            "imds": format!("http://{imds_addr}"),
            "admin": admin_url,
            "caPath": ca_path.display().to_string(),
            "tenant": config.seed.tenant,
            "oidcIssuer": config.seed.oidc_issuer,
            "vaults": config.seed.vaults.iter().map(|v| v.name.clone()).collect::<Vec<_>>(),
        });
        let acceptor = TlsAcceptor::from(pki.server_config()?);
        let tasks = vec![
            tokio::spawn(serve(https, Service::Https(acceptor), shared.clone())),
            tokio::spawn(serve(imds, Service::Imds, shared.clone())),
            tokio::spawn(serve(
                admin,
                Service::Admin(Arc::new(info.clone())),
                shared.clone(),
            )),
        ];
        tracing::info!(https = %https_addr, imds = %imds_addr, admin = %admin_url, "kv-emulator listening");
        Ok(EmulatorHandle {
            https_addr,
            imds_addr,
            admin_url,
            ca_pem: pki.ca_pem.clone(),
            ca_path,
            remove_ca,
            info,
            control: Control { shared },
            tasks,
        })
    }
}

/// A running emulator; stops serving when dropped. Dereferences to
/// [`Control`] for in-process admin (`handle.set_secret(…)`, `handle.count(…)`).
#[derive(Debug)]
pub struct EmulatorHandle {
    https_addr: SocketAddr,
    imds_addr: SocketAddr,
    admin_url: String,
    ca_pem: String,
    ca_path: PathBuf,
    remove_ca: bool,
    info: Value,
    control: Control,
    tasks: Vec<JoinHandle<()>>,
}

impl EmulatorHandle {
    /// Address of the HTTPS listener (Key Vault + Entra ID).
    pub fn https_addr(&self) -> SocketAddr {
        self.https_addr
    }

    /// Address of the plain-HTTP IMDS/NMI listener.
    pub fn imds_addr(&self) -> SocketAddr {
        self.imds_addr
    }

    /// `http://<imds addr>`: the value for `AZURE_POD_IDENTITY_AUTHORITY_HOST`
    /// or any IMDS base URL.
    pub fn imds_url(&self) -> String {
        format!("http://{}", self.imds_addr)
    }

    /// `http://<admin addr>/admin`.
    pub fn admin_url(&self) -> &str {
        &self.admin_url
    }

    /// The CA certificate (PEM) that signed the server certificate.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// Where the CA PEM was written.
    pub fn ca_path(&self) -> &Path {
        &self.ca_path
    }

    /// `https://<vault>.vault.azure.net[:port]` — resolve the host to
    /// [`https_addr`](Self::https_addr) in the client (e.g. reqwest's
    /// `ClientBuilder::resolve`).
    pub fn vault_url(&self, vault: &str) -> String {
        Self::url_for(&format!("{vault}.vault.azure.net"), self.https_addr.port())
    }

    /// `https://login.microsoftonline.com[:port]`: the authority host of the
    /// emulated Entra ID (resolve it like the vault host).
    pub fn authority_url(&self) -> String {
        Self::url_for("login.microsoftonline.com", self.https_addr.port())
    }

    /// Host names to resolve to [`https_addr`](Self::https_addr) in a client:
    /// every seeded vault in the three clouds, and the Entra authority hosts.
    /// Feed them to e.g. reqwest's `ClientBuilder::resolve`.
    pub fn resolve_overrides(&self) -> Vec<(String, SocketAddr)> {
        let mut hosts: Vec<String> = Vec::new();
        for vault in self.control.shared.store().vaults.keys() {
            for (suffix, _) in crate::tokens::KEYVAULT_RESOURCES {
                hosts.push(format!("{vault}.{suffix}"));
            }
        }
        for entra in [
            "login.microsoftonline.com",
            "login.windows.net",
            "login.chinacloudapi.cn",
            "login.microsoftonline.us",
        ] {
            hosts.push(entra.to_string());
        }
        hosts.into_iter().map(|h| (h, self.https_addr)).collect()
    }

    fn url_for(host: &str, port: u16) -> String {
        if port == 443 {
            format!("https://{host}")
        } else {
            format!("https://{host}:{port}")
        }
    }

    /// The JSON the binary prints: addresses, CA path, admin URL.
    pub fn info(&self) -> &Value {
        &self.info
    }

    /// The in-process control handle (clone it to keep it).
    pub fn control(&self) -> &Control {
        &self.control
    }
}

impl std::ops::Deref for EmulatorHandle {
    type Target = Control;
    fn deref(&self) -> &Control {
        &self.control
    }
}

impl Drop for EmulatorHandle {
    fn drop(&mut self) {
        self.control.shared.shutdown.send_replace(true);
        for t in &self.tasks {
            t.abort();
        }
        if self.remove_ca {
            let _ = std::fs::remove_file(&self.ca_path);
            if let Some(dir) = self.ca_path.parent() {
                let _ = std::fs::remove_dir(dir);
            }
        }
    }
}
