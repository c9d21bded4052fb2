//! The Key Vault data plane: vault by `Host`, api-version check, the 401
//! challenge, token validation, faults, the access list, then the object.

mod bundles;
pub mod errors;
mod paging;

use std::time::Duration;

use http::{Method, Response, StatusCode};
use serde_json::Value;

use crate::faults::{FaultKind, FaultTarget};
use crate::http::{Body, Handled, Incoming, Outcome, Tally, json};
use crate::route::Route;
use crate::seed::PermissionModel;
use crate::state::Shared;
use crate::store::{CONTENT_TYPE_PEM, CONTENT_TYPE_PFX, ObjectKind, Vault, find_version};
use crate::tokens::{KEYVAULT_RESOURCES, TokenRejection};

use errors::{KvError, SUPPORTED_API_VERSIONS, add_keyvault_headers};

/// What the path asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    /// `/{collection}/{name}[/[{version}]]`; `None` = latest.
    Get {
        kind: ObjectKind,
        name: String,
        version: Option<String>,
    },
    /// `/{collection}/{name}/versions`
    Versions { kind: ObjectKind, name: String },
}

fn parse_target(segments: &[&str]) -> Option<Target> {
    let kind = ObjectKind::from_collection(segments.first()?)?;
    let name = segments.get(1).filter(|n| !n.is_empty())?.to_string();
    match &segments[2..] {
        [] | [""] => Some(Target::Get {
            kind,
            name,
            version: None,
        }),
        ["versions"] | ["versions", ""] => Some(Target::Versions { kind, name }),
        [v] | [v, ""] => Some(Target::Get {
            kind,
            name,
            version: Some(v.to_string()),
        }),
        _ => None,
    }
}

fn route_of(t: &Target) -> Route {
    match t {
        Target::Get {
            kind: ObjectKind::Secret,
            ..
        } => Route::SecretGet,
        Target::Get {
            kind: ObjectKind::Key,
            ..
        } => Route::KeyGet,
        Target::Get {
            kind: ObjectKind::Certificate,
            ..
        } => Route::CertificateGet,
        Target::Versions {
            kind: ObjectKind::Secret,
            ..
        } => Route::SecretVersions,
        Target::Versions {
            kind: ObjectKind::Key,
            ..
        } => Route::KeyVersions,
        Target::Versions {
            kind: ObjectKind::Certificate,
            ..
        } => Route::CertificateVersions,
    }
}

/// Is this path a Key Vault data-plane path?
pub fn is_keyvault_path(req: &Incoming) -> bool {
    matches!(
        req.segments().first(),
        Some(&("secrets" | "keys" | "certificates"))
    )
}

/// The Key Vault resource (token audience) of a vault host; IPs and
/// `localhost` count as the public cloud.
pub fn resource_for_host(host: &str) -> &'static str {
    KEYVAULT_RESOURCES
        .iter()
        .find(|(suffix, _)| host.ends_with(&format!(".{suffix}")))
        .map(|(_, r)| *r)
        .unwrap_or(KEYVAULT_RESOURCES[0].1)
}

/// Which vault a host names: the first label of `<vault>.vault.azure.net`
/// (and the other clouds); for any other host the configured default vault,
/// else the only vault.
fn vault_name_for_host(shared: &Shared, host: &str) -> Option<String> {
    if KEYVAULT_RESOURCES
        .iter()
        .any(|(suffix, _)| host.ends_with(&format!(".{suffix}")))
    {
        return host.split('.').next().map(str::to_string);
    }
    if let Some(v) = &shared.settings.default_vault {
        return Some(v.clone());
    }
    let store = shared.store();
    (store.vaults.len() == 1)
        .then(|| store.vaults.keys().next().cloned())
        .flatten()
}

fn done(tally: Tally, req: &Incoming, location: &str, err: KvError) -> Handled {
    Handled::respond(tally, err.response(req, location))
}

fn ok(tally: Tally, req: &Incoming, location: &str, body: &Value) -> Handled {
    let mut resp: Response<Body> = json(StatusCode::OK, body);
    add_keyvault_headers(&mut resp, req, location);
    Handled::respond(tally, resp)
}

