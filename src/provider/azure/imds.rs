//! Token credentials served on the node: IMDS (the node's managed identity)
//! and aad-pod-identity's NMI (deprecated).
//!
//! `azure_identity`'s `ManagedIdentityCredential` hard-codes the IMDS URL, so
//! both are implemented here over our HTTP client, with configurable base
//! URLs, behind `TokenCredential`. Errors carry the HTTP status (and the
//! service's error code) as `azure_core` `HttpResponse` errors so they are
//! classified like every other failure; they never carry a token.

use std::fmt;

use azure_core::credentials::{AccessToken, Secret, TokenCredential, TokenRequestOptions};
use azure_core::error::{Error, ErrorKind as AzErrorKind};
use azure_core::http::StatusCode;
use azure_core::time::{Duration as AzDuration, OffsetDateTime};
use secretfs_secrets::SecretString;
use serde::Deserialize;

use super::credentials::TokenCache;

/// IMDS api-version for managed identity tokens.
pub const IMDS_API_VERSION: &str = "2018-02-01";

/// The node's managed identity through IMDS
/// (`GET <base>/metadata/identity/oauth2/token`, header `Metadata: true`).
pub struct ImdsCredential {
    http: reqwest::Client,
    endpoint: String,
    client_id: Option<String>,
    cache: TokenCache,
}

impl ImdsCredential {
    /// A credential for the user-assigned identity `client_id`, or the
    /// system-assigned one.
    pub fn new(http: reqwest::Client, base_url: &str, client_id: Option<String>) -> Self {
        ImdsCredential {
            http,
            endpoint: format!(
                "{}/metadata/identity/oauth2/token",
                base_url.trim_end_matches('/')
            ),
            client_id,
            cache: TokenCache::new(),
        }
    }

    async fn fetch(&self, scopes: &[&str]) -> azure_core::Result<AccessToken> {
        let resource = resource_of(scopes)?;
        let mut url = parse_url(&self.endpoint)?;
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("api-version", IMDS_API_VERSION);
            q.append_pair("resource", &resource);
            if let Some(id) = &self.client_id {
                q.append_pair("client_id", id);
            }
        }
        let response = self
            .http
            .get(url)
            .header("Metadata", "true")
            .send()
            .await
            .map_err(transport_error)?;
        token_from_response(response, "IMDS", |body| {
            let t: ImdsToken = serde_json::from_slice(body)?;
            Ok((t.access_token, t.expires_on, t.expires_in))
        })
        .await
    }
}

impl fmt::Debug for ImdsCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ImdsCredential")
            .field("endpoint", &self.endpoint)
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

#[async_trait::async_trait]
impl TokenCredential for ImdsCredential {
    async fn get_token(
        &self,
        scopes: &[&str],
        _options: Option<TokenRequestOptions<'_>>,
    ) -> azure_core::Result<AccessToken> {
        self.cache
            .get(scopes, || self.fetch(scopes))
            .await
            .map_err(credential_error)
    }
}

/// A pod's identity through aad-pod-identity's NMI
/// (`GET <base>/host/token/?resource=…`, headers `podname`, `podns`).
pub struct NmiCredential {
    http: reqwest::Client,
    endpoint: String,
    pod_name: String,
    pod_namespace: String,
    cache: TokenCache,
}

impl NmiCredential {
    /// A credential for one pod.
    pub fn new(
        http: reqwest::Client,
        base_url: &str,
        pod_name: String,
        pod_namespace: String,
    ) -> Self {
        NmiCredential {
            http,
            endpoint: format!("{}/host/token/", base_url.trim_end_matches('/')),
            pod_name,
            pod_namespace,
            cache: TokenCache::new(),
        }
    }

    async fn fetch(&self, scopes: &[&str]) -> azure_core::Result<AccessToken> {
        let resource = resource_of(scopes)?;
        let mut url = parse_url(&self.endpoint)?;
        url.query_pairs_mut().append_pair("resource", &resource);
        let response = self
            .http
            .get(url)
            .header("podname", &self.pod_name)
            .header("podns", &self.pod_namespace)
            .send()
            .await
            .map_err(transport_error)?;
        token_from_response(response, "NMI", |body| {
            let t: NmiResponse = serde_json::from_slice(body)?;
            Ok((t.token.access_token, t.token.expires_on, t.token.expires_in))
        })
        .await
    }
}

impl fmt::Debug for NmiCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NmiCredential")
            .field("endpoint", &self.endpoint)
            .field("pod", &format!("{}/{}", self.pod_namespace, self.pod_name))
            .finish_non_exhaustive()
    }
}

