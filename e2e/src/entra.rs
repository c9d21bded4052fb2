//! Entra ID: OIDC discovery, instance discovery, JWKS, and the v2 and v1
//! token endpoints (client secret and jwt-bearer client assertion).

use std::time::Duration;

use http::{Method, StatusCode};
use serde_json::{Value, json};

use crate::directory::Identity;
use crate::faults::{FaultKind, FaultTarget};
use crate::http::{Handled, Incoming, Outcome, Tally, json as json_response};
use crate::route::Route;
use crate::secrets_seen::SecretKind;
use crate::state::Shared;
use crate::tokens::is_known_resource;
use crate::util::new_guid;

/// The `client_assertion_type` of workload identity.
pub const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// Which Entra route a path is, with the tenant segment.
pub fn route_for(segments: &[&str]) -> Option<(Route, String)> {
    let tenant = segments.first()?.to_string();
    let route = match &segments[1..] {
        ["discovery", "instance"] => Route::EntraInstanceDiscovery,
        ["v2.0", ".well-known", "openid-configuration"]
        | [".well-known", "openid-configuration"] => Route::EntraOpenIdConfiguration,
        ["oauth2", "v2.0", "token"] => Route::EntraToken,
        ["oauth2", "token"] => Route::EntraTokenV1,
        ["discovery", "v2.0", "keys"] | ["discovery", "keys"] => Route::EntraKeys,
        _ => return None,
    };
    Some((route, tenant))
}

/// An OAuth error answer in Entra's shape.
pub fn oauth_error(
    status: StatusCode,
    error: &str,
    code: u32,
    description: &str,
) -> http::Response<crate::http::Body> {
    let trace = new_guid();
    let correlation = new_guid();
    let ts = timestamp();
    json_response(
        status,
        &json!({
            "error": error,
            "error_description": format!("AADSTS{code}: {}\r\nTrace ID: {trace}\r\nCorrelation ID: {correlation}\r\nTimestamp: {ts}", description.trim_start_matches(&format!("AADSTS{code}: "))),
            "error_codes": [code],
            "timestamp": ts,
            "trace_id": trace,
            "correlation_id": correlation,
            "error_uri": format!("https://login.microsoftonline.com/error?code={code}"),
        }),
    )
}

fn timestamp() -> String {
    let now = time::OffsetDateTime::now_utc();
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}Z",
        now.year(),
        u8::from(now.month()),
        now.day(),
        now.hour(),
        now.minute(),
        now.second()
    )
}

