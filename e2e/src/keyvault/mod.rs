//! The Key Vault data plane: vault by `Host`, api-version check, the 401
//! challenge, token validation, faults, the access list, then the object.

mod bundles;
pub mod errors;
mod import;
mod objects;
mod paging;

use std::time::Duration;

use http::{Method, Response, StatusCode};
use serde_json::Value;

use crate::faults::{FaultKind, FaultTarget};
use crate::http::{Body, Handled, Incoming, Outcome, Tally, json};
use crate::route::Route;
use crate::seed::PermissionModel;
use crate::state::Shared;
use crate::store::{ObjectKind, Vault};
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
    /// `/{collection}[/]`: every object, current version.
    List { kind: ObjectKind },
    /// `/certificates/{name}/policy`: the latest version's policy.
    Policy { name: String },
}

/// A request the emulator's identities may never make: a key operation
/// (`POST /keys/{name}/{version}/sign`, …) or a write (`PUT`, `PATCH`,
/// `DELETE`, `POST …/create`, …). The emulator grants only reads, so it
/// answers as Key Vault answers an identity without the permission: 403.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Refused {
    kind: ObjectKind,
    name: String,
    /// The permission, as an access policy names it (`sign`, `set`, …).
    permission: &'static str,
}

/// A key operation's permission name (`POST /keys/{name}/{version}/{op}`).
fn key_operation(op: &str) -> Option<&'static str> {
    Some(match op.to_ascii_lowercase().as_str() {
        "sign" => "sign",
        "verify" => "verify",
        "encrypt" => "encrypt",
        "decrypt" => "decrypt",
        "wrapkey" => "wrapKey",
        "unwrapkey" => "unwrapKey",
        "release" => "release",
        _ => return None,
    })
}

/// The permission a write needs, when `method` on `segments` is one.
fn refused(method: &Method, segments: &[&str]) -> Option<Refused> {
    let kind = ObjectKind::from_collection(segments.first()?)?;
    let name = segments.get(1).copied().unwrap_or("").to_string();
    let last = segments.last().copied().unwrap_or("");
    let permission = match *method {
        Method::GET | Method::HEAD => return None,
        Method::POST if kind == ObjectKind::Key => key_operation(last).unwrap_or(match last {
            "create" => "create",
            "import" => "import",
            "backup" => "backup",
            "restore" => "restore",
            "rotate" => "rotate",
            _ => "update",
        }),
        Method::POST => match last {
            "create" => "create",
            "import" => "import",
            "backup" => "backup",
            "restore" => "restore",
            _ => "update",
        },
        Method::PUT if kind == ObjectKind::Secret => "set",
        Method::PUT => "import",
        Method::DELETE => "delete",
        _ => "update",
    };
    Some(Refused {
        kind,
        name,
        permission,
    })
}

fn parse_target(segments: &[&str]) -> Option<Target> {
    let kind = ObjectKind::from_collection(segments.first()?)?;
    if let (ObjectKind::Certificate, [_, name, "policy"] | [_, name, "policy", ""]) =
        (kind, segments)
        && !name.is_empty()
    {
        return Some(Target::Policy {
            name: name.to_string(),
        });
    }
    if matches!(segments, [_] | [_, ""]) {
        return Some(Target::List { kind });
    }
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
        Target::Get { kind, .. } => match kind {
            ObjectKind::Secret => Route::SecretGet,
            ObjectKind::Key => Route::KeyGet,
            ObjectKind::Certificate => Route::CertificateGet,
        },
        Target::Versions { kind, .. } => match kind {
            ObjectKind::Secret => Route::SecretVersions,
            ObjectKind::Key => Route::KeyVersions,
            ObjectKind::Certificate => Route::CertificateVersions,
        },
        Target::List { kind } => match kind {
            ObjectKind::Secret => Route::SecretList,
            ObjectKind::Key => Route::KeyList,
            ObjectKind::Certificate => Route::CertificateList,
        },
        Target::Policy { .. } => Route::CertificateGet,
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
    // In flight until the answer is ready (challenges and faults included).
    let _in_flight = shared.counters.enter();
    let segments = req.segments();
    let target = parse_target(&segments);
    let mut tally = Tally::new(
        target
            .as_ref()
            .map(route_of)
            .unwrap_or(Route::KeyVaultOther),
    );
    if let Some(
        Target::Get { name, .. } | Target::Versions { name, .. } | Target::Policy { name },
    ) = &target
    {
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

    if let Some(write) = refused(&req.method, &segments) {
        // Key operations and writes: as Key Vault answers an identity
        // without that permission (the emulator grants reads only; the
        // admin API writes).
        let store = shared.store();
        let err = match store.vault(&vault_name) {
            Some(vault) => denial(vault, &caller, write.kind, write.permission, &write.name),
            None => KvError::new(
                StatusCode::NOT_FOUND,
                "VaultNotFound",
                "The vault was deleted.",
            ),
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
        Target::Policy { .. } => (ObjectKind::Certificate, false),
        Target::Versions { kind, .. } | Target::List { kind } => (*kind, true),
    };
    if !vault.allows(&caller.client_id, &caller.object_id, kind, list) {
        let err = denial(
            vault,
            &caller,
            kind,
            if list { "list" } else { "get" },
            &tally.object,
        );
        return done(tally, req, &location, err);
    }
    let base = format!("https://{}", req.host());
    let result = match &target {
        Target::Get {
            kind,
            name,
            version,
        } => objects::get_object(vault, &base, *kind, name, version.as_deref(), req, shared),
        Target::Versions { kind, name } => {
            objects::list_versions(vault, &base, *kind, name, req, shared)
        }
        Target::List { kind } => objects::list_objects(vault, &base, *kind, req, shared),
        Target::Policy { name } => objects::certificate_policy(vault, &base, name, shared),
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

/// Key Vault's 403 for `caller` without permission `op` (`get`, `list`,
/// `sign`, `set`, …) on `kind`.
fn denial(
    vault: &Vault,
    caller: &crate::tokens::Caller,
    kind: ObjectKind,
    op: &str,
    name: &str,
) -> KvError {
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
            let action = match (kind, op) {
                (ObjectKind::Secret, "get") => "Microsoft.KeyVault/vaults/secrets/getSecret/action".to_owned(),
                (ObjectKind::Secret, "list") => "Microsoft.KeyVault/vaults/secrets/readMetadata/action".to_owned(),
                (ObjectKind::Secret, "set") => "Microsoft.KeyVault/vaults/secrets/setSecret/action".to_owned(),
                (_, "get" | "list") => format!("Microsoft.KeyVault/vaults/{}/read", kind.collection()),
                (_, "delete") => format!("Microsoft.KeyVault/vaults/{}/delete", kind.collection()),
                (ObjectKind::Key, "wrapKey") => "Microsoft.KeyVault/vaults/keys/wrap/action".to_owned(),
                (ObjectKind::Key, "unwrapKey") => "Microsoft.KeyVault/vaults/keys/unwrap/action".to_owned(),
                (_, "update") => format!("Microsoft.KeyVault/vaults/{}/write", kind.collection()),
                (_, op) => format!("Microsoft.KeyVault/vaults/{}/{op}/action", kind.collection()),
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
        assert_eq!(
            parse_target(&["secrets", ""]),
            Some(Target::List {
                kind: ObjectKind::Secret
            })
        );
        assert_eq!(
            parse_target(&["keys"]),
            Some(Target::List {
                kind: ObjectKind::Key
            })
        );
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
