//! Fetching one object (or its version history) through the SDK clients,
//! with our retries, and the messages users see when that fails.
//!
//! Bodies are parsed into our own types so a secret value goes straight
//! into a zeroizing [`SecretString`] (the SDK's `Secret.value` is a plain
//! `String`; the transport's buffers stay outside our control).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use azure_security_keyvault_certificates::models::CertificateClientGetCertificateOptions;
use azure_security_keyvault_keys::models::KeyClientGetKeyOptions;
use azure_security_keyvault_secrets::models::SecretClientGetSecretOptions;
use base64::Engine as _;
use futures::TryStreamExt as _;
use secretfs_secrets::SecretString;
use serde::Deserialize;
use tokio::time::Instant;

use super::clients::VaultClients;
use super::config::RetryConfig;
use super::content::{Fetched, FetchedSecret, object_content};
use super::history::{VersionInfo, history_files, version_of_id};
use super::jwk::JsonWebKey;
use super::objects::{KeyVaultObject, ObjectType};
use super::retry::{Failure, classify, secs, with_retry};
use super::validity::{Attributes, validity};
use crate::expiry::Validity;
use crate::provider::{ErrorKind, FileMode, MountedFile, ObjectError, ObjectVersion};

/// What one mount's fetches share.
#[derive(Debug, Clone, Copy)]
pub struct FetchContext<'a> {
    /// The clients of the mount's identity and vault.
    pub clients: &'a VaultClients,
    /// The node's per-vault request budget (none in unit tests).
    pub limiter: Option<&'a crate::provider::azure::rate::RateLimiter>,
    /// The vault's name (`keyvaultName`).
    pub vault: &'a str,
    /// Who we are, for messages (`managed identity 5a1d…`).
    pub identity: &'a str,
    /// Retry policy.
    pub retry: &'a RetryConfig,
    /// When the mount must have finished.
    pub deadline: Instant,
    /// The whole deadline, for messages.
    pub deadline_total: Duration,
    /// One attempt's limit.
    pub request_timeout: Duration,
    /// Mode of files without `filePermission`.
    pub default_mode: FileMode,
    /// Where vault requests are counted.
    pub metrics: &'static crate::metrics::Metrics,
}

/// The files and versions of one object.
#[derive(Debug, Default)]
pub struct FetchedObject {
    /// Its files.
    pub files: Vec<MountedFile>,
    /// One version per file.
    pub versions: Vec<ObjectVersion>,
    /// Non-fatal findings.
    pub warnings: Vec<String>,
    /// When each file's version is valid, by file path (as fetched).
    pub validity: BTreeMap<String, Validity>,
}

#[derive(Deserialize)]
struct SecretBundle {
    #[serde(default)]
    value: Option<SecretString>,
    #[serde(default, rename = "contentType")]
    content_type: Option<String>,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    attributes: Option<Attributes>,
}

#[derive(Deserialize)]
struct KeyBundle {
    #[serde(default)]
    key: Option<serde_json::Value>,
    #[serde(default)]
    attributes: Option<Attributes>,
}

#[derive(Deserialize)]
struct CertificateBundle {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    cer: Option<String>,
    #[serde(default)]
    attributes: Option<Attributes>,
}

/// What one GET returned: the content, the object id (URL) Key Vault
/// reported, and the version's `nbf`/`exp`.
type Got = (Fetched, Option<String>, Attributes);

fn bad_body(what: &str, e: &serde_json::Error) -> Failure {
    // serde's message can quote values: only the position is shown.
    Failure::invalid(format!(
        "Key Vault returned a {what} that does not parse (line {} column {})",
        e.line(),
        e.column()
    ))
}

/// A 429 with `Retry-After` from the vault pauses its bucket: no request of
/// this node goes to that vault until then (`crate::provider::azure::rate`).
fn pause_if_throttled<T>(ctx: &FetchContext<'_>, result: &Result<T, Failure>) {
    if let (Some(limiter), Err(failure)) = (ctx.limiter, result)
        && failure.kind == ErrorKind::Throttled
        && !failure.credential
        && let Some(wait) = failure.retry_after
    {
        limiter.pause(ctx.vault, wait.min(ctx.retry.max_retry_after));
    }
}

/// Whether the vault answered (so the client has learnt its challenge).
fn answered(f: &Failure) -> bool {
    f.status.is_some() || f.credential
}

