//! The node's local admin endpoint: a Unix socket (mode 0600, so root
//! only) answering `secretfs status` (`GET /volumes`, `GET /readiness`)
//! and `secretfs refresh` (`POST /refresh[?target=…]`). It never returns a
//! secret value. The commands' side (the calls and what they print) is
//! `cmd::admin`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};

use crate::node::driver::Driver;

/// The default admin socket.
pub const DEFAULT_SOCKET: &str = "/var/run/secretfs/admin.sock";

/// Volumes `secretfs refresh` refreshes at once.
const REFRESH_CONCURRENCY: usize = 8;

/// Why an admin call failed.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error(
        "cannot reach the node plugin at {path:?} ({source}): is `secretfs node` running, and are you root?"
    )]
    Connect {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("admin request failed: {0}")]
    Http(String),
    #[error("the node plugin answered {status}: {message}")]
    Status { status: u16, message: String },
    #[error(transparent)]
    Server(#[from] secretfs_csi::ServerError),
}

/// The outcome of one refresh.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefreshResult {
    pub target: String,
    pub replaced: usize,
    pub added: usize,
    pub removed: usize,
    pub error: Option<String>,
}

fn json<T: Serialize>(status: StatusCode, value: &T) -> Response<Full<Bytes>> {
    let body = serde_json::to_vec(value).unwrap_or_default();
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap_or_default()
}

/// Whether the node can serve publishes (as its CSI Probe and `/readyz`
/// say), and why not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeReadiness {
    pub ready: bool,
    pub reason: Option<String>,
}

async fn answer(
    driver: Arc<Driver>,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
    let target = request.uri().query().and_then(|q| {
        form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == "target")
            .map(|(_, v)| v.into_owned())
    });
    Ok(match (request.method(), request.uri().path()) {
        (&Method::GET, "/volumes") => json(StatusCode::OK, &driver.status().await),
        (&Method::GET, "/readiness") => {
            let readiness = match secretfs_csi::VolumeManager::readiness(&*driver).await {
                secretfs_csi::Readiness::Ready => NodeReadiness {
                    ready: true,
                    reason: None,
                },
                secretfs_csi::Readiness::NotReady(reason) => NodeReadiness {
                    ready: false,
                    reason: Some(reason),
                },
            };
            json(StatusCode::OK, &readiness)
        }
        (&Method::POST, "/refresh") => {
            // One request: every volume takes only objects fetched since
            // it arrived, so the first volume of an identity asks the vault
            // and the others share its answer (M objects cost M requests,
            // however many volumes), within the per-vault rate limit.
            let requested_at = std::time::Instant::now();
            let targets: Vec<PathBuf> = match target {
                Some(t) => vec![PathBuf::from(t)],
                None => driver.volumes().into_iter().map(|v| v.target).collect(),
            };
            let refreshes = targets.into_iter().map(|target| {
                let driver = driver.clone();
                async move {
                    let result = driver.refresh_since(&target, requested_at).await;
                    let target = target.to_string_lossy().into_owned();
                    match result {
                        Ok(o) => RefreshResult {
                            target,
                            replaced: o.replaced,
                            added: o.added,
                            removed: o.removed,
                            error: None,
                        },
                        Err(e) => RefreshResult {
                            target,
                            replaced: 0,
                            added: 0,
                            removed: 0,
                            error: Some(e.message),
                        },
                    }
                }
            });
            let results: Vec<RefreshResult> = futures::stream::iter(refreshes)
                .buffered(REFRESH_CONCURRENCY)
                .collect()
                .await;
            json(StatusCode::OK, &results)
        }
        _ => json(
            StatusCode::NOT_FOUND,
            &"try GET /volumes, GET /readiness or POST /refresh[?target=PATH]",
        ),
    })
}

/// Serves the admin endpoint on `path` until `shutdown`.
pub async fn serve(
    path: &Path,
    driver: Arc<Driver>,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), AdminError> {
    // The socket file goes when this future ends or is dropped.
    let (listener, _socket_file) = secretfs_csi::bind_owned(path)?;
    tokio::pin!(shutdown);
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => { tracing::warn!(error = %e, "admin accept"); continue; }
            },
            _ = &mut shutdown => return Ok(()),
        };
        let driver = driver.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |r| answer(driver.clone(), r));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