/// Serve one data-plane request.
pub async fn handle(shared: &Shared, req: &Incoming) -> Handled {
    let segments = req.segments();
    let target = parse_target(&segments);
    let mut tally = Tally::new(
        target
            .as_ref()
            .map(route_of)
            .unwrap_or(Route::KeyVaultOther),
    );
    if let Some(Target::Get { name, .. } | Target::Versions { name, .. }) = &target {
        tally.object = name.clone();
    }
    let host = req.host_name();
    let Some(vault_name) = vault_name_for_host(shared, &host) else {
        let err = KvError::new(
            StatusCode::NOT_FOUND,
            "VaultNotFound",
            format!(
                "No vault is addressed by host '{host}'. Use https://<vault>.vault.azure.net or configure a default vault."
            ),
        );
        return done(tally, req, "", err);
    };
    tally.vault = vault_name.clone();
    let (tenant, location) = match shared.store().vault(&vault_name) {
        Some(v) => (v.tenant.clone(), v.location.clone()),
        None => {
            let err = KvError::new(
                StatusCode::NOT_FOUND,
                "VaultNotFound",
                format!("The vault '{vault_name}' does not exist in this emulator."),
            );
            return done(tally, req, "", err);
        }
    };

    match req.query_ci("api-version") {
        Some(v) if SUPPORTED_API_VERSIONS.contains(&v) => {}
        other => {
            return done(
                tally,
                req,
                &location,
                KvError::bad_api_version(other.unwrap_or("")),
            );
        }
    }

    let resource = resource_for_host(&host);
    let caller = match shared
        .tokens
        .validate_bearer(req.header("authorization"), resource, &tenant)
    {
        Ok(c) => c,
        Err(rejection) => {
            let mut err = KvError::new(
                StatusCode::UNAUTHORIZED,
                "Unauthorized",
                rejection.to_string(),
            );
            err.www_authenticate = Some(format!(
                "Bearer authorization=\"{}/{}\", resource=\"{}\"",
                shared.settings.challenge_authority.trim_end_matches('/'),
                tenant,
                resource
            ));
            if matches!(
                rejection,
                TokenRejection::Missing | TokenRejection::NotBearer
            ) {
                tracing::debug!(vault = %vault_name, path = %req.path, "challenge");
            }
            return done(tally, req, &location, err);
        }
    };
    tally.identity = caller.client_id.clone();

    let decision = shared.faults.decide(FaultTarget {
        vault: &tally.vault,
        route: tally.route,
        object: &tally.object,
        identity: &tally.identity,
    });
    if decision.latency_ms > 0 {
        tokio::time::sleep(Duration::from_millis(decision.latency_ms)).await;
    }
    if let Some(kind) = decision.answer {
        let err = match kind {
            FaultKind::ClaimsChallenge => {
                let claims = crate::util::b64_std(
                    format!(
                        r#"{{"access_token":{{"nbf":{{"essential":true,"value":"{}"}}}}}}"#,
                        crate::util::unix_now()
                    )
                    .as_bytes(),
                );
                let mut e = KvError::new(
                    StatusCode::UNAUTHORIZED,
                    "Unauthorized",
                    "Continuous access evaluation resulted in challenge with result: InteractionRequired and code: TokenIssuedBeforeRevocationTimestamp",
                );
                e.www_authenticate = Some(format!(
                    "Bearer realm=\"\", authorization_uri=\"https://login.microsoftonline.com/common/oauth2/authorize\", error=\"insufficient_claims\", claims=\"{claims}\""
                ));
                e
            }
            FaultKind::ConnectionReset => {
                return Handled {
                    outcome: Outcome::Reset,
                    tally,
                };
            }
            FaultKind::Throttle { retry_after } => {
                let mut e = KvError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "Throttled",
                    "Request was not processed because too many requests were received. Reason: VaultRequestTypeLimitReached",
                );
                e.retry_after = retry_after;
                e
            }
            FaultKind::ServerError { status } => KvError::new(
                StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                "InternalServerError",
                "The service encountered an internal error. Please retry the request.",
            ),
            FaultKind::Forbidden {
                inner_code,
                message,
            } => KvError::new(
                StatusCode::FORBIDDEN,
                "Forbidden",
                message.unwrap_or_else(|| {
                    format!("Access denied by an injected fault ({inner_code}).")
                }),
            )
            .inner(&inner_code),
            FaultKind::Latency { .. } => unreachable_latency(),
        };
        return done(tally, req, &location, err);
    }

    let Some(target) = target else {
        let err = KvError::new(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("The emulator does not serve '{}'.", req.path),
        );
        return done(tally, req, &location, err);
    };
    if req.method != Method::GET {
        let err = KvError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            format!(
                "The emulator's data plane is read-only; {} is not supported. Use the admin API to write.",
                req.method
            ),
        );
        return done(tally, req, &location, err);
    }

    let store = shared.store();
    let Some(vault) = store.vault(&vault_name) else {
        let err = KvError::new(
            StatusCode::NOT_FOUND,
            "VaultNotFound",
            "The vault was deleted.",
        );
        return done(tally, req, &location, err);
    };
    let (kind, list) = match &target {
        Target::Get { kind, .. } => (*kind, false),
        Target::Versions { kind, .. } => (*kind, true),
    };
    if !vault.allows(&caller.client_id, &caller.object_id, kind, list) {
        let err = denial(vault, &caller, kind, list, &tally.object);
        return done(tally, req, &location, err);
    }
    let base = format!("https://{}", req.host());
    let result = match &target {
        Target::Get {
            kind,
            name,
            version,
        } => get_object(vault, &base, *kind, name, version.as_deref(), req, shared),
        Target::Versions { kind, name } => list_versions(vault, &base, *kind, name, req, shared),
    };
    match result {
        Ok(body) => ok(tally, req, &location, &body),
        Err(err) => done(tally, req, &location, err),
    }
}

