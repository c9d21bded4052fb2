//! The admin HTTP API (plain HTTP on its own listener), a JSON layer over
//! [`Control`]:
//!
//! | Request | Effect |
//! |---|---|
//! | `GET /admin/info` | addresses, CA path, tenant |
//! | `POST /admin/vaults/{v}/secrets/{name}` `{"value":…,"contentType"?,"enabled"?,"tags"?,"nbf"?,"exp"?,"version"?}` | new latest version → `{"version"}` |
//! | `POST /admin/vaults/{v}/keys/{name}` `{"kty":"RSA"\|"EC","keySize"?,"crv"?,"pem"?}` | new key version |
//! | `POST /admin/vaults/{v}/certificates/{name}` `{…}` or empty | new certificate version (renewal) |
//! | `PATCH /admin/vaults/{v}/{secrets\|keys\|certificates}/{name}[/{version}]` `{"enabled":false}` | disable / enable |
//! | `DELETE /admin/vaults/{v}/{collection}/{name}[/{version}]` | delete a version or the object |
//! | `PUT /admin/vaults/{v}/access` `[{"identity":…,"secrets":["get"]}]` | replace the access list |
//! | `POST /admin/faults` `{"kind":"throttle","retryAfter"?,"count"?,"vault"?,"route"?,"object"?,"identity"?}` | install a fault → `{"id"}` |
//! | `GET /admin/faults`, `DELETE /admin/faults`, `DELETE /admin/faults/{id}` | list, clear, remove |
//! | `GET /admin/counters?vault=&route=&object=&identity=&status=` | `{"count":n,"rows":[…]}` |
//! | `DELETE /admin/counters` | reset |
//! | `POST /admin/service-account-token` `{"namespace","serviceAccount","issuer"?,"audience"?,"expiresIn"?}` | `{"token"}` |
//! | `POST /admin/access-token` `{"identity","resource"?,"expiresIn"?}` | `{"accessToken"}` |
//! | `GET /admin/oidc/jwks` | the OIDC issuer's JWKS |

