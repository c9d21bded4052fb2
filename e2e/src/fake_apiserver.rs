//! A tiny stand-in for the Kubernetes API server, over plain HTTP: enough
//! for the driver's watch of SecretProviderClasses, its server-side applies
//! of pod statuses and Secrets, Pod reads and events. Objects live in
//! memory by path; every request is recorded so tests can assert on them.
//!
//! Served:
//! - `GET <collection>` (a list of the objects under it; `?watch=true`
//!   answers an empty stream after a short pause, and the client re-watches);
//! - `GET <object>` (404 `Status` when absent);
//! - `PATCH <object>` (server-side apply: the body replaces the object,
//!   keeping a generated `uid` and a rising `resourceVersion`);
//! - `POST <collection>` (create; used for events).
//!
//! Failure injection, for fault tests: [`FakeApiServer::down`] closes the
//! port and every open connection (clients get connection refused) until
//! [`FakeApiServer::up`]; [`FakeApiServer::add_fault`] makes matching
//! requests (by method and resource) answer an error status, wait, or lose
//! their connection, for the next N requests or until removed.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

/// One recorded request.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub query: String,
    pub body: Value,
    /// Whether an injected fault answered it (it was not processed).
    pub faulted: bool,
}

/// What an injected fault does to a matching request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiFaultKind {
    /// Answer this status with a Kubernetes `Status` body; the request is
    /// not processed (a 503 or 429 is retried by kube's client on its own).
    Status(u16),
    /// Wait this long, then process the request normally.
    Latency(Duration),
    /// Close the connection without an answer; the request is not processed.
    CloseConnection,
}

/// A fault for the requests it matches (`None` matches anything).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiFault {
    pub kind: ApiFaultKind,
    /// `GET`, `PATCH`, `POST`, … (any case).
    pub method: Option<String>,
    /// The resource's plural: `secrets`, `pods`, `secretproviderclasses`,
    /// `secretproviderclasspodstatuses`, `events`.
    pub resource: Option<String>,
    /// Hit the next `count` matching requests; forever when absent.
    pub count: Option<u32>,
}

impl ApiFault {
    /// A fault of `kind` for every request, forever.
    pub fn new(kind: ApiFaultKind) -> Self {
        Self {
            kind,
            method: None,
            resource: None,
            count: None,
        }
    }

    /// Only requests with this method.
    pub fn method(mut self, method: &str) -> Self {
        self.method = Some(method.to_owned());
        self
    }

    /// Only requests for this resource (plural).
    pub fn resource(mut self, plural: &str) -> Self {
        self.resource = Some(plural.to_owned());
        self
    }

    /// Only the next `n` matching requests.
    pub fn times(mut self, n: u32) -> Self {
        self.count = Some(n);
        self
    }

    fn matches(&self, method: &Method, path: &str) -> bool {
        self.method
            .as_deref()
            .is_none_or(|m| m.eq_ignore_ascii_case(method.as_str()))
            && self
                .resource
                .as_deref()
                .is_none_or(|r| resource_of(path) == r)
    }
}

/// The resource (plural) a path names: `/api/v1/namespaces/ns/secrets/x`
/// → `secrets`, `/apis/g/v1/secretproviderclasses` →
/// `secretproviderclasses`.
pub fn resource_of(path: &str) -> &str {
    let mut parts = path.trim_start_matches('/').split('/');
    let rest: Vec<&str> = match parts.next() {
        Some("api") => parts.skip(1).collect(),
        Some("apis") => parts.skip(2).collect(),
        _ => return "",
    };
    match rest.as_slice() {
        ["namespaces", _, resource, ..] => resource,
        [resource, ..] => resource,
        [] => "",
    }
}

#[derive(Default)]
struct State {
    objects: BTreeMap<String, Value>,
    requests: Vec<Recorded>,
    version: u64,
    faults: Vec<(u64, ApiFault)>,
    next_fault: u64,
}

impl State {
    /// The fault for one request, consuming counts.
    fn fault(&mut self, method: &Method, path: &str) -> Option<ApiFaultKind> {
        let (_, fault) = self
            .faults
            .iter_mut()
            .find(|(_, f)| f.matches(method, path))?;
        let kind = fault.kind.clone();
        if let Some(n) = fault.count.as_mut() {
            *n = n.saturating_sub(1);
        }
        self.faults.retain(|(_, f)| f.count != Some(0));
        Some(kind)
    }
}

/// The accept loop and the connections it serves, so [`FakeApiServer::down`]
/// can stop them all.
#[derive(Default)]
struct Tasks {
    accept: Option<tokio::task::JoinHandle<()>>,
    connections: Vec<tokio::task::AbortHandle>,
}

/// A running fake API server.
#[derive(Clone)]
pub struct FakeApiServer {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    tasks: Arc<Mutex<Tasks>>,
}

impl std::fmt::Debug for FakeApiServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeApiServer")
            .field("addr", &self.addr)
            .finish()
    }
}