fn unreachable_latency() -> KvError {
    // Latency faults only add delay; `Faults::decide` never returns one as
    // the answer. Answer 500 rather than panic if that ever changes.
    KvError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "InternalServerError",
        "unexpected fault",
    )
}

fn denial(
    vault: &Vault,
    caller: &crate::tokens::Caller,
    kind: ObjectKind,
    list: bool,
    name: &str,
) -> KvError {
    let op = if list { "list" } else { "get" };
    match vault.permission_model {
        PermissionModel::AccessPolicy => KvError::new(
            StatusCode::FORBIDDEN,
            "Forbidden",
            format!(
                "The user, group or application 'appid={};oid={};iss={}' does not have {} {op} permission on key vault '{};location={}'. For help resolving this issue, please see https://go.microsoft.com/fwlink/?linkid=2125287",
                caller.client_id, caller.object_id, caller.issuer, kind.collection(), vault.name, vault.location
            ),
        )
        .inner("AccessDenied"),
        PermissionModel::Rbac => {
            let action = match (kind, list) {
                (ObjectKind::Secret, false) => "Microsoft.KeyVault/vaults/secrets/getSecret/action",
                (ObjectKind::Secret, true) => "Microsoft.KeyVault/vaults/secrets/readMetadata/action",
                (ObjectKind::Key, _) => "Microsoft.KeyVault/vaults/keys/read",
                (ObjectKind::Certificate, _) => "Microsoft.KeyVault/vaults/certificates/read",
            };
            KvError::new(
                StatusCode::FORBIDDEN,
                "Forbidden",
                format!(
                    "Caller is not authorized to perform action on resource.\r\nIf role assignments, deny assignments or role definitions were changed recently, please observe propagation time.\r\nCaller: appid={};oid={};iss={}\r\nAction: '{action}'\r\nResource: '/subscriptions/00000000-0000-0000-0000-000000000000/resourcegroups/emulator/providers/microsoft.keyvault/vaults/{}/{}/{}'\r\nAssignment: (not found)\r\nDenyAssignmentId: null\r\nDecisionReason: 'DeniedWithNoValidRBAC' \r\nVault: {};location={}\r\n",
                    caller.client_id, caller.object_id, caller.issuer, vault.name, kind.collection(), name.to_ascii_lowercase(), vault.name, vault.location
                ),
            )
            .inner("ForbiddenByRbac")
        }
    }
}

fn not_found(kind: ObjectKind, name: &str, version: Option<&str>, shared: &Shared) -> KvError {
    let (noun, code) = match kind {
        ObjectKind::Secret => ("secret", "SecretNotFound"),
        ObjectKind::Key => ("key", "KeyNotFound"),
        ObjectKind::Certificate => ("certificate", "CertificateNotFound"),
    };
    let (id, code) = match version {
        Some(v) if !v.is_empty() => (
            format!("{name}/{v}"),
            if kind == ObjectKind::Secret {
                shared.settings.secret_version_not_found_code.as_str()
            } else {
                code
            },
        ),
        _ => (name.to_string(), code),
    };
    KvError::new(
        StatusCode::NOT_FOUND,
        code,
        format!(
            "A {noun} with (name/id) {id} was not found in this key vault. If you recently deleted this {noun} you may be able to recover it using the correct recovery command. For help resolving this issue, please see https://go.microsoft.com/fwlink/?linkid=2125182"
        ),
    )
}

fn disabled(kind: ObjectKind) -> KvError {
    let (noun, inner) = match kind {
        ObjectKind::Secret => ("secret", "SecretDisabled"),
        ObjectKind::Key => ("key", "KeyDisabled"),
        ObjectKind::Certificate => ("certificate", "CertificateDisabled"),
    };
    KvError::new(
        StatusCode::FORBIDDEN,
        "Forbidden",
        format!("Operation get is not allowed on a disabled {noun}."),
    )
    .inner(inner)
}