use http::{Method, Response, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::control::Control;
use crate::counters::CounterFilter;
use crate::error::EmulatorError;
use crate::faults::FaultSpec;
use crate::http::{Body, Incoming, json as json_response};
use crate::route::Route;
use crate::seed::{AccessSeed, CertificateVersionSeed, KeyVersionSeed};
use crate::store::{NewSecretVersion, ObjectKind};
use crate::tokens::ServiceAccountTokenRequest;

fn error(status: StatusCode, message: impl Into<String>) -> Response<Body> {
    json_response(status, &json!({"error": message.into()}))
}

fn from_emulator_error(e: EmulatorError) -> Response<Body> {
    let status = match e {
        EmulatorError::VaultNotFound(_)
        | EmulatorError::ObjectNotFound { .. }
        | EmulatorError::VersionNotFound { .. }
        | EmulatorError::IdentityNotFound(_) => StatusCode::NOT_FOUND,
        EmulatorError::Invalid(_) | EmulatorError::Seed(_) => StatusCode::BAD_REQUEST,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    error(status, e.to_string())
}

fn parse_body<T: for<'de> Deserialize<'de>>(req: &Incoming) -> Result<T, Response<Body>> {
    let body: &[u8] = if req.body.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        &req.body
    };
    serde_json::from_slice(body)
        .map_err(|e| error(StatusCode::BAD_REQUEST, format!("invalid JSON body: {e}")))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct EnabledBody {
    enabled: bool,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AccessTokenBody {
    identity: String,
    #[serde(default)]
    resource: Option<String>,
    #[serde(default)]
    expires_in: Option<i64>,
}

/// Serve one admin request. `info` is the body of `GET /admin/info`.
pub fn handle(control: &Control, req: &Incoming, info: &Value) -> Response<Body> {
    match respond(control, req, info) {
        Ok(r) | Err(r) => r,
    }
}

fn created(version: String) -> Response<Body> {
    json_response(StatusCode::CREATED, &json!({"version": version}))
}

fn no_content() -> Response<Body> {
    let mut r = json_response(StatusCode::NO_CONTENT, &Value::Null);
    *r.body_mut() = http_body_util::Full::new(bytes::Bytes::new());
    r.headers_mut().remove(http::header::CONTENT_TYPE);
    r
}

fn respond(
    control: &Control,
    req: &Incoming,
    info: &Value,
) -> Result<Response<Body>, Response<Body>> {
    let segs = req.segments();
    let m = &req.method;
    let segs: Vec<&str> = segs.into_iter().filter(|s| !s.is_empty()).collect();
    let err = from_emulator_error;
    match (m, segs.as_slice()) {
        (&Method::GET, ["admin", "info"]) => Ok(json_response(StatusCode::OK, info)),
        (&Method::PUT, ["admin", "vaults", vault, "access"]) => {
            let access: Vec<AccessSeed> = parse_body(req)?;
            control.set_access(vault, &access).map_err(err)?;
            Ok(no_content())
        }
        (&Method::POST, ["admin", "vaults", vault, "secrets", name]) => {
            let new: NewSecretVersion = parse_body(req)?;
            Ok(created(
                control.add_secret_version(vault, name, new).map_err(err)?,
            ))
        }
        (&Method::POST, ["admin", "vaults", vault, "keys", name]) => {
            let seed: KeyVersionSeed = parse_body(req)?;
            Ok(created(
                control.add_key_version(vault, name, &seed).map_err(err)?,
            ))
        }
        (&Method::POST, ["admin", "vaults", vault, "certificates", name]) => {
            let seed: Option<CertificateVersionSeed> =
                if req.body.iter().all(u8::is_ascii_whitespace) {
                    None
                } else {
                    Some(parse_body(req)?)
                };
            Ok(created(
                control
                    .add_certificate_version(vault, name, seed.as_ref())
                    .map_err(err)?,
            ))
        }
        (&Method::PATCH, ["admin", "vaults", vault, coll, name, rest @ ..]) if rest.len() <= 1 => {
            let kind = ObjectKind::from_collection(coll).ok_or_else(|| {
                error(
                    StatusCode::NOT_FOUND,
                    format!("unknown collection '{coll}'"),
                )
            })?;
            let body: EnabledBody = parse_body(req)?;
            let v = control
                .set_enabled(vault, kind, name, rest.first().copied(), body.enabled)
                .map_err(err)?;
            Ok(json_response(
                StatusCode::OK,
                &json!({"version": v, "enabled": body.enabled}),
            ))
        }
        (&Method::DELETE, ["admin", "vaults", vault, coll, name, rest @ ..]) if rest.len() <= 1 => {
            let kind = ObjectKind::from_collection(coll).ok_or_else(|| {
                error(
                    StatusCode::NOT_FOUND,
                    format!("unknown collection '{coll}'"),
                )
            })?;
            control
                .delete(vault, kind, name, rest.first().copied())
                .map_err(err)?;
            Ok(no_content())
        }
        (&Method::GET, ["admin", "faults"]) => {
            Ok(json_response(StatusCode::OK, &json!(control.faults())))
        }
        (&Method::POST, ["admin", "faults"]) => {
            let spec: FaultSpec = parse_body(req)?;
            if spec.count == Some(0) {
                return Err(error(
                    StatusCode::BAD_REQUEST,
                    "count must be at least 1 (omit it for a fault until removed)",
                ));
            }
            Ok(json_response(
                StatusCode::CREATED,
                &json!({"id": control.add_fault(spec)}),
            ))
        }
        (&Method::DELETE, ["admin", "faults"]) => {
            control.clear_faults();
            Ok(no_content())
        }
        (&Method::DELETE, ["admin", "faults", id]) => {
            let id: u64 = id
                .parse()
                .map_err(|_| error(StatusCode::BAD_REQUEST, "fault id must be a number"))?;
            if control.remove_fault(id) {
                Ok(no_content())
            } else {
                Err(error(StatusCode::NOT_FOUND, "no such fault"))
            }
        }
        (&Method::GET, ["admin", "counters"]) => {
            let filter = counter_filter(req)?;
            let rows = control.counters(&filter);
            let count: u64 = rows.iter().map(|r| r.count).sum();
            Ok(json_response(
                StatusCode::OK,
                &json!({"count": count, "rows": rows}),
            ))
        }
        (&Method::DELETE, ["admin", "counters"]) => {
            control.reset_counters();
            Ok(no_content())
        }
        (&Method::POST, ["admin", "service-account-token"]) => {
            let body: ServiceAccountTokenRequest = parse_body(req)?;
            let token = control.mint_service_account_token(&body).map_err(err)?;
            Ok(json_response(StatusCode::OK, &json!({"token": token})))
        }
        (&Method::POST, ["admin", "access-token"]) => {
            let body: AccessTokenBody = parse_body(req)?;
            let resource = body
                .resource
                .unwrap_or_else(|| "https://vault.azure.net".to_string());
            let token = control
                .access_token(&body.identity, &resource, body.expires_in.unwrap_or(3599))
                .map_err(err)?;
            Ok(json_response(
                StatusCode::OK,
                &json!({"accessToken": token}),
            ))
        }
        (&Method::GET, ["admin", "oidc", "jwks"]) => {
            Ok(json_response(StatusCode::OK, &control.oidc_jwks()))
        }
        _ => Err(error(
            StatusCode::NOT_FOUND,
            format!("no admin route {} {}", req.method, req.path),
        )),
    }
}

fn counter_filter(req: &Incoming) -> Result<CounterFilter, Response<Body>> {
    let route = match req.query("route") {
        None => None,
        Some(r) => Some(
            Route::parse(r)
                .ok_or_else(|| error(StatusCode::BAD_REQUEST, format!("unknown route '{r}'")))?,
        ),
    };
    let status = match req.query("status") {
        None => None,
        Some(s) => Some(
            s.parse()
                .map_err(|_| error(StatusCode::BAD_REQUEST, "status must be a number"))?,
        ),
    };
    Ok(CounterFilter {
        vault: req.query("vault").map(String::from),
        route,
        object: req.query("object").map(String::from),
        identity: req.query("identity").map(String::from),
        status,
    })
}
