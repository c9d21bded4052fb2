//! Key Vault's error envelope and response headers.

use http::{HeaderValue, Response, StatusCode};
use serde_json::{Value, json};

use crate::http::{Body, Incoming, json as json_response};
use crate::util::new_guid;

/// The newest api-version the emulator names in its 400 message.
pub const LATEST_API_VERSION: &str = "2026-04-01";

/// api-versions real clients send (stable, SDK and preview versions).
pub const SUPPORTED_API_VERSIONS: [&str; 16] = [
    "2016-10-01",
    "7.0",
    "7.1",
    "7.2",
    "7.3",
    "7.4",
    "7.5",
    "7.6",
    "7.6-preview.2",
    "2025-06-01-preview",
    "2025-07-01",
    "2026-01-01-preview",
    "2026-03-01-preview",
    "2026-04-01",
    "2026-05-01-preview",
    "2026-07-01-preview",
];

/// A Key Vault error: `{"error":{"code","message","innererror":{"code"}}}`.
#[derive(Debug, Clone)]
pub struct KvError {
    pub status: StatusCode,
    pub code: String,
    pub message: String,
    pub inner: Option<String>,
    pub www_authenticate: Option<String>,
    pub retry_after: Option<u32>,
}

impl KvError {
    /// An error without inner code.
    pub fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        Self {
            status,
            code: code.to_string(),
            message: message.into(),
            inner: None,
            www_authenticate: None,
            retry_after: None,
        }
    }

    /// Add `innererror.code`.
    pub fn inner(mut self, code: &str) -> Self {
        self.inner = Some(code.to_string());
        self
    }

    /// 400 for an unknown or missing api-version.
    pub fn bad_api_version(v: &str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "BadParameter",
            format!(
                "The specified version ({v}) is not recognized. Consider using the latest supported version ({LATEST_API_VERSION})."
            ),
        )
    }

    /// The JSON body.
    pub fn body(&self) -> Value {
        let mut err = json!({"code": self.code, "message": self.message});
        if let Some(inner) = &self.inner {
            err["innererror"] = json!({"code": inner});
        }
        json!({"error": err})
    }

    /// The full response, with Key Vault's headers.
    pub fn response(&self, req: &Incoming, location: &str) -> Response<Body> {
        let mut resp = json_response(self.status, &self.body());
        if let Some(challenge) = &self.www_authenticate
            && let Ok(v) = HeaderValue::from_str(challenge)
        {
            resp.headers_mut().insert("www-authenticate", v);
        }
        if let Some(secs) = self.retry_after {
            resp.headers_mut()
                .insert("retry-after", HeaderValue::from(secs));
        }
        add_keyvault_headers(&mut resp, req, location);
        resp
    }
}

/// The headers Key Vault puts on every answer.
pub fn add_keyvault_headers(resp: &mut Response<Body>, req: &Incoming, location: &str) {
    let h = resp.headers_mut();
    h.insert("cache-control", HeaderValue::from_static("no-cache"));
    h.insert("pragma", HeaderValue::from_static("no-cache"));
    h.insert("expires", HeaderValue::from_static("-1"));
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        "strict-transport-security",
        HeaderValue::from_static("max-age=31536000;includeSubDomains"),
    );
    h.insert(
        "x-ms-keyvault-service-version",
        HeaderValue::from_static("1.9.3187.1"),
    );
    if let Ok(v) = HeaderValue::from_str(location) {
        h.insert("x-ms-keyvault-region", v);
    }
    if let Ok(v) = HeaderValue::from_str(&new_guid()) {
        h.insert("x-ms-request-id", v);
    }
    if let Some(v) = req.headers.get("x-ms-client-request-id") {
        h.insert("x-ms-client-request-id", v.clone());
    }
    let network = format!(
        "conn_type=Ipv4;addr={};act_addr_fam=InterNetwork;",
        req.peer.ip()
    );
    if let Ok(v) = HeaderValue::from_str(&network) {
        h.insert("x-ms-keyvault-network-info", v);
    }
}