/// One GET of `name` at `version` (latest when `None`).
async fn get(
    ctx: &FetchContext<'_>,
    object_type: ObjectType,
    name: &str,
    version: Option<&str>,
) -> Result<Got, Failure> {
    with_retry(
        ctx.retry,
        ctx.metrics,
        ctx.deadline,
        ctx.request_timeout,
        || async {
            if let Some(limiter) = ctx.limiter {
                limiter.acquire(ctx.vault).await;
            }
            let gate = ctx.clients.gate(object_type).await;
            let started = std::time::Instant::now();
            let result = get_once(ctx.clients, object_type, name, version).await;
            ctx.metrics.vault_request(
                result.as_ref().map_or_else(|f| f.kind.as_str(), |_| "ok"),
                started.elapsed().as_secs_f64(),
            );
            pause_if_throttled(ctx, &result);
            match &result {
                Ok(_) => gate.open(),
                Err(f) if answered(f) => gate.open(),
                Err(_) => {}
            }
            result
        },
    )
    .await
}

async fn get_once(
    clients: &VaultClients,
    object_type: ObjectType,
    name: &str,
    version: Option<&str>,
) -> Result<Got, Failure> {
    let version = version.map(str::to_owned);
    match object_type {
        ObjectType::Secret => {
            let rsp = clients
                .secrets
                .get_secret(
                    name,
                    Some(SecretClientGetSecretOptions {
                        secret_version: version,
                        ..Default::default()
                    }),
                )
                .await
                .map_err(|e| classify(&e))?;
            let body = rsp.into_body();
            let bundle: SecretBundle =
                serde_json::from_slice(body.as_ref()).map_err(|e| bad_body("secret", &e))?;
            Ok((
                Fetched::Secret(FetchedSecret {
                    value: bundle.value,
                    content_type: bundle.content_type,
                    kid: bundle.kid,
                }),
                bundle.id,
                bundle.attributes.unwrap_or_default(),
            ))
        }
        ObjectType::Key => {
            let rsp = clients
                .keys
                .get_key(
                    name,
                    Some(KeyClientGetKeyOptions {
                        key_version: version,
                        ..Default::default()
                    }),
                )
                .await
                .map_err(|e| classify(&e))?;
            let body = rsp.into_body();
            let bundle: KeyBundle =
                serde_json::from_slice(body.as_ref()).map_err(|e| bad_body("key", &e))?;
            let attributes = bundle.attributes.unwrap_or_default();
            let key = bundle.key.unwrap_or(serde_json::Value::Null);
            let kid = key.get("kid").and_then(|v| v.as_str()).map(str::to_owned);
            let jwk: JsonWebKey =
                serde_json::from_value(key).map_err(|e| bad_body("key (JsonWebKey)", &e))?;
            Ok((Fetched::Key(jwk), kid, attributes))
        }
        ObjectType::Cert => {
            let rsp = clients
                .certificates
                .get_certificate(
                    name,
                    Some(CertificateClientGetCertificateOptions {
                        certificate_version: version,
                        ..Default::default()
                    }),
                )
                .await
                .map_err(|e| classify(&e))?;
            let body = rsp.into_body();
            let bundle: CertificateBundle =
                serde_json::from_slice(body.as_ref()).map_err(|e| bad_body("certificate", &e))?;
            let der = match bundle.cer {
                Some(cer) => base64::engine::general_purpose::STANDARD
                    .decode(cer.trim())
                    .map_err(|_| Failure::invalid("the certificate's cer is not valid base64"))?,
                None => Vec::new(),
            };
            Ok((
                Fetched::Cert(der),
                bundle.id,
                bundle.attributes.unwrap_or_default(),
            ))
        }
    }
}

/// Lists every version of an object (one request per page).
async fn list_versions(
    ctx: &FetchContext<'_>,
    object_type: ObjectType,
    name: &str,
) -> Result<Vec<VersionInfo>, Failure> {
    with_retry(
        ctx.retry,
        ctx.metrics,
        ctx.deadline,
        ctx.request_timeout,
        || async {
            if let Some(limiter) = ctx.limiter {
                limiter.acquire(ctx.vault).await;
            }
            let gate = ctx.clients.gate(object_type).await;
            let started = std::time::Instant::now();
            let result = list_once(ctx.clients, object_type, name).await;
            ctx.metrics.vault_request(
                result.as_ref().map_or_else(|f| f.kind.as_str(), |_| "ok"),
                started.elapsed().as_secs_f64(),
            );
            pause_if_throttled(ctx, &result);
            match &result {
                Ok(_) => gate.open(),
                Err(f) if answered(f) => gate.open(),
                Err(_) => {}
            }
            result
        },
    )
    .await
}

