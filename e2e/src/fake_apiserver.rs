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

use std::collections::BTreeMap;
use std::convert::Infallible;
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
}

#[derive(Default)]
struct State {
    objects: BTreeMap<String, Value>,
    requests: Vec<Recorded>,
    version: u64,
}

/// A running fake API server.
#[derive(Clone)]
pub struct FakeApiServer {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
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

impl FakeApiServer {
    /// Starts on 127.0.0.1 with a free port.
    pub async fn start() -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let server = Self {
            addr: listener.local_addr()?,
            state: Arc::new(Mutex::new(State::default())),
        };
        let state = server.state.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let state = state.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |r| handle(state.clone(), r));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(server)
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

async fn handle(
    state: Arc<Mutex<State>>,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
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
