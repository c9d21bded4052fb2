//! [`AzureProviderConfig`]: how the Azure provider reaches Key Vault, Entra ID,
//! IMDS and NMI, and how long it keeps trying.
//!
//! Everything has a production default (public endpoints, the platform's
//! root certificates, system DNS). The overrides exist for private clouds,
//! proxies and air-gapped test beds (our emulator): they redirect *where* a
//! host name connects, never what the URL says, so TLS verification and the
//! SDK's challenge-resource check stay on.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use super::cloud::CloudName;

/// Default IMDS base URL (the node's instance metadata service).
pub const DEFAULT_IMDS_URL: &str = "http://169.254.169.254";
/// Default aad-pod-identity NMI base URL.
pub const DEFAULT_NMI_URL: &str = "http://localhost:2579";
/// Key Vault api-version we pin (every public and sovereign cloud serves it).
pub const DEFAULT_API_VERSION: &str = "7.4";

/// Sends every connection for matching host names to `addr` (the URL's port
/// still applies when it has one). `host` is an exact name
/// (`login.microsoftonline.com`) or a wildcard suffix (`*.vault.azure.net`,
/// which matches any name ending in `.vault.azure.net`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostOverride {
    /// Exact host name or `*.suffix`.
    pub host: String,
    /// Where to connect.
    pub addr: SocketAddr,
}

impl HostOverride {
    /// A host override.
    pub fn new(host: impl Into<String>, addr: SocketAddr) -> Self {
        HostOverride {
            host: host.into(),
            addr,
        }
    }

    /// Whether `name` (a DNS name, any case) is covered.
    pub fn matches(&self, name: &str) -> bool {
        let name = name.trim_end_matches('.');
        match self.host.strip_prefix("*.") {
            Some(suffix) => {
                name.len() > suffix.len() + 1
                    && name[name.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
                    && name.as_bytes()[name.len() - suffix.len() - 1] == b'.'
            }
            None => name.eq_ignore_ascii_case(&self.host),
        }
    }
}

/// Retries of one request (429, 5xx, timeouts, connection errors).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryConfig {
    /// Attempts per request, the first included (default 6).
    pub max_attempts: u32,
    /// Backoff before the first retry; doubles each time (default 500 ms).
    pub initial_backoff: Duration,
    /// Upper bound of one backoff (default 8 s).
    pub max_backoff: Duration,
    /// Upper bound of an honoured `Retry-After` (default 30 s); a longer one
    /// is cut to this, and the overall deadline still applies.
    pub max_retry_after: Duration,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            max_attempts: 6,
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(8),
            max_retry_after: Duration::from_secs(30),
        }
    }
}

/// The Azure provider's configuration. `Default` is production.
#[derive(Clone)]
pub struct AzureProviderConfig {
    /// Extra trusted CA certificates (PEM, one or more), added to the
    /// platform's roots. Default: none.
    pub extra_ca_pem: Option<String>,
    /// Host-resolution overrides (vaults, the authority). Default: none.
    pub resolve: Vec<HostOverride>,
    /// Port of vault URLs (`https://<vault>.<suffix>:<port>/`). Default:
    /// none (443).
    pub vault_port: Option<u16>,
    /// Entra authority host replacing the cloud's (e.g.
    /// `https://login.microsoftonline.com:8443`); must be https. Default:
    /// the cloud's.
    pub authority_host: Option<String>,
    /// IMDS base URL (default [`DEFAULT_IMDS_URL`]).
    pub imds_url: String,
    /// NMI base URL (default [`DEFAULT_NMI_URL`]).
    pub nmi_url: String,
    /// Key Vault api-version (default [`DEFAULT_API_VERSION`]).
    pub api_version: String,
    /// Whether the Key Vault challenge's resource must match the vault's
    /// domain (default true; keep it on).
    pub verify_challenge_resource: bool,
    /// The cloud used when `cloudName` is empty (`--cloud-name`).
    pub default_cloud: CloudName,
    /// Everything one mount may take, retries included (default 100 s, below
    /// kubelet's ~2 min NodePublish timeout).
    pub deadline: Duration,
    /// One attempt of one request (default 20 s).
    pub request_timeout: Duration,
    /// Establishing one connection (default 10 s).
    pub connect_timeout: Duration,
    /// Objects fetched at the same time per mount (default 8; 0 counts as 1).
    pub concurrency: usize,
    /// Retry policy.
    pub retry: RetryConfig,
    /// Identities whose credentials and clients are kept (LRU, default 256).
    pub max_identities: usize,
    /// Byte budget of the shared object cache.
    pub cache_bytes: usize,
    /// Vault requests allowed per vault.
    pub rate_limit: crate::provider::azure::rate::RateLimit,
    /// Authenticate every mount as the account signed in to the Azure CLI
    /// (`az account get-access-token`), whatever identity the class names.
    /// Only `secretfs mount` sets it, as the last of its credential sources;
    /// never a node. Default false.
    pub azure_cli: bool,
    /// Where vault requests and cache hits are counted (default: the
    /// process's registry; tests give one of their own).
    pub metrics: &'static crate::metrics::Metrics,
}

