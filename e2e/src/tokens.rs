//! Access tokens as Entra ID issues them for Key Vault (v1 claims, RS256),
//! their validation by the vault (signature, audience, expiry, tenant), and
//! Kubernetes-like service-account tokens from the emulator's OIDC issuer.

use std::time::Duration;

use serde_json::{Value, json};
use thiserror::Error;

use crate::directory::{Directory, Identity};
use crate::error::EmulatorError;
use crate::jwt::{JwtError, JwtSigner, RsaJwks, decode_parts};
use crate::seed::IdentityKind;
use crate::util::{new_guid, unix_now};

/// Key Vault's first-party application id, also accepted as audience.
pub const KEYVAULT_APP_ID: &str = "cfa8b339-82a2-471a-a3c9-0fc0be7a4093";

/// Key Vault resources of the clouds the emulator serves: (DNS suffix,
/// resource). The last is Azure Stack Hub's default region (`local`).
pub const KEYVAULT_RESOURCES: [(&str, &str); 4] = [
    ("vault.azure.net", "https://vault.azure.net"),
    ("vault.azure.cn", "https://vault.azure.cn"),
    ("vault.usgovcloudapi.net", "https://vault.usgovcloudapi.net"),
    (
        "vault.local.azurestack.external",
        "https://vault.local.azurestack.external",
    ),
];

/// Is `resource` one the emulator issues tokens for?
pub fn is_known_resource(resource: &str) -> bool {
    let r = resource.trim_end_matches('/');
    KEYVAULT_RESOURCES.iter().any(|(_, res)| *res == r) || r == KEYVAULT_APP_ID
}

/// An issued access token.
#[derive(Clone)]
pub struct IssuedToken {
    pub access_token: String,
    pub expires_in: i64,
    pub expires_on: i64,
    pub not_before: i64,
    pub resource: String,
}

impl std::fmt::Debug for IssuedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedToken")
            .field("access_token", &"<redacted>")
            .field("expires_on", &self.expires_on)
            .field("resource", &self.resource)
            .finish()
    }
}

/// The claims of a validated access token that the vault uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub client_id: String,
    pub object_id: String,
    pub tenant: String,
    pub issuer: String,
}

/// Why a vault rejects a bearer token (each a 401 with the challenge).
#[derive(Debug, Error, PartialEq, Eq)]
pub enum TokenRejection {
    #[error("AKV10000: Request is missing a Bearer or PoP token.")]
    Missing,
    #[error("AKV10000: Request is missing a Bearer or PoP token.")]
    NotBearer,
    #[error("AKV10021: Invalid token signature. {0}")]
    Invalid(JwtError),
    #[error(
        "AKV10022: Invalid audience. Expected {expected} or {KEYVAULT_APP_ID}, found: {found}."
    )]
    Audience { expected: String, found: String },
    #[error(
        "AKV10032: Invalid issuer. Expected one of https://sts.windows.net/{expected}/, found: {found}."
    )]
    Tenant { expected: String, found: String },
    #[error("AKV10023: The token is expired.")]
    Expired,
    #[error("AKV10024: The token is not yet valid.")]
    NotYetValid,
}

/// An OIDC issuer outside the emulator whose service-account tokens Entra
/// ID accepts as client assertions, as it trusts a cluster's issuer for
/// workload identity federation: Entra reads the issuer's discovery
/// document and JWKS; here the JWKS is given (e.g. a Kubernetes API
/// server's `/openid/v1/jwks`). Federations name the issuer as usual.
#[derive(Debug, Clone)]
pub struct TrustedIssuer {
    /// The `iss` claim of its tokens, e.g. the API server's
    /// `--service-account-issuer`.
    pub issuer: String,
    keys: RsaJwks,
}

impl TrustedIssuer {
    /// `issuer` with the RSA keys of its JWKS document.
    pub fn from_jwks(issuer: impl Into<String>, jwks: &Value) -> Result<Self, EmulatorError> {
        let issuer = issuer.into();
        let keys = RsaJwks::from_json(jwks)
            .map_err(|e| EmulatorError::Invalid(format!("trusted issuer {issuer}: {e}")))?;
        Ok(Self { issuer, keys })
    }
}

/// Signs and validates access tokens; mints service-account tokens.
#[derive(Debug)]
pub struct TokenService {
    entra_key: JwtSigner,
    oidc_key: JwtSigner,
    trusted: Vec<TrustedIssuer>,
    lifetime: Duration,
}