/// The API path of a namespaced object.
pub fn object_path(api_version: &str, plural: &str, namespace: &str, name: &str) -> String {
    let prefix = if api_version.contains('/') {
        format!("/apis/{api_version}")
    } else {
        format!("/api/{api_version}")
    };
    format!("{prefix}/namespaces/{namespace}/{plural}/{name}")
}

fn collection_of(path: &str) -> Option<(&str, &str)> {
    path.rsplit_once('/')
}

/// Every server started in this process, for [`FakeApiServer::find`].
static STARTED: Mutex<Vec<FakeApiServer>> = Mutex::new(Vec::new());

impl FakeApiServer {
    /// Starts on 127.0.0.1 with a free port.
    pub async fn start() -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let server = Self {
            addr: listener.local_addr()?,
            state: Arc::new(Mutex::new(State::default())),
            tasks: Arc::new(Mutex::new(Tasks::default())),
        };
        server.serve(listener);
        STARTED
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(server.clone());
        Ok(server)
    }

    /// The server started in this process at `url` (as in its kubeconfig):
    /// the e2e harness scans every request it got for secrets.
    pub fn find(url: &str) -> Option<FakeApiServer> {
        let url = url.trim_end_matches('/');
        STARTED
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .find(|s| s.url() == url)
            .cloned()
    }

    fn serve(&self, listener: tokio::net::TcpListener) {
        let state = self.state.clone();
        let tasks = self.tasks.clone();
        let accept = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let state = state.clone();
                let connection = tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |r| handle(state.clone(), r));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
                let mut tasks = tasks.lock().unwrap_or_else(|e| e.into_inner());
                tasks.connections.retain(|c| !c.is_finished());
                tasks.connections.push(connection.abort_handle());
            }
        });
        self.tasks.lock().unwrap_or_else(|e| e.into_inner()).accept = Some(accept);
    }

    /// The API server goes down: its port is closed (new connections are
    /// refused) and every open connection is dropped, requests in flight
    /// included. Objects are kept for [`FakeApiServer::up`].
    pub async fn down(&self) {
        let (accept, connections) = {
            let mut tasks = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
            (tasks.accept.take(), std::mem::take(&mut tasks.connections))
        };
        for connection in connections {
            connection.abort();
        }
        if let Some(accept) = accept {
            accept.abort();
            // The listener is closed once the aborted task is gone.
            let _ = accept.await;
        }
        // A connection accepted meanwhile goes too.
        let late = std::mem::take(
            &mut self
                .tasks
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .connections,
        );
        for connection in late {
            connection.abort();
        }
    }

    /// Back up on the same address after [`FakeApiServer::down`] (a no-op
    /// when it is up).
    pub async fn up(&self) -> std::io::Result<()> {
        if self
            .tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .accept
            .is_some()
        {
            return Ok(());
        }
        let listener = tokio::net::TcpListener::bind(self.addr).await?;
        self.serve(listener);
        Ok(())
    }

    /// Injects `fault`; returns its id. The first matching fault answers.
    pub fn add_fault(&self, fault: ApiFault) -> u64 {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.next_fault += 1;
        let id = state.next_fault;
        state.faults.push((id, fault));
        id
    }

    /// Removes one fault; false if it was not there (or ran out).
    pub fn remove_fault(&self, id: u64) -> bool {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let before = state.faults.len();
        state.faults.retain(|(i, _)| *i != id);
        state.faults.len() != before
    }

    /// Removes every fault.
    pub fn clear_faults(&self) {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .faults
            .clear();
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stores `object` (it must have apiVersion, kind, metadata.name and
    /// metadata.namespace) under its path for `plural`.
    pub fn put(&self, plural: &str, mut object: Value) -> String {
        let path = object_path(
            object["apiVersion"].as_str().unwrap_or("v1"),
            plural,
            object["metadata"]["namespace"]
                .as_str()
                .unwrap_or("default"),
            object["metadata"]["name"].as_str().unwrap_or_default(),
        );
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        stamp(&mut state, &mut object, None);
        state.objects.insert(path.clone(), object);
        path
    }

    /// The object at `path`, if any.
    pub fn get(&self, path: &str) -> Option<Value> {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .objects
            .get(path)
            .cloned()
    }

    /// Removes the object at `path` as if it had been deleted (by a user,
    /// or by garbage collection); returns it.
    pub fn remove(&self, path: &str) -> Option<Value> {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .objects
            .remove(path)
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .requests
            .clone()
    }

    /// Writes a kubeconfig pointing at this server; returns its path.
    pub fn write_kubeconfig(&self, dir: &Path) -> std::io::Result<PathBuf> {
        let path = dir.join("kubeconfig");
        let config = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: {}\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\n    namespace: default\ncurrent-context: fake\nusers:\n- name: fake\n  user:\n    token: fake-api-token\n",
            self.url()
        );
        std::fs::write(&path, config)?;
        Ok(path)
    }
}

fn stamp(state: &mut State, object: &mut Value, old: Option<&Value>) {
    state.version += 1;
    let uid = old
        .and_then(|o| o["metadata"]["uid"].as_str().map(str::to_owned))
        .or_else(|| object["metadata"]["uid"].as_str().map(str::to_owned))
        .unwrap_or_else(|| format!("uid-{}", state.version));
    if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.insert("uid".into(), json!(uid));
        meta.insert("resourceVersion".into(), json!(state.version.to_string()));
    }
}