fn get_object(
    vault: &Vault,
    base: &str,
    kind: ObjectKind,
    name: &str,
    version: Option<&str>,
    req: &Incoming,
    shared: &Shared,
) -> Result<Value, KvError> {
    let nf = || not_found(kind, name, version, shared);
    match kind {
        ObjectKind::Secret => {
            let s =
                find_version(vault.secrets.get(name).ok_or_else(nf)?, version).ok_or_else(nf)?;
            if !s.attributes.enabled {
                return Err(disabled(kind));
            }
            let stored_ct = s.content_type.as_deref();
            match (req.query_ci("outContentType"), &s.certificate) {
                (None, _) => Ok(bundles::secret_bundle(base, name, s, &s.value, stored_ct)),
                (Some(CONTENT_TYPE_PEM), Some(cert)) => Ok(bundles::secret_bundle(
                    base,
                    name,
                    s,
                    &cert.pem_bundle(),
                    Some(CONTENT_TYPE_PEM),
                )),
                (Some(CONTENT_TYPE_PFX), Some(_)) if stored_ct == Some(CONTENT_TYPE_PFX) => {
                    Ok(bundles::secret_bundle(base, name, s, &s.value, stored_ct))
                }
                (Some(other), _) => Err(KvError::new(
                    StatusCode::BAD_REQUEST,
                    "BadParameter",
                    format!(
                        "Conversion to '{other}' is not supported for this secret. Only certificate-backed PFX secrets can be converted to application/x-pem-file."
                    ),
                )),
            }
        }
        ObjectKind::Key => {
            let k = find_version(vault.keys.get(name).ok_or_else(nf)?, version).ok_or_else(nf)?;
            if !k.attributes.enabled {
                return Err(disabled(kind));
            }
            Ok(bundles::key_bundle(base, name, k))
        }
        ObjectKind::Certificate => {
            let c = find_version(vault.certificates.get(name).ok_or_else(nf)?, version)
                .ok_or_else(nf)?;
            Ok(bundles::certificate_bundle(base, name, c))
        }
    }
}

fn list_versions(
    vault: &Vault,
    base: &str,
    kind: ObjectKind,
    name: &str,
    req: &Incoming,
    shared: &Shared,
) -> Result<Value, KvError> {
    let p = paging::page_request(req)?;
    let nf = || not_found(kind, name, None, shared);
    let items: Vec<Value> = match kind {
        ObjectKind::Secret => vault
            .secrets
            .get(name)
            .ok_or_else(nf)?
            .iter()
            .map(|s| bundles::secret_item(base, name, s))
            .collect(),
        ObjectKind::Key => vault
            .keys
            .get(name)
            .ok_or_else(nf)?
            .iter()
            .map(|k| bundles::key_item(base, name, k))
            .collect(),
        ObjectKind::Certificate => vault
            .certificates
            .get(name)
            .ok_or_else(nf)?
            .iter()
            .map(|c| bundles::certificate_item(base, name, c))
            .collect(),
    };
    let path = format!("/{}/{name}/versions", kind.collection());
    Ok(paging::page(
        req,
        &path,
        items,
        p,
        &shared.settings.next_link_api_version,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_parse_like_the_service() {
        let get = |v: Option<&str>| Target::Get {
            kind: ObjectKind::Secret,
            name: "x".into(),
            version: v.map(String::from),
        };
        assert_eq!(parse_target(&["secrets", "x"]), Some(get(None)));
        assert_eq!(parse_target(&["secrets", "x", ""]), Some(get(None)));
        assert_eq!(
            parse_target(&["secrets", "x", "abc"]),
            Some(get(Some("abc")))
        );
        assert_eq!(
            parse_target(&["secrets", "x", "versions"]),
            Some(Target::Versions {
                kind: ObjectKind::Secret,
                name: "x".into()
            })
        );
        assert_eq!(parse_target(&["secrets", ""]), None);
        assert_eq!(parse_target(&["secrets", "x", "a", "b"]), None);
        assert_eq!(parse_target(&["storage", "x"]), None);
    }

    #[test]
    fn resources_follow_the_cloud_suffix() {
        assert_eq!(
            resource_for_host("kv.vault.azure.cn"),
            "https://vault.azure.cn"
        );
        assert_eq!(
            resource_for_host("kv.vault.usgovcloudapi.net"),
            "https://vault.usgovcloudapi.net"
        );
        assert_eq!(resource_for_host("127.0.0.1"), "https://vault.azure.net");
    }
}