fn info(id: Option<&str>, enabled: Option<bool>, created: Option<i64>) -> Option<VersionInfo> {
    let version = version_of_id(id?)?.to_owned();
    Some(VersionInfo {
        version,
        enabled: enabled.unwrap_or(true),
        created,
    })
}

async fn list_once(
    clients: &VaultClients,
    object_type: ObjectType,
    name: &str,
) -> Result<Vec<VersionInfo>, Failure> {
    let az = |e: azure_core::Error| classify(&e);
    // The three SDKs page different property types with the same shape:
    // an id field, and attributes with `enabled` and `created`.
    macro_rules! versions {
        ($pages:expr, $id:ident) => {
            $pages
                .map_err(az)?
                .try_collect::<Vec<_>>()
                .await
                .map_err(az)?
                .iter()
                .filter_map(|p| {
                    let a = p.attributes.as_ref();
                    info(
                        p.$id.as_deref(),
                        a.and_then(|a| a.enabled),
                        a.and_then(|a| a.created).map(|t| t.unix_timestamp()),
                    )
                })
                .collect()
        };
    }
    Ok(match object_type {
        ObjectType::Secret => versions!(
            clients.secrets.list_secret_properties_versions(name, None),
            id
        ),
        ObjectType::Key => versions!(clients.keys.list_key_properties_versions(name, None), kid),
        ObjectType::Cert => versions!(
            clients
                .certificates
                .list_certificate_properties_versions(name, None),
            id
        ),
    })
}

fn collection(object_type: ObjectType) -> &'static str {
    match object_type {
        ObjectType::Secret => "secrets",
        ObjectType::Key => "keys",
        ObjectType::Cert => "certificates",
    }
}

/// The error about `object` after `failure`: what was asked, of which vault,
/// what came back, and the fix where it is clear.
pub fn object_error(
    ctx: &FetchContext<'_>,
    object: &KeyVaultObject,
    version: Option<&str>,
    operation: &str,
    failure: &Failure,
) -> ObjectError {
    let what = format!(
        "failed to {operation} objectType:{}, objectName:{}, objectVersion:{} from vault {} ({})",
        object.object_type.as_str(),
        object.name,
        version.unwrap_or(""),
        ctx.vault,
        ctx.clients.url.trim_end_matches('/'),
    );
    let mut answer = String::new();
    if let Some(status) = failure.status {
        answer.push_str(&status.to_string());
        if let Some(code) = &failure.code {
            answer.push(' ');
            answer.push_str(code);
        }
        answer.push_str(": ");
    }
    answer.push_str(&failure.message);
    if failure.credential {
        answer = format!("could not get a token as {}: {answer}", ctx.identity);
    }
    let code = failure.code.as_deref().unwrap_or("");
    let perm = if operation.starts_with("list") {
        "list"
    } else {
        "get"
    };
    let fix = match (failure.kind, failure.status) {
        // An outage of Entra ID or IMDS is not the identity's fault.
        _ if failure.credential && failure.kind.is_retryable() => format!(
            "the token endpoint (Entra ID, or IMDS for a managed identity) is failing or unreachable; gave up after {} attempts; the mount is retried later",
            failure.attempts
        ),
        _ if failure.credential => format!(
            "check that {} exists in the tenant and may be used here (tenantID, clientID, federated credential subject, nodePublishSecretRef secret, or the node's identity)",
            ctx.identity
        ),
        (ErrorKind::NotFound, _) => format!(
            "check objectName, objectType and objectVersion, and that keyvaultName {} is the vault holding it",
            ctx.vault
        ),
        (ErrorKind::Denied, Some(403)) if code.contains("Disabled") => {
            "the version is disabled: enable it or pin another objectVersion".to_owned()
        }
        (ErrorKind::Denied, Some(403)) => format!(
            "grant {} {perm} permission on {} in the vault's access policies (or the Key Vault {} User role with RBAC)",
            ctx.identity,
            collection(object.object_type),
            match object.object_type {
                ObjectType::Secret => "Secrets",
                ObjectType::Key => "Crypto",
                ObjectType::Cert => "Certificate",
            }
        ),
        (ErrorKind::Denied, _) => format!(
            "the vault refused the token of {}: check that tenantID is the vault's tenant",
            ctx.identity
        ),
        (ErrorKind::Throttled, _) => format!(
            "Key Vault is throttling this vault; gave up after {} attempts; the mount is retried later (reduce the request rate or spread objects over vaults)",
            failure.attempts
        ),
        (ErrorKind::Transient, _) if failure.deadline_exceeded => format!(
            "gave up after {} attempts to stay within the {} mount deadline; the mount is retried later",
            failure.attempts,
            secs(ctx.deadline_total)
        ),
        (ErrorKind::Transient, _) => format!(
            "gave up after {} attempts; check that the node can reach the vault; the mount is retried later",
            failure.attempts
        ),
        (ErrorKind::Invalid, _) => String::new(),
    };
    let message = if fix.is_empty() {
        format!("{what}: {answer}")
    } else {
        format!("{what}: {answer} ({fix})")
    };
    ObjectError::new(object.id(), failure.kind, message).with_retry_after(failure.retry_after)
}