/// Serve one Entra request; `route` and `tenant` come from [`route_for`].
pub async fn handle(shared: &Shared, req: &Incoming, route: Route, tenant: &str) -> Handled {
    let mut tally = Tally::new(route);
    let form = if req.method == Method::POST {
        req.form()
    } else {
        Vec::new()
    };
    let field = |name: &str| {
        form.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    tally.identity = field("client_id").unwrap_or("").to_ascii_lowercase();
    if let Some(sent) = field("client_secret") {
        shared.seen.record(SecretKind::ClientSecret, sent);
    }
    if let Some(sent) = field("client_assertion") {
        shared.seen.record(SecretKind::ClientAssertion, sent);
    }

    let decision = shared.faults.decide(FaultTarget {
        vault: "",
        route,
        object: "",
        identity: &tally.identity,
    });
    if decision.latency_ms > 0 {
        tokio::time::sleep(Duration::from_millis(decision.latency_ms)).await;
    }
    if let Some(kind) = decision.answer {
        return fault_answer(tally, kind);
    }

    let host = req.host().to_string();
    let resp = match route {
        Route::EntraInstanceDiscovery => json_response(
            StatusCode::OK,
            &json!({
                "tenant_discovery_endpoint": format!("https://{host}/{}/v2.0/.well-known/openid-configuration", discovery_tenant(req, tenant)),
                "api-version": "1.1",
                "metadata": [{
                    "preferred_network": "login.microsoftonline.com",
                    "preferred_cache": "login.windows.net",
                    "aliases": ["login.microsoftonline.com", "login.windows.net", "login.microsoft.com", "sts.windows.net"],
                }],
            }),
        ),
        Route::EntraOpenIdConfiguration => {
            if !shared.directory.has_tenant(tenant) && !matches!(tenant, "common" | "organizations")
            {
                unknown_tenant(tenant)
            } else {
                json_response(StatusCode::OK, &openid_configuration(&host, tenant))
            }
        }
        Route::EntraKeys => json_response(StatusCode::OK, &shared.tokens.entra_jwks()),
        Route::EntraToken | Route::EntraTokenV1 => {
            if req.method != Method::POST {
                oauth_error(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "invalid_request",
                    900561,
                    "The endpoint only accepts POST requests.",
                )
            } else {
                token(shared, tenant, route == Route::EntraTokenV1, &field)
            }
        }
        _ => oauth_error(
            StatusCode::NOT_FOUND,
            "invalid_request",
            900144,
            "Unknown endpoint.",
        ),
    };
    Handled::respond(tally, resp)
}

/// The tenant named by instance discovery's `authorization_endpoint`
/// parameter (`https://host/<tenant>/oauth2/...`), as the service echoes it.
fn discovery_tenant<'a>(req: &'a Incoming, fallback: &'a str) -> &'a str {
    req.query("authorization_endpoint")
        .and_then(|ep| ep.split("://").nth(1))
        .and_then(|rest| rest.split('/').nth(1))
        .filter(|t| !t.is_empty())
        .unwrap_or(fallback)
}

fn fault_answer(tally: Tally, kind: FaultKind) -> Handled {
    let resp = match kind {
        FaultKind::ClaimsChallenge => oauth_error(
            StatusCode::BAD_REQUEST,
            "interaction_required",
            50076,
            "Due to a configuration change or continuous access evaluation, you must present additional claims.",
        ),
        FaultKind::ConnectionReset => {
            return Handled {
                outcome: Outcome::Reset,
                tally,
            };
        }
        FaultKind::Throttle { retry_after } => {
            let mut r = oauth_error(
                StatusCode::TOO_MANY_REQUESTS,
                "temporarily_unavailable",
                50196,
                "The server is temporarily unable to handle the request; too many requests were received.",
            );
            if let Some(s) = retry_after {
                r.headers_mut()
                    .insert("retry-after", http::HeaderValue::from(s));
            }
            r
        }
        FaultKind::ServerError { status } => oauth_error(
            StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            "temporarily_unavailable",
            90033,
            "A transient error has occurred. Please try again.",
        ),
        FaultKind::Forbidden {
            inner_code,
            message,
        } => oauth_error(
            StatusCode::FORBIDDEN,
            "access_denied",
            50105,
            &message.unwrap_or(inner_code),
        ),
        FaultKind::Latency { .. } => oauth_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            90033,
            "unexpected fault",
        ),
    };
    Handled::respond(tally, resp)
}

fn unknown_tenant(tenant: &str) -> http::Response<crate::http::Body> {
    oauth_error(
        StatusCode::BAD_REQUEST,
        "invalid_tenant",
        90002,
        &format!(
            "Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud."
        ),
    )
}

