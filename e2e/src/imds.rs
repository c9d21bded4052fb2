//! The plain-HTTP node endpoints: IMDS managed-identity tokens
//! (`/metadata/identity/oauth2/token`, `Metadata: true`, string numbers) and
//! the deprecated aad-pod-identity NMI endpoint (`/host/token/`).

use std::time::Duration;

use http::{Method, StatusCode};
use serde_json::json;

use crate::directory::Identity;
use crate::faults::{FaultKind, FaultTarget};
use crate::http::{Body, Handled, Incoming, Outcome, Tally, json as json_response, text};
use crate::route::Route;
use crate::secrets_seen::SecretKind;
use crate::seed::IdentityKind;
use crate::state::Shared;
use crate::tokens::is_known_resource;

fn imds_error(status: StatusCode, error: &str, description: &str) -> http::Response<Body> {
    json_response(
        status,
        &json!({"error": error, "error_description": description}),
    )
}

/// Serve one request on the IMDS listener.
pub async fn handle(shared: &Shared, req: &Incoming) -> Handled {
    let path = req.path.as_str();
    let route = if path == "/metadata/identity/oauth2/token"
        || path == "/metadata/identity/oauth2/token/"
    {
        Route::ImdsToken
    } else if path == "/host/token" || path == "/host/token/" {
        Route::NmiToken
    } else {
        return Handled::respond(
            Tally::new(Route::Unknown),
            text(StatusCode::NOT_FOUND, "Not found"),
        );
    };
    let mut tally = Tally::new(route);
    let selected = match route {
        Route::ImdsToken => select_imds_identity(shared, req),
        _ => select_nmi_identity(shared, req),
    };
    let identity = match selected {
        Ok(i) => i,
        Err(resp) => return Handled::respond(tally, resp),
    };
    tally.identity = identity.client_id.clone();
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
        let resp = match kind {
            FaultKind::ClaimsChallenge => imds_error(
                StatusCode::UNAUTHORIZED,
                "invalid_request",
                "claims challenge",
            ),
            FaultKind::ConnectionReset => {
                return Handled {
                    outcome: Outcome::Reset,
                    tally,
                };
            }
            FaultKind::Throttle { retry_after } => {
                let mut r = imds_error(
                    StatusCode::TOO_MANY_REQUESTS,
                    "too_many_requests",
                    "Too many requests",
                );
                if let Some(s) = retry_after {
                    r.headers_mut()
                        .insert("retry-after", http::HeaderValue::from(s));
                }
                r
            }
            FaultKind::ServerError { status } => imds_error(
                StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                "unknown_error",
                "An unexpected error occurred while fetching the AAD Token.",
            ),
            FaultKind::Forbidden {
                inner_code,
                message,
            } => imds_error(
                StatusCode::FORBIDDEN,
                "forbidden",
                &message.unwrap_or(inner_code),
            ),
            FaultKind::Latency { .. } => imds_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "unknown_error",
                "unexpected fault",
            ),
        };
        return Handled::respond(tally, resp);
    }
    let Some(resource) = req.query("resource").filter(|r| !r.is_empty()) else {
        let resp = imds_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Required query variable 'resource' is missing",
        );
        return Handled::respond(tally, resp);
    };
    if !is_known_resource(resource) {
        let resp = imds_error(
            StatusCode::BAD_REQUEST,
            "invalid_resource",
            &format!(
                "AADSTS500011: The resource principal named {resource} was not found in the tenant named {}.",
                identity.tenant
            ),
        );
        return Handled::respond(tally, resp);
    }
    let issued = match shared.tokens.issue(&identity, resource) {
        Ok(t) => {
            shared.seen.record(SecretKind::AccessToken, &t.access_token);
            t
        }
        Err(e) => {
            return Handled::respond(
                tally,
                imds_error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "unknown_error",
                    &e.to_string(),
                ),
            );
        }
    };
    let token = json!({
        "access_token": issued.access_token,
        "client_id": identity.client_id,
        "refresh_token": "",
        "expires_in": issued.expires_in.to_string(),
        "expires_on": issued.expires_on.to_string(),
        "ext_expires_in": issued.expires_in.to_string(),
        "not_before": issued.not_before.to_string(),
        "resource": issued.resource,
        "token_type": "Bearer",
    });
    let body = if route == Route::NmiToken {
        json!({"token": token, "clientid": identity.client_id})
    } else {
        token
    };
    Handled::respond(tally, json_response(StatusCode::OK, &body))
}

fn select_imds_identity(shared: &Shared, req: &Incoming) -> Result<Identity, http::Response<Body>> {
    if req.method != Method::GET {
        return Err(imds_error(
            StatusCode::METHOD_NOT_ALLOWED,
            "invalid_request",
            "Only GET is supported",
        ));
    }
    if !req
        .header("metadata")
        .is_some_and(|v| v.eq_ignore_ascii_case("true"))
    {
        return Err(imds_error(
            StatusCode::BAD_REQUEST,
            "bad_request_102",
            "Required metadata header not specified",
        ));
    }
    if req.query("api-version").is_none_or(str::is_empty) {
        return Err(imds_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Required query variable 'api-version' is missing",
        ));
    }
    let managed = || {
        shared
            .directory
            .identities
            .iter()
            .filter(|i| i.kind == IdentityKind::ManagedIdentity)
    };
    let selector = [
        ("client_id", 0),
        ("object_id", 1),
        ("msi_res_id", 2),
        ("mi_res_id", 2),
    ]
    .into_iter()
    .find_map(|(k, n)| req.query(k).map(|v| (n, v)));
    let found = match selector {
        Some((0, v)) => managed().find(|i| i.client_id.eq_ignore_ascii_case(v)),
        Some((1, v)) => managed().find(|i| i.object_id.eq_ignore_ascii_case(v)),
        Some((_, v)) => managed().find(|i| {
            i.resource_id
                .as_deref()
                .is_some_and(|r| r.eq_ignore_ascii_case(v))
        }),
        None => {
            if let Some(system) = managed().find(|i| i.system_assigned) {
                Some(system)
            } else {
                let all: Vec<_> = managed().collect();
                if all.len() > 1 {
                    return Err(imds_error(
                        StatusCode::BAD_REQUEST,
                        "invalid_request",
                        "Multiple user assigned identities exist, please specify the clientId / resourceId of the identity in the token request",
                    ));
                }
                all.first().copied()
            }
        }
    };
    found.cloned().ok_or_else(|| {
        imds_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Identity not found",
        )
    })
}

fn select_nmi_identity(shared: &Shared, req: &Incoming) -> Result<Identity, http::Response<Body>> {
    let (Some(pod), Some(ns)) = (req.header("podname"), req.header("podns")) else {
        return Err(text(
            StatusCode::BAD_REQUEST,
            "missing podname or podns header",
        ));
    };
    let wanted = req.query("clientid").filter(|c| !c.is_empty());
    let binding = shared.directory.pod_identities.iter().find(|b| {
        b.namespace == ns
            && b.pod_name.as_deref().is_none_or(|p| p == pod)
            && wanted.is_none_or(|c| c.eq_ignore_ascii_case(&b.client_id))
    });
    binding
        .and_then(|b| shared.directory.by_client_id(&b.client_id))
        .cloned()
        .ok_or_else(|| {
            text(
                StatusCode::FORBIDDEN,
                &format!("no AzureIdentity found for pod: {ns}/{pod}, in assigned state"),
            )
        })
}
