//! The HTTP client (extra CA, host-resolution overrides, timeouts) and the
//! Key Vault clients of one identity and vault.
//!
//! Every Key Vault client learns the token scope from a 401 challenge to its
//! first request and caches it. To pay that round trip once per client and
//! not once per concurrent request, the first request of each client runs
//! alone behind a gate ([`VaultClients::gate`]); the others wait for it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use azure_core::credentials::TokenCredential;
use azure_core::http::{ClientOptions, RetryOptions, Transport};
use azure_security_keyvault_certificates::{CertificateClient, CertificateClientOptions};
use azure_security_keyvault_keys::{KeyClient, KeyClientOptions};
use azure_security_keyvault_secrets::{SecretClient, SecretClientOptions};

use super::config::{AzureProviderConfig, ConfigError, HostOverride};
use super::objects::ObjectType;

/// Resolves overridden names to their address, others through the system.
#[derive(Debug)]
struct OverrideResolver(Vec<HostOverride>);

impl reqwest::dns::Resolve for OverrideResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_owned();
        let fixed = self.0.iter().find(|o| o.matches(&host)).map(|o| o.addr);
        Box::pin(async move {
            let addrs: Vec<SocketAddr> = match fixed {
                Some(addr) => vec![addr],
                None => tokio::net::lookup_host((host.as_str(), 0)).await?.collect(),
            };
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// Which endpoints a client is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoints {
    /// Key Vault and Entra ID: the environment's proxy settings apply.
    Remote,
    /// IMDS and NMI on the node: reached directly, never through a proxy.
    Node,
}

/// An HTTP client of the provider, with the configured timeouts, extra CA
/// and host-resolution overrides.
pub fn http_client(
    config: &AzureProviderConfig,
    endpoints: Endpoints,
) -> Result<reqwest::Client, ConfigError> {
    let mut builder = reqwest::Client::builder()
        .connect_timeout(config.connect_timeout)
        .timeout(config.request_timeout)
        .pool_idle_timeout(std::time::Duration::from_secs(90));
    if endpoints == Endpoints::Node {
        builder = builder.no_proxy();
    }
    if let Some(pem) = &config.extra_ca_pem {
        let certs = reqwest::Certificate::from_pem_bundle(pem.as_bytes())
            .map_err(|e| ConfigError::CaPem(e.to_string()))?;
        if certs.is_empty() {
            return Err(ConfigError::CaPem("no CERTIFICATE block found".to_owned()));
        }
        builder = builder.tls_certs_merge(certs);
    }
    if !config.resolve.is_empty() {
        builder = builder.dns_resolver(Arc::new(OverrideResolver(config.resolve.clone())));
    }
    builder
        .build()
        .map_err(|e| ConfigError::Http(e.to_string()))
}

/// `https://<vault>.<suffix>[:port]/`.
pub fn vault_url(vault: &str, dns_suffix: &str, port: Option<u16>) -> String {
    match port {
        Some(p) if p != 443 => format!("https://{vault}.{dns_suffix}:{p}/"),
        _ => format!("https://{vault}.{dns_suffix}/"),
    }
}

/// The Key Vault clients of one identity and one vault.
pub struct VaultClients {
    /// The vault's URL.
    pub url: String,
    /// Secrets.
    pub secrets: SecretClient,
    /// Keys.
    pub keys: KeyClient,
    /// Certificates.
    pub certificates: CertificateClient,
    gates: [Gate; 3],
}

impl std::fmt::Debug for VaultClients {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VaultClients")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

/// Lets the first request of a client run alone.
#[derive(Default)]
struct Gate {
    open: AtomicBool,
    first: tokio::sync::Mutex<()>,
}

/// Held while a client's first request runs; [`GateGuard::open`] lets the
/// others through once a request got an answer from the vault.
pub struct GateGuard<'a> {
    gate: &'a Gate,
    _held: Option<tokio::sync::MutexGuard<'a, ()>>,
}

impl std::fmt::Debug for GateGuard<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GateGuard")
            .field("first", &self._held.is_some())
            .finish()
    }
}

impl GateGuard<'_> {
    /// The client has its challenge scope: later requests need not wait.
    pub fn open(&self) {
        self.gate.open.store(true, Ordering::Release);
    }
}

impl VaultClients {
    /// Builds the three clients for `url` with `credential`.
    pub fn new(
        url: &str,
        credential: Arc<dyn TokenCredential>,
        transport: &Transport,
        config: &AzureProviderConfig,
    ) -> azure_core::Result<Self> {
        let client_options = || ClientOptions {
            transport: Some(transport.clone()),
            retry: RetryOptions::none(),
            ..Default::default()
        };
        let verify = Some(config.verify_challenge_resource);
        Ok(VaultClients {
            url: url.to_owned(),
            secrets: SecretClient::new(
                url,
                credential.clone(),
                Some(SecretClientOptions {
                    api_version: config.api_version.clone(),
                    client_options: client_options(),
                    verify_challenge_resource: verify,
                }),
            )?,
            keys: KeyClient::new(
                url,
                credential.clone(),
                Some(KeyClientOptions {
                    api_version: config.api_version.clone(),
                    client_options: client_options(),
                    verify_challenge_resource: verify,
                }),
            )?,
            certificates: CertificateClient::new(
                url,
                credential,
                Some(CertificateClientOptions {
                    api_version: config.api_version.clone(),
                    client_options: client_options(),
                    verify_challenge_resource: verify,
                }),
            )?,
            gates: Default::default(),
        })
    }

    /// Waits until the client of `object_type` may send: immediately once it
    /// has answered one request, otherwise after the request in flight.
    pub async fn gate(&self, object_type: ObjectType) -> GateGuard<'_> {
        let gate = &self.gates[match object_type {
            ObjectType::Secret => 0,
            ObjectType::Key => 1,
            ObjectType::Cert => 2,
        }];
        if gate.open.load(Ordering::Acquire) {
            return GateGuard { gate, _held: None };
        }
        let held = gate.first.lock().await;
        if gate.open.load(Ordering::Acquire) {
            return GateGuard { gate, _held: None };
        }
        GateGuard {
            gate,
            _held: Some(held),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vault_urls_keep_the_real_host() {
        assert_eq!(
            vault_url("kv-demo", "vault.azure.net", None),
            "https://kv-demo.vault.azure.net/"
        );
        assert_eq!(
            vault_url("kv-demo", "vault.azure.net", Some(443)),
            "https://kv-demo.vault.azure.net/"
        );
        assert_eq!(
            vault_url("kv-demo", "vault.azure.cn", Some(8443)),
            "https://kv-demo.vault.azure.cn:8443/"
        );
    }

    #[test]
    fn a_bad_ca_is_reported() {
        let config = AzureProviderConfig {
            extra_ca_pem: Some("not a certificate".into()),
            ..Default::default()
        };
        assert!(matches!(
            http_client(&config, Endpoints::Remote),
            Err(ConfigError::CaPem(_))
        ));
    }
}