impl TokenService {
    /// Fresh signing keys; `lifetime` is the access-token lifetime.
    /// Assertions whose `iss` is one of `trusted` must be signed by one of
    /// that issuer's keys; any other must be signed by the emulator's own
    /// OIDC issuer key.
    pub fn new(lifetime: Duration, trusted: Vec<TrustedIssuer>) -> Result<Self, EmulatorError> {
        Ok(Self {
            entra_key: JwtSigner::generate()?,
            oidc_key: JwtSigner::generate()?,
            trusted,
            lifetime,
        })
    }

    /// JWKS of the Entra signing key (`/{tenant}/discovery/v2.0/keys`).
    pub fn entra_jwks(&self) -> Value {
        self.entra_key.jwks()
    }

    /// JWKS of the OIDC issuer that signs service-account tokens.
    pub fn oidc_jwks(&self) -> Value {
        self.oidc_key.jwks()
    }

    /// Issue an access token for `identity` and `resource` (e.g. `https://vault.azure.net`).
    pub fn issue(&self, identity: &Identity, resource: &str) -> Result<IssuedToken, EmulatorError> {
        self.issue_with(identity, resource, self.lifetime.as_secs() as i64)
    }

    /// Issue an access token with an explicit lifetime in seconds (may be
    /// negative, for expired-token tests).
    pub fn issue_with(
        &self,
        identity: &Identity,
        resource: &str,
        lifetime_secs: i64,
    ) -> Result<IssuedToken, EmulatorError> {
        let now = unix_now();
        let nbf = now.min(now + lifetime_secs) - 300;
        let exp = now + lifetime_secs;
        let mut claims = json!({
            "aud": resource,
            "iss": format!("https://sts.windows.net/{}/", identity.tenant),
            "iat": nbf,
            "nbf": nbf,
            "exp": exp,
            "aio": "emulator",
            "appid": identity.client_id,
            "appidacr": if identity.kind == IdentityKind::ManagedIdentity { "2" } else { "1" },
            "idp": format!("https://sts.windows.net/{}/", identity.tenant),
            "idtyp": "app",
            "oid": identity.object_id,
            "rh": "emulator",
            "sub": identity.object_id,
            "tid": identity.tenant,
            "uti": new_guid(),
            "ver": "1.0",
        });
        if let (IdentityKind::ManagedIdentity, Some(rid)) = (identity.kind, &identity.resource_id) {
            claims["xms_mirid"] = json!(rid);
        }
        Ok(IssuedToken {
            access_token: self.entra_key.sign(&claims)?,
            expires_in: lifetime_secs.max(0),
            expires_on: exp,
            not_before: nbf,
            resource: resource.to_string(),
        })
    }

    /// Validate a vault request's `Authorization` header value for a vault
    /// of `tenant` whose resource is `resource`.
    pub fn validate_bearer(
        &self,
        header: Option<&str>,
        resource: &str,
        tenant: &str,
    ) -> Result<Caller, TokenRejection> {
        let header = header.ok_or(TokenRejection::Missing)?;
        let token = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
            .ok_or(TokenRejection::NotBearer)?
            .trim();
        let claims = self
            .entra_key
            .verify(token)
            .map_err(TokenRejection::Invalid)?;
        let s = |k: &str| {
            claims
                .get(k)
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()
        };
        let aud = s("aud");
        if aud != resource && aud != KEYVAULT_APP_ID {
            return Err(TokenRejection::Audience {
                expected: resource.to_string(),
                found: aud,
            });
        }
        let now = unix_now();
        let exp = claims.get("exp").and_then(Value::as_i64).unwrap_or(0);
        if exp <= now {
            return Err(TokenRejection::Expired);
        }
        if claims.get("nbf").and_then(Value::as_i64).unwrap_or(0) > now + 300 {
            return Err(TokenRejection::NotYetValid);
        }
        let tid = s("tid");
        if !tid.eq_ignore_ascii_case(tenant) {
            return Err(TokenRejection::Tenant {
                expected: tenant.to_string(),
                found: s("iss"),
            });
        }
        Ok(Caller {
            client_id: s("appid"),
            object_id: s("oid"),
            tenant: tid,
            issuer: s("iss"),
        })
    }