#[async_trait::async_trait]
impl TokenCredential for NmiCredential {
    async fn get_token(
        &self,
        scopes: &[&str],
        _options: Option<TokenRequestOptions<'_>>,
    ) -> azure_core::Result<AccessToken> {
        self.cache
            .get(scopes, || self.fetch(scopes))
            .await
            .map_err(credential_error)
    }
}

/// `https://vault.azure.net/.default` → `https://vault.azure.net`.
fn resource_of(scopes: &[&str]) -> azure_core::Result<String> {
    match scopes {
        [scope] => Ok(scope.trim_end_matches("/.default").to_owned()),
        _ => Err(Error::with_message(
            AzErrorKind::Credential,
            format!(
                "a managed identity token is for exactly one resource, got {} scopes",
                scopes.len()
            ),
        )),
    }
}

/// Marks a token failure as a credential error (as the SDK's credentials
/// do), keeping the HTTP error inside for classification.
fn credential_error(e: Error) -> Error {
    let message = e.to_string();
    Error::with_error(AzErrorKind::Credential, e, message)
}

fn parse_url(url: &str) -> azure_core::Result<reqwest::Url> {
    reqwest::Url::parse(url).map_err(|e| {
        Error::with_message(
            AzErrorKind::Other,
            format!("token endpoint {url:?} is not a valid URL: {e}"),
        )
    })
}

fn transport_error(e: reqwest::Error) -> Error {
    let kind = if e.is_connect() {
        AzErrorKind::Connection
    } else {
        AzErrorKind::Io
    };
    // reqwest's Display names the URL, never headers or bodies.
    Error::with_message(kind, e.without_url().to_string())
}

/// A number that IMDS sends as a string and others as a number.
#[derive(Deserialize)]
#[serde(untagged)]
enum Number {
    Int(i64),
    Text(String),
}

impl Number {
    fn value(&self) -> Option<i64> {
        match self {
            Number::Int(i) => Some(*i),
            Number::Text(s) => s.trim().parse().ok(),
        }
    }
}

#[derive(Deserialize)]
struct ImdsToken {
    access_token: SecretString,
    #[serde(default)]
    expires_on: Option<Number>,
    #[serde(default)]
    expires_in: Option<Number>,
}

#[derive(Deserialize)]
struct NmiResponse {
    token: ImdsToken,
}

#[derive(Deserialize, Default)]
struct ErrorBody {
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    error_description: Option<String>,
}

type Parsed = (SecretString, Option<Number>, Option<Number>);

async fn token_from_response(
    response: reqwest::Response,
    service: &'static str,
    parse: impl FnOnce(&[u8]) -> serde_json::Result<Parsed>,
) -> azure_core::Result<AccessToken> {
    let status = response.status().as_u16();
    let body = zeroize::Zeroizing::new(response.bytes().await.map_err(transport_error)?.to_vec());
    if (200..300).contains(&status) {
        let (token, expires_on, expires_in) = parse(&body).map_err(|e| {
            Error::with_message(
                AzErrorKind::DataConversion,
                format!(
                    "{service} returned a token response that does not parse (line {} column {})",
                    e.line(),
                    e.column()
                ),
            )
        })?;
        let now = OffsetDateTime::now_utc();
        let expires = expires_on
            .and_then(|n| n.value())
            .and_then(|s| OffsetDateTime::from_unix_timestamp(s).ok())
            .or_else(|| {
                expires_in
                    .and_then(|n| n.value())
                    .map(|s| now + AzDuration::seconds(s))
            })
            .unwrap_or(now + AzDuration::minutes(10));
        return Ok(AccessToken::new(
            Secret::new(token.expose().to_owned()),
            expires,
        ));
    }
    // Error bodies are JSON (`error`, `error_description`) or short text;
    // neither holds a token.
    let parsed: ErrorBody = serde_json::from_slice(&body).unwrap_or_default();
    let detail = match (&parsed.error, &parsed.error_description) {
        (Some(code), Some(desc)) => format!("{code}: {desc}"),
        (Some(code), None) => code.clone(),
        (None, Some(desc)) => desc.clone(),
        (None, None) => {
            let text = String::from_utf8_lossy(&body);
            let text: String = text.trim().chars().take(200).collect();
            if text.is_empty() {
                "(empty body)".to_owned()
            } else {
                text
            }
        }
    };
    let message = match service {
        "NMI" => format!("nmi response failed with status code: {status}, response body: {detail}"),
        _ => format!("{service} token request failed with status code {status}: {detail}"),
    };
    Err(Error::with_message(
        AzErrorKind::HttpResponse {
            status: StatusCode::from(status),
            error_code: parsed.error,
            raw_response: None,
        },
        message,
    ))
}