fn openid_configuration(host: &str, tenant: &str) -> Value {
    let base = format!("https://{host}/{tenant}");
    json!({
        "token_endpoint": format!("{base}/oauth2/v2.0/token"),
        "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
        "jwks_uri": format!("{base}/discovery/v2.0/keys"),
        "response_modes_supported": ["query", "fragment", "form_post"],
        "subject_types_supported": ["pairwise"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
        "scopes_supported": ["openid", "profile", "email", "offline_access"],
        "issuer": format!("{base}/v2.0"),
        "request_uri_parameter_supported": false,
        "userinfo_endpoint": "https://graph.microsoft.com/oidc/userinfo",
        "authorization_endpoint": format!("{base}/oauth2/v2.0/authorize"),
        "device_authorization_endpoint": format!("{base}/oauth2/v2.0/devicecode"),
        "http_logout_supported": true,
        "frontchannel_logout_supported": true,
        "end_session_endpoint": format!("{base}/oauth2/v2.0/logout"),
        "claims_supported": ["sub", "iss", "aud", "exp", "iat", "nonce", "tid", "ver", "oid"],
        "kerberos_endpoint": format!("{base}/kerberos"),
        "tenant_region_scope": "NA",
        "cloud_instance_name": "microsoftonline.com",
        "cloud_graph_host_name": "graph.windows.net",
        "msgraph_host": "graph.microsoft.com",
        "rbac_url": "https://pas.windows.net",
    })
}

fn token<'a>(
    shared: &Shared,
    tenant: &str,
    v1: bool,
    field: &dyn Fn(&str) -> Option<&'a str>,
) -> http::Response<crate::http::Body> {
    if !shared.directory.has_tenant(tenant) {
        return unknown_tenant(tenant);
    }
    match field("grant_type") {
        Some("client_credentials") => {}
        Some(other) => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                70003,
                &format!("The app requested an unsupported grant type '{other}'."),
            );
        }
        None => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                900144,
                "The request body must contain the following parameter: 'grant_type'.",
            );
        }
    }
    let Some(client_id) = field("client_id") else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            900144,
            "The request body must contain the following parameter: 'client_id'.",
        );
    };
    // v2: scope=<resource>/.default; v1: resource=<resource>. `claims` and
    // `client_info` are accepted and ignored.
    let resource = if v1 {
        match field("resource") {
            Some(r) => r.to_string(),
            None => {
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    900144,
                    "The request body must contain the following parameter: 'resource'.",
                );
            }
        }
    } else {
        let scope = field("scope").unwrap_or("");
        match scope.split(' ').find_map(|s| s.strip_suffix("/.default")) {
            Some(r) => r.to_string(),
            None => {
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_scope",
                    1002012,
                    &format!(
                        "The provided value for scope {scope} is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI)."
                    ),
                );
            }
        }
    };
    if !is_known_resource(&resource) {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_resource",
            500011,
            &format!(
                "The resource principal named {resource} was not found in the tenant named {tenant}. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You might have sent your authentication request to the wrong tenant."
            ),
        );
    }
    let Some(identity) = shared
        .directory
        .by_client_id(client_id)
        .filter(|i| i.tenant.eq_ignore_ascii_case(tenant))
    else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "unauthorized_client",
            700016,
            &format!(
                "Application with identifier '{client_id}' was not found in the directory '{tenant}'. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You may have sent your authentication request to the wrong tenant."
            ),
        );
    };
    if let Err(resp) = authenticate_client(shared, identity, field) {
        return resp;
    }
    let issued = match shared.tokens.issue(identity, &resource) {
        Ok(t) => {
            shared.seen.record(SecretKind::AccessToken, &t.access_token);
            t
        }
        Err(e) => {
            return oauth_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                90033,
                &e.to_string(),
            );
        }
    };
    let body = if v1 {
        json!({
            "token_type": "Bearer",
            "expires_in": issued.expires_in.to_string(),
            "ext_expires_in": issued.expires_in.to_string(),
            "expires_on": issued.expires_on.to_string(),
            "not_before": issued.not_before.to_string(),
            "resource": issued.resource,
            "access_token": issued.access_token,
        })
    } else {
        json!({
            "token_type": "Bearer",
            "expires_in": issued.expires_in,
            "ext_expires_in": issued.expires_in,
            "access_token": issued.access_token,
        })
    };
    json_response(StatusCode::OK, &body)
}

fn authenticate_client<'a>(
    shared: &Shared,
    identity: &Identity,
    field: &dyn Fn(&str) -> Option<&'a str>,
) -> Result<(), http::Response<crate::http::Body>> {
    if let Some(assertion) = field("client_assertion") {
        if field("client_assertion_type") != Some(JWT_BEARER) {
            return Err(oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                50027,
                &format!("Invalid client_assertion_type; expected '{JWT_BEARER}'."),
            ));
        }
        return shared
            .tokens
            .check_assertion(assertion, &identity.client_id, &shared.directory)
            .map_err(|rej| {
                oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_client",
                    rej.code(),
                    &rej.to_string(),
                )
            });
    }
    match (field("client_secret"), &identity.client_secret) {
        (Some(sent), Some(expected)) if sent == expected => Ok(()),
        (Some(_), _) => Err(oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            7000215,
            &format!(
                "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '{}'.",
                identity.client_id
            ),
        )),
        (None, _) => Err(oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            7000218,
            "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
        )),
    }
}
