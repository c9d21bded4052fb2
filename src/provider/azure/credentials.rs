//! One token credential per identity: the SDK's `ClientSecretCredential` and
//! `ClientAssertionCredential` (workload identity, the assertion read from a
//! slot that each mount refreshes), or our IMDS / NMI credentials.
//!
//! Tokens are cached by the credential until five minutes before they expire
//! (the SDK credentials do this themselves; ours use [`TokenCache`]). A
//! concurrent first use fetches one token: the cache holds its lock while
//! fetching.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::{Arc, RwLock};

use azure_core::cloud::{CloudConfiguration, CustomConfiguration};
use azure_core::credentials::{AccessToken, Secret, TokenCredential};
use azure_core::http::policies::{Policy, PolicyResult};
use azure_core::http::{ClientMethodOptions, ClientOptions, Context, Request};
use azure_core::time::{Duration as AzDuration, OffsetDateTime};
use azure_identity::{
    ClientAssertion, ClientAssertionCredential, ClientAssertionCredentialOptions,
    ClientSecretCredential, ClientSecretCredentialOptions,
};
use secretfs_secrets::SecretString;

use super::identity::IdentityConfig;
use super::imds::{ImdsCredential, NmiCredential};

/// Tokens are refreshed this long before they expire.
pub const REFRESH_MARGIN_SECS: i64 = 300;

/// A per-scope token cache; a miss fetches while holding the lock, so
/// concurrent callers wait for one request instead of making their own.
#[derive(Default)]
pub struct TokenCache(tokio::sync::Mutex<HashMap<String, AccessToken>>);

impl TokenCache {
    /// An empty cache.
    pub fn new() -> Self {
        TokenCache::default()
    }

    /// The cached token for `scopes`, or a fresh one from `fetch`.
    pub async fn get<F, Fut>(&self, scopes: &[&str], fetch: F) -> azure_core::Result<AccessToken>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = azure_core::Result<AccessToken>>,
    {
        let key = scopes.join(" ");
        let mut tokens = self.0.lock().await;
        if let Some(token) = tokens.get(&key)
            && token.expires_on
                > OffsetDateTime::now_utc() + AzDuration::seconds(REFRESH_MARGIN_SECS)
        {
            return Ok(token.clone());
        }
        let token = fetch().await?;
        tokens.insert(key, token.clone());
        Ok(token)
    }
}

impl fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenCache(<redacted>)")
    }
}

/// The newest service-account token of a workload identity. Each mount
/// stores the token kubelet sent; the credential reads it when it needs a
/// new access token.
#[derive(Default)]
pub struct AssertionSlot(RwLock<SecretString>);

impl AssertionSlot {
    /// A slot holding `token`.
    pub fn new(token: SecretString) -> Arc<Self> {
        Arc::new(AssertionSlot(RwLock::new(token)))
    }

    /// Stores a newer token.
    pub fn set(&self, token: SecretString) {
        match self.0.write() {
            Ok(mut slot) => *slot = token,
            Err(poisoned) => *poisoned.into_inner() = token,
        }
    }

    /// Replaces the token with an empty one (the old one is zeroized).
    pub fn wipe(&self) {
        self.set(SecretString::default());
    }

    fn get(&self) -> SecretString {
        match self.0.read() {
            Ok(slot) => slot.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }
}

impl fmt::Debug for AssertionSlot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AssertionSlot(<redacted>)")
    }
}

#[derive(Debug)]
struct SlotAssertion(Arc<AssertionSlot>);

#[async_trait::async_trait]
impl ClientAssertion for SlotAssertion {
    async fn secret(&self, _: Option<ClientMethodOptions<'_>>) -> azure_core::Result<String> {
        let token = self.0.get();
        if token.is_empty() {
            return Err(azure_core::Error::with_message(
                azure_core::error::ErrorKind::Credential,
                "the workload identity's service account token was wiped (identity evicted from the cache)",
            ));
        }
        Ok(token.expose().to_owned())
    }
}

/// What builds credentials: the HTTP transport and the endpoints.
#[derive(Debug, Clone)]
pub struct CredentialEnv {
    /// The client for IMDS and NMI (no proxy).
    pub node_http: reqwest::Client,
    /// The SDK transport for Entra ID.
    pub transport: azure_core::http::Transport,
    /// IMDS base URL.
    pub imds_url: String,
    /// NMI base URL.
    pub nmi_url: String,
}

impl CredentialEnv {
    fn client_options(&self, authority_host: &str) -> ClientOptions {
        let mut custom = CustomConfiguration::default();
        custom.authority_host = authority_host.trim_end_matches('/').to_owned();
        ClientOptions {
            transport: Some(self.transport.clone()),
            retry: azure_core::http::RetryOptions::none(),
            cloud: Some(Arc::new(CloudConfiguration::Custom(custom))),
            per_try_policies: vec![Arc::new(EntraErrorPolicy)],
            ..Default::default()
        }
    }
}

/// Turns an Entra error answer into an `HttpResponse` error with its status,
/// `AADSTS` code and description, before the SDK reads it.
///
/// azure_identity 1.0.0 parses error bodies into borrowed strings, so any
/// `error_description` with an escape (real ones carry `\r\n` before the
/// trace id) fails as a `DataConversion` error that has lost the status and
/// the reason. With this policy the status survives, and 429/5xx from Entra
/// are retried like the vault's.
#[derive(Debug)]
struct EntraErrorPolicy;