/// Why an object failed, and whether the identity itself was refused
/// (no token, or the vault rejected the token: 401).
#[derive(Debug, Clone)]
pub struct FetchError {
    /// The error about the object.
    pub error: ObjectError,
    /// The identity's token was refused or could not be had.
    pub identity_refused: bool,
}

impl From<ObjectError> for FetchError {
    fn from(error: ObjectError) -> Self {
        FetchError {
            error,
            identity_refused: false,
        }
    }
}

fn failed(
    ctx: &FetchContext<'_>,
    object: &KeyVaultObject,
    version: Option<&str>,
    operation: &str,
    failure: &Failure,
) -> FetchError {
    FetchError {
        error: object_error(ctx, object, version, operation, failure),
        identity_refused: failure.credential || failure.status == Some(401),
    }
}

/// Fetches the files of one object.
pub async fn fetch_object(
    ctx: &FetchContext<'_>,
    object: &KeyVaultObject,
) -> Result<FetchedObject, FetchError> {
    let mut out = FetchedObject::default();
    if !object.uses_history() {
        let (fetched, id, attributes) = get(
            ctx,
            object.object_type,
            &object.name,
            object.version.as_deref(),
        )
        .await
        .map_err(|f| failed(ctx, object, object.version.as_deref(), "get", &f))?;
        let object_id = object.id();
        let content = object_content(object, &object_id, &fetched)?;
        out.warnings
            .extend(content.warnings.iter().map(|w| format!("{object_id}: {w}")));
        let version = id
            .as_deref()
            .and_then(version_of_id)
            .map(str::to_owned)
            .or_else(|| object.version.clone())
            .unwrap_or_default();
        // Without history an object has exactly one file.
        if let Some(file) = object.planned_files(ctx.default_mode).into_iter().next() {
            out.validity
                .insert(file.path.clone(), validity(&version, attributes, &fetched));
            out.files.push(MountedFile {
                path: file.path,
                mode: file.mode,
                contents: Arc::new(content.bytes),
                object_id: file.object_id,
            });
        }
        out.versions.push(ObjectVersion {
            id: object_id,
            version,
        });
        return Ok(out);
    }
    let versions = list_versions(ctx, object.object_type, &object.name)
        .await
        .map_err(|f| {
            failed(
                ctx,
                object,
                object.version.as_deref(),
                "list versions of",
                &f,
            )
        })?;
    for (file, info) in history_files(object, &versions, ctx.default_mode)? {
        let (fetched, _, attributes) =
            get(ctx, object.object_type, &object.name, Some(&info.version))
                .await
                .map_err(|f| failed(ctx, object, Some(&info.version), "get", &f))?;
        let content = object_content(object, &file.object_id, &fetched)?;
        out.warnings.extend(
            content
                .warnings
                .iter()
                .map(|w| format!("{}: {w}", file.object_id)),
        );
        out.validity.insert(
            file.path.clone(),
            validity(&info.version, attributes, &fetched),
        );
        out.versions.push(ObjectVersion {
            id: file.object_id.clone(),
            version: info.version.clone(),
        });
        out.files.push(MountedFile {
            path: file.path,
            mode: file.mode,
            contents: Arc::new(content.bytes),
            object_id: file.object_id,
        });
    }
    Ok(out)
}