    /// Mint a Kubernetes-like service-account token signed by the emulator's
    /// OIDC issuer key.
    pub fn mint_service_account_token(
        &self,
        req: &ServiceAccountTokenRequest,
    ) -> Result<String, EmulatorError> {
        let now = unix_now();
        let lifetime = req.expires_in.unwrap_or(3600);
        let claims = json!({
            "aud": [req.audience.clone().unwrap_or_else(|| crate::seed::TOKEN_EXCHANGE_AUDIENCE.to_string())],
            "exp": now + lifetime,
            "iat": now.min(now + lifetime),
            "nbf": now.min(now + lifetime),
            "iss": req.issuer,
            "sub": format!("system:serviceaccount:{}:{}", req.namespace, req.service_account),
            "kubernetes.io": {
                "namespace": req.namespace,
                "serviceaccount": {"name": req.service_account, "uid": new_guid()},
            },
        });
        self.oidc_key.sign(&claims)
    }

    /// Check a client assertion against the federation table; returns the
    /// client id it may act as, or the Entra error to answer.
    pub fn check_assertion(
        &self,
        assertion: &str,
        client_id: &str,
        directory: &Directory,
    ) -> Result<(), AssertionRejection> {
        let parts = decode_parts(assertion).map_err(|_| AssertionRejection::Malformed)?;
        let claims = parts.claims;
        let iss = claims.get("iss").and_then(Value::as_str).unwrap_or("");
        // The keys of the issuer the token names: a trusted issuer's own,
        // else the emulator's issuer key (which also signs what the admin
        // API mints for any issuer).
        let verified = match self.trusted.iter().find(|t| t.issuer == iss) {
            Some(trusted) => trusted.keys.verify(assertion).map(drop),
            None => self.oidc_key.verify(assertion).map(drop),
        };
        verified.map_err(|_| AssertionRejection::Signature)?;
        let sub = claims.get("sub").and_then(Value::as_str).unwrap_or("");
        let auds: Vec<String> = match claims.get("aud") {
            Some(Value::String(s)) => vec![s.clone()],
            Some(Value::Array(a)) => a
                .iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect(),
            _ => vec![],
        };
        let now = unix_now();
        let exp = claims.get("exp").and_then(Value::as_i64).unwrap_or(0);
        let nbf = claims.get("nbf").and_then(Value::as_i64).unwrap_or(0);
        if exp <= now || nbf > now + 300 {
            return Err(AssertionRejection::Expired);
        }
        let candidates: Vec<_> = directory
            .federations
            .iter()
            .filter(|f| f.client_id.eq_ignore_ascii_case(client_id))
            .collect();
        let Some(fed) = candidates
            .iter()
            .find(|f| f.issuer == iss && f.subject == sub)
        else {
            return Err(AssertionRejection::NoMatch {
                issuer: iss.to_string(),
                subject: sub.to_string(),
            });
        };
        if !auds.contains(&fed.audience) {
            return Err(AssertionRejection::Audience(auds.join(",")));
        }
        Ok(())
    }
}

/// A request to mint a service-account token.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceAccountTokenRequest {
    /// Defaults to the seed's `oidcIssuer` when sent over the admin API.
    #[serde(default)]
    pub issuer: String,
    pub namespace: String,
    pub service_account: String,
    /// Defaults to `api://AzureADTokenExchange`.
    #[serde(default)]
    pub audience: Option<String>,
    /// Seconds; negative for an already expired token. Default 3600.
    #[serde(default)]
    pub expires_in: Option<i64>,
}

/// Why a jwt-bearer client assertion is refused (Entra answers 400/401).
#[derive(Debug, Error, PartialEq, Eq)]
pub enum AssertionRejection {
    #[error("AADSTS50027: JWT token is invalid or malformed.")]
    Malformed,
    #[error(
        "AADSTS700213: The client assertion signature could not be validated against the issuer's signing keys."
    )]
    Signature,
    #[error("AADSTS700024: Client assertion is not within its valid time range.")]
    Expired,
    #[error(
        "AADSTS70021: No matching federated identity record found for presented assertion. Assertion Issuer: '{issuer}'. Assertion Subject: '{subject}'."
    )]
    NoMatch { issuer: String, subject: String },
    #[error(
        "AADSTS700212: No matching federated identity record found for presented assertion audience '{0}'."
    )]
    Audience(String),
}

impl AssertionRejection {
    /// The AADSTS number of this rejection.
    pub fn code(&self) -> u32 {
        match self {
            AssertionRejection::Malformed => 50027,
            AssertionRejection::Signature => 700213,
            AssertionRejection::Expired => 700024,
            AssertionRejection::NoMatch { .. } => 70021,
            AssertionRejection::Audience(_) => 700212,
        }
    }
}