#[derive(serde::Deserialize)]
struct EntraError {
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    error_description: Option<String>,
    #[serde(default)]
    error_codes: Vec<i64>,
}

#[async_trait::async_trait]
impl Policy for EntraErrorPolicy {
    async fn send(
        &self,
        ctx: &Context,
        request: &mut Request,
        next: &[Arc<dyn Policy>],
    ) -> PolicyResult {
        let response = next[0].send(ctx, request, &next[1..]).await?;
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status();
        let raw = response.try_into_raw_response().await?;
        let parsed: Option<EntraError> = serde_json::from_slice(raw.body().as_ref()).ok();
        let (code, message) = match parsed {
            Some(e) => {
                let code = if e.error_codes.is_empty() {
                    e.error.clone()
                } else {
                    Some(
                        e.error_codes
                            .iter()
                            .map(|c| format!("AADSTS{c}"))
                            .collect::<Vec<_>>()
                            .join(","),
                    )
                };
                let description = e
                    .error_description
                    .map(|d| d.lines().next().unwrap_or_default().trim().to_owned())
                    .unwrap_or_default();
                let message = match e.error {
                    Some(err) if !description.is_empty() => format!("{err}: {description}"),
                    Some(err) => err,
                    None => description,
                };
                (code, message)
            }
            None => (None, format!("Entra ID answered {status}")),
        };
        Err(azure_core::Error::with_message(
            azure_core::error::ErrorKind::HttpResponse {
                status,
                error_code: code,
                raw_response: Some(Box::new(raw)),
            },
            message,
        ))
    }
}

/// A built credential, and the slot of a workload identity.
pub struct BuiltCredential {
    /// The credential.
    pub credential: Arc<dyn TokenCredential>,
    /// The assertion slot (workload identity only).
    pub assertion: Option<Arc<AssertionSlot>>,
}

impl fmt::Debug for BuiltCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BuiltCredential")
            .field("credential", &self.credential)
            .field("workload_identity", &self.assertion.is_some())
            .finish()
    }
}

/// Builds the credential of `identity`, with Entra at `authority_host`.
pub fn build_credential(
    env: &CredentialEnv,
    identity: &IdentityConfig,
    authority_host: &str,
) -> azure_core::Result<BuiltCredential> {
    Ok(match identity {
        IdentityConfig::ServicePrincipal {
            tenant_id,
            client_id,
            client_secret,
        } => BuiltCredential {
            credential: ClientSecretCredential::new(
                tenant_id,
                client_id.clone(),
                Secret::new(client_secret.expose().to_owned()),
                Some(ClientSecretCredentialOptions {
                    client_options: env.client_options(authority_host),
                }),
            )?,
            assertion: None,
        },
        IdentityConfig::WorkloadIdentity {
            tenant_id,
            client_id,
            token,
        } => {
            let slot = AssertionSlot::new(token.clone());
            BuiltCredential {
                credential: ClientAssertionCredential::new(
                    tenant_id.clone(),
                    client_id.clone(),
                    SlotAssertion(slot.clone()),
                    Some(ClientAssertionCredentialOptions {
                        client_options: env.client_options(authority_host),
                    }),
                )?,
                assertion: Some(slot),
            }
        }
        IdentityConfig::ManagedIdentity {
            user_assigned_client_id,
        } => BuiltCredential {
            credential: Arc::new(ImdsCredential::new(
                env.node_http.clone(),
                &env.imds_url,
                user_assigned_client_id.clone(),
            )),
            assertion: None,
        },
        IdentityConfig::PodIdentity {
            pod_name,
            pod_namespace,
        } => BuiltCredential {
            credential: Arc::new(NmiCredential::new(
                env.node_http.clone(),
                &env.nmi_url,
                pod_name.clone(),
                pod_namespace.clone(),
            )),
            assertion: None,
        },
        IdentityConfig::AzureCli { tenant_id } => BuiltCredential {
            credential: Arc::new(super::azure_cli::CliCredential::new(tenant_id)?),
            assertion: None,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_cache_fetches_once_and_refreshes_near_expiry() {
        let cache = TokenCache::new();
        let calls = std::sync::atomic::AtomicU32::new(0);
        let fetch = |lifetime: i64| {
            calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            async move {
                Ok(AccessToken::new(
                    Secret::new("token-value"),
                    OffsetDateTime::now_utc() + AzDuration::seconds(lifetime),
                ))
            }
        };
        for _ in 0..3 {
            cache.get(&["s/.default"], || fetch(3600)).await.unwrap();
        }
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 1);
        // Another scope is another token.
        cache.get(&["t/.default"], || fetch(60)).await.unwrap();
        // Inside the refresh margin: fetched again each time.
        cache.get(&["t/.default"], || fetch(60)).await.unwrap();
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 3);
        assert_eq!(format!("{cache:?}"), "TokenCache(<redacted>)");
    }

    #[tokio::test]
    async fn the_assertion_slot_keeps_the_newest_token_and_is_wiped() {
        let slot = AssertionSlot::new(SecretString::from("first-jwt"));
        let assertion = SlotAssertion(slot.clone());
        assert_eq!(assertion.secret(None).await.unwrap(), "first-jwt");
        slot.set(SecretString::from("second-jwt"));
        assert_eq!(assertion.secret(None).await.unwrap(), "second-jwt");
        assert!(!format!("{slot:?}{assertion:?}").contains("jwt"));
        slot.wipe();
        let err = assertion.secret(None).await.unwrap_err();
        assert!(err.to_string().contains("wiped"));
    }
}
