//! HTTP plumbing shared by every route: the parsed request, JSON responses,
//! and the per-connection control used to reset a connection.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Response, StatusCode, header};
use http_body_util::Full;
use serde_json::Value;

use crate::counters::RequestKey;
use crate::route::Route;

/// The body type of every response.
pub type Body = Full<Bytes>;

/// A request with its body read and its query parsed.
#[derive(Debug)]
pub struct Incoming {
    pub method: Method,
    pub path: String,
    pub query: Vec<(String, String)>,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub peer: SocketAddr,
}

impl Incoming {
    /// First value of query parameter `name` (exact, case-sensitive).
    pub fn query(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// First value of query parameter `name`, case-insensitive.
    pub fn query_ci(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// A header as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The `Host` header as sent (may carry a port).
    pub fn host(&self) -> &str {
        self.header("host").unwrap_or("")
    }

    /// The host name without port, lowercased.
    pub fn host_name(&self) -> String {
        split_host_port(self.host()).0.to_ascii_lowercase()
    }

    /// The form fields of an `application/x-www-form-urlencoded` body.
    pub fn form(&self) -> Vec<(String, String)> {
        form_urlencoded::parse(&self.body).into_owned().collect()
    }

    /// The path split into segments after the leading slash; a trailing
    /// slash gives a trailing empty segment.
    pub fn segments(&self) -> Vec<&str> {
        self.path.trim_start_matches('/').split('/').collect()
    }
}

/// Split `host[:port]` (IPv6 literals in brackets are kept whole).
pub fn split_host_port(host: &str) -> (&str, Option<u16>) {
    if host.starts_with('[') {
        if let Some(end) = host.find(']') {
            let port = host[end + 1..]
                .strip_prefix(':')
                .and_then(|p| p.parse().ok());
            return (&host[..=end], port);
        }
        return (host, None);
    }
    match host.rsplit_once(':') {
        Some((h, p)) => match p.parse() {
            Ok(port) => (h, Some(port)),
            Err(_) => (host, None),
        },
        None => (host, None),
    }
}

/// A JSON response with `application/json; charset=utf-8`.
pub fn json(status: StatusCode, value: &Value) -> Response<Body> {
    let mut resp = Response::new(Full::new(Bytes::from(value.to_string())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    resp
}

/// A plain-text response.
pub fn text(status: StatusCode, body: &str) -> Response<Body> {
    let mut resp = Response::new(Full::new(Bytes::from(body.to_string())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

/// What a handler decided.
#[derive(Debug)]
pub enum Outcome {
    Respond(Response<Body>),
    /// Drop the connection with a TCP reset and no response.
    Reset,
}

/// A handler's outcome and how to count it.
#[derive(Debug)]
pub struct Handled {
    pub outcome: Outcome,
    pub tally: Tally,
}

/// What a request is counted as; the status is filled from the outcome.
#[derive(Debug, Clone)]
pub struct Tally {
    pub vault: String,
    pub route: Route,
    pub object: String,
    pub identity: String,
}

impl Tally {
    /// A tally for `route` with nothing else known yet.
    pub fn new(route: Route) -> Self {
        Self {
            vault: String::new(),
            route,
            object: String::new(),
            identity: String::new(),
        }
    }

    /// The counter key for a final status.
    pub fn key(self, status: u16) -> RequestKey {
        RequestKey {
            vault: self.vault,
            route: self.route,
            object: self.object,
            identity: self.identity,
            status,
        }
    }
}

impl Handled {
    /// A response.
    pub fn respond(tally: Tally, resp: Response<Body>) -> Self {
        Self {
            outcome: Outcome::Respond(resp),
            tally,
        }
    }
}

/// Lets a handler ask its connection to be reset.
#[derive(Debug, Clone, Default)]
pub struct ConnControl {
    pub reset: Arc<tokio::sync::Notify>,
}