impl Default for AzureProviderConfig {
    fn default() -> Self {
        AzureProviderConfig {
            extra_ca_pem: None,
            resolve: Vec::new(),
            vault_port: None,
            authority_host: None,
            imds_url: DEFAULT_IMDS_URL.to_owned(),
            nmi_url: DEFAULT_NMI_URL.to_owned(),
            api_version: DEFAULT_API_VERSION.to_owned(),
            verify_challenge_resource: true,
            default_cloud: CloudName::Public,
            deadline: Duration::from_secs(100),
            request_timeout: Duration::from_secs(20),
            connect_timeout: Duration::from_secs(10),
            concurrency: 8,
            retry: RetryConfig::default(),
            max_identities: 256,
            cache_bytes: crate::provider::azure::cache::DEFAULT_BUDGET,
            rate_limit: crate::provider::azure::rate::RateLimit::default(),
            azure_cli: false,
            metrics: crate::metrics::global(),
        }
    }
}

impl fmt::Debug for AzureProviderConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AzureProviderConfig")
            .field(
                "extra_ca_pem",
                &self
                    .extra_ca_pem
                    .as_ref()
                    .map(|p| format!("<{} bytes of PEM>", p.len())),
            )
            .field("resolve", &self.resolve)
            .field("vault_port", &self.vault_port)
            .field("authority_host", &self.authority_host)
            .field("imds_url", &self.imds_url)
            .field("nmi_url", &self.nmi_url)
            .field("api_version", &self.api_version)
            .field("verify_challenge_resource", &self.verify_challenge_resource)
            .field("default_cloud", &self.default_cloud)
            .field("deadline", &self.deadline)
            .field("request_timeout", &self.request_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("concurrency", &self.concurrency)
            .field("retry", &self.retry)
            .field("max_identities", &self.max_identities)
            .field("azure_cli", &self.azure_cli)
            .finish()
    }
}

/// Why the provider could not be built from its configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// `extra_ca_pem` holds no usable certificate.
    #[error("extra_ca_pem is not a PEM certificate bundle: {0}")]
    CaPem(String),
    /// A URL setting does not parse.
    #[error("{field} {value:?} is not a valid URL: {reason}")]
    Url {
        /// The setting.
        field: &'static str,
        /// Its value.
        value: String,
        /// Why.
        reason: String,
    },
    /// The authority host is not https.
    #[error("authority_host {0:?} must be an https URL (Entra ID is only reached over TLS)")]
    AuthorityNotHttps(String),
    /// The HTTP client could not be built.
    #[error("could not build the HTTP client: {0}")]
    Http(String),
    /// The identity-key salt could not be made.
    #[error("could not get random bytes for the identity key salt")]
    Random,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_override_matching() {
        let addr: SocketAddr = "127.0.0.1:8443".parse().unwrap();
        let wild = HostOverride::new("*.vault.azure.net", addr);
        assert!(wild.matches("kv-demo.vault.azure.net"));
        assert!(wild.matches("KV.Vault.Azure.Net."));
        assert!(!wild.matches("vault.azure.net"));
        assert!(!wild.matches("evilvault.azure.net"));
        assert!(!wild.matches("kv.vault.azure.net.evil.com"));
        let exact = HostOverride::new("login.microsoftonline.com", addr);
        assert!(exact.matches("LOGIN.microsoftonline.com"));
        assert!(!exact.matches("x.login.microsoftonline.com"));
    }

    #[test]
    fn debug_does_not_show_the_ca() {
        let config = AzureProviderConfig {
            extra_ca_pem: Some("-----BEGIN CERTIFICATE-----\nMIIBsecret".into()),
            ..Default::default()
        };
        let shown = format!("{config:?}");
        assert!(!shown.contains("MIIB"), "{shown}");
        assert!(shown.contains("deadline: 100s"), "{shown}");
    }
}