fn reply(status: StatusCode, body: &Value) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap_or_default()
}

fn not_found(path: &str) -> Response<Full<Bytes>> {
    reply(
        StatusCode::NOT_FOUND,
        &json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404,
                "message": format!("{path} not found")}),
    )
}

/// Why a connection is closed without an answer (an injected fault).
#[derive(Debug)]
struct Hangup;

impl std::fmt::Display for Hangup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("injected fault: connection closed")
    }
}

impl std::error::Error for Hangup {}

async fn handle(
    state: Arc<Mutex<State>>,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Hangup> {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let query = request.uri().query().unwrap_or("").to_owned();
    let body_bytes = request
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let body: Value = serde_json::from_slice(&body_bytes).unwrap_or(Value::Null);
    let fault = {
        let mut state = state.lock().unwrap_or_else(|e| e.into_inner());
        let fault = state.fault(&method, &path);
        if let Some(ApiFaultKind::Status(_) | ApiFaultKind::CloseConnection) = fault {
            state.requests.push(Recorded {
                method: method.to_string(),
                path: path.clone(),
                query: query.clone(),
                body: body.clone(),
                faulted: true,
            });
        }
        fault
    };
    match fault {
        Some(ApiFaultKind::Status(code)) => {
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            return Ok(reply(
                status,
                &json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                        "reason": status.canonical_reason().unwrap_or("Unknown").replace(' ', ""),
                        "code": code, "message": format!("injected fault: {code}")}),
            ));
        }
        Some(ApiFaultKind::CloseConnection) => return Err(Hangup),
        Some(ApiFaultKind::Latency(pause)) => tokio::time::sleep(pause).await,
        None => {}
    }
    if query.contains("watch=true") {
        tokio::time::sleep(Duration::from_millis(500)).await;
        return Ok(Response::new(Full::new(Bytes::new())));
    }
    let mut state = state.lock().unwrap_or_else(|e| e.into_inner());
    state.requests.push(Recorded {
        method: method.to_string(),
        path: path.clone(),
        query,
        body: body.clone(),
        faulted: false,
    });
    let response = match method {
        Method::GET => match state.objects.get(&path) {
            Some(object) => reply(StatusCode::OK, object),
            None => {
                // A collection: every object whose parent path (any namespace) matches.
                let (group_prefix, plural) = collection_of(&path).unwrap_or(("", ""));
                let items: Vec<Value> = state
                    .objects
                    .iter()
                    .filter(|(p, _)| {
                        collection_of(p).is_some_and(|(parent, _)| {
                            parent == path
                                || (parent.ends_with(&format!("/{plural}"))
                                    && parent.starts_with(group_prefix)
                                    && !path.contains("/namespaces/"))
                        })
                    })
                    .map(|(_, o)| o.clone())
                    .collect();
                if items.is_empty() && !path.ends_with('s') {
                    not_found(&path)
                } else {
                    let version = state.version.to_string();
                    reply(
                        StatusCode::OK,
                        &json!({"kind": "List", "apiVersion": "v1", "metadata": {"resourceVersion": version}, "items": items}),
                    )
                }
            }
        },
        Method::PATCH => {
            let old = state.objects.get(&path).cloned();
            let mut object = body;
            stamp(&mut state, &mut object, old.as_ref());
            state.objects.insert(path, object.clone());
            reply(StatusCode::OK, &object)
        }
        Method::POST => {
            let mut object = body;
            let name = object["metadata"]["name"]
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| format!("generated-{}", state.version + 1));
            stamp(&mut state, &mut object, None);
            state
                .objects
                .insert(format!("{path}/{name}"), object.clone());
            reply(StatusCode::CREATED, &object)
        }
        _ => reply(
            StatusCode::METHOD_NOT_ALLOWED,
            &json!({"kind": "Status", "code": 405}),
        ),
    };
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resources_are_read_from_paths() {
        for (path, resource) in [
            ("/api/v1/namespaces/default/secrets/sqlserver", "secrets"),
            ("/api/v1/namespaces/default/pods", "pods"),
            (
                "/apis/secrets-store.csi.x-k8s.io/v1/secretproviderclasses",
                "secretproviderclasses",
            ),
            (
                "/apis/secrets-store.csi.x-k8s.io/v1/namespaces/a/secretproviderclasspodstatuses/x",
                "secretproviderclasspodstatuses",
            ),
            ("/apis/events.k8s.io/v1/namespaces/default/events", "events"),
            ("/version", ""),
        ] {
            assert_eq!(resource_of(path), resource, "{path}");
        }
        let fault = ApiFault::new(ApiFaultKind::Status(503))
            .method("patch")
            .resource("secrets");
        assert!(fault.matches(&Method::PATCH, "/api/v1/namespaces/d/secrets/s"));
        assert!(!fault.matches(&Method::GET, "/api/v1/namespaces/d/secrets/s"));
        assert!(!fault.matches(&Method::PATCH, "/api/v1/namespaces/d/pods/s"));
    }
}
