//! A test provider process speaking the upstream provider protocol
//! (`v1alpha1.CSIDriverProvider`) on a unix socket, in process. By default it
//! answers like upstream's e2e provider (file `foo` = `secret`, version
//! `secret/foo = v1`); it can be told to return each kind of bad response a
//! driver must refuse, to be slow, or to be unavailable for a few calls.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use secretfs_e2e::test_provider::{Behavior, TestProvider};
//! let provider = TestProvider::start(std::path::Path::new("/tmp/p/vault.sock")).await?;
//! provider.set_behavior(Behavior::AbsolutePath);
//! # Ok(()) }
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use secretfs_csi::proto::provider as pb;
use secretfs_csi::proto::provider::csi_driver_provider_server::{
    CsiDriverProvider, CsiDriverProviderServer,
};
use tokio::sync::oneshot;
use tokio_stream::wrappers::UnixListenerStream;
use tonic::{Request, Response, Status};

/// What the next `Mount` calls answer.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Behavior {
    /// The configured files, mode 420 unless set, one version per file.
    #[default]
    Ok,
    /// One file at `/etc/passwd`.
    AbsolutePath,
    /// One file at `a/../../escape`.
    DotDot,
    /// One file at `..data/foo` (the atomic writer's own names).
    StartsWithDotDot,
    /// The first file twice.
    DuplicatePath,
    /// The first file with mode 512 (0o1000).
    ModeOutOfRange,
    /// One file of this many bytes.
    Oversize(usize),
    /// Files but no object versions.
    MissingVersions,
    /// `error.code` set to this.
    ErrorCode(String),
    /// The normal answer after this long.
    Slow(Duration),
    /// `UNAVAILABLE` for this many calls, then the normal answer.
    Unavailable(u32),
    /// A gRPC error of its own with this message, as a Go provider's plain
    /// `return nil, err` answers: code `Unknown`.
    Failed(String),
}

/// One `Mount` call as received (the test's own data: tokens included).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedMount {
    pub attributes: BTreeMap<String, String>,
    pub secrets: String,
    pub target_path: String,
    pub permission: String,
    /// `(id, version)` pairs.
    pub current: Vec<(String, String)>,
}

#[derive(Debug)]
struct State {
    behavior: Behavior,
    /// path → (contents, version)
    files: BTreeMap<String, (Vec<u8>, String)>,
    /// path → mode, for files not sent with mode 420
    modes: BTreeMap<String, i32>,
    calls: Vec<RecordedMount>,
    version_calls: usize,
}

#[derive(Debug, Clone)]
struct Service {
    state: Arc<Mutex<State>>,
}

/// Why the test provider could not start.
#[derive(Debug, thiserror::Error)]
pub enum TestProviderError {
    #[error("cannot bind test provider socket {path:?}: {source}")]
    Bind {
        path: PathBuf,
        #[source]
        source: secretfs_csi::ServerError,
    },
}

/// A running test provider; stops when dropped.
#[derive(Debug)]
pub struct TestProvider {
    socket: PathBuf,
    state: Arc<Mutex<State>>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl TestProvider {
    /// Serves on `socket` (created 0600, parent directories too).
    pub async fn start(socket: &Path) -> Result<Self, TestProviderError> {
        let listener = secretfs_csi::bind(socket).map_err(|source| TestProviderError::Bind {
            path: socket.to_owned(),
            source,
        })?;
        let mut files = BTreeMap::new();
        files.insert("foo".to_owned(), (b"secret".to_vec(), "v1".to_owned()));
        let state = Arc::new(Mutex::new(State {
            behavior: Behavior::Ok,
            files,
            modes: BTreeMap::new(),
            calls: Vec::new(),
            version_calls: 0,
        }));
        let (stop, stopped) = oneshot::channel::<()>();
        let service = Service {
            state: state.clone(),
        };
        let task = tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(CsiDriverProviderServer::new(service))
                .serve_with_incoming_shutdown(UnixListenerStream::new(listener), async {
                    let _ = stopped.await;
                })
                .await;
        });
        Ok(Self {
            socket: socket.to_owned(),
            state,
            stop: Some(stop),
            task: Some(task),
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    pub fn set_behavior(&self, behavior: Behavior) {
        self.state().behavior = behavior;
    }

    /// Sets file `path` (added or replaced) with its object version.
    pub fn set_file(&self, path: &str, contents: &[u8], version: &str) {
        self.state()
            .files
            .insert(path.to_owned(), (contents.to_vec(), version.to_owned()));
    }

    /// Sends file `path` with `mode` (e.g. `0o400`) instead of 420.
    pub fn set_mode(&self, path: &str, mode: i32) {
        self.state().modes.insert(path.to_owned(), mode);
    }

    /// The `Mount` calls so far.
    pub fn calls(&self) -> Vec<RecordedMount> {
        self.state().calls.clone()
    }

    /// How many `Version` calls were made.
    pub fn version_calls(&self) -> usize {
        self.state().version_calls
    }

    /// Stops serving, waits until the server has stopped (at most 5 s, then
    /// it is aborted) and removes the socket.
    pub async fn stop(mut self) {
        self.shutdown();
        if let Some(mut task) = self.task.take()
            && tokio::time::timeout(Duration::from_secs(5), &mut task)
                .await
                .is_err()
        {
            task.abort();
        }
    }

    fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
            let _ = std::fs::remove_file(&self.socket);
        }
    }
}

impl Drop for TestProvider {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn file(path: &str, mode: i32, contents: Vec<u8>) -> pb::File {
    pb::File {
        path: path.to_owned(),
        mode,
        contents,
    }
}

#[tonic::async_trait]
impl CsiDriverProvider for Service {
    async fn version(
        &self,
        _request: Request<pb::VersionRequest>,
    ) -> Result<Response<pb::VersionResponse>, Status> {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .version_calls += 1;
        Ok(Response::new(pb::VersionResponse {
            version: "v1alpha1".into(),
            runtime_name: "E2EMockProvider".into(),
            runtime_version: "v0.0.10".into(),
        }))
    }

    async fn mount(
        &self,
        request: Request<pb::MountRequest>,
    ) -> Result<Response<pb::MountResponse>, Status> {
        let message = request.into_inner();
        let attributes: BTreeMap<String, String> = serde_json::from_str(&message.attributes)
            .map_err(|e| Status::invalid_argument(format!("attributes: {e}")))?;
        let (behavior, files) = {
            let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            state.calls.push(RecordedMount {
                attributes,
                secrets: message.secrets.clone(),
                target_path: message.target_path.clone(),
                permission: message.permission.clone(),
                current: message
                    .current_object_version
                    .iter()
                    .map(|v| (v.id.clone(), v.version.clone()))
                    .collect(),
            });
            let behavior = state.behavior.clone();
            if let Behavior::Failed(message) = behavior {
                return Err(Status::unknown(message));
            }
            if let Behavior::Unavailable(n) = behavior
                && n > 0
            {
                state.behavior = Behavior::Unavailable(n - 1);
                return Err(Status::unavailable("test provider: not ready yet"));
            }
            (behavior, (state.files.clone(), state.modes.clone()))
        };
        let (files, modes) = files;
        if let Behavior::Slow(pause) = behavior {
            tokio::time::sleep(pause).await;
        }
        let mut response = pb::MountResponse {
            object_version: files
                .iter()
                .map(|(path, (_, version))| pb::ObjectVersion {
                    id: format!("secret/{path}"),
                    version: version.clone(),
                })
                .collect(),
            error: None,
            files: files
                .iter()
                .map(|(path, (contents, _))| {
                    file(
                        path,
                        modes.get(path).copied().unwrap_or(420),
                        contents.clone(),
                    )
                })
                .collect(),
        };
        match behavior {
            Behavior::Ok | Behavior::Slow(_) | Behavior::Unavailable(_) | Behavior::Failed(_) => {}
            Behavior::AbsolutePath => response.files = vec![file("/etc/passwd", 420, b"x".into())],
            Behavior::DotDot => response.files = vec![file("a/../../escape", 420, b"x".into())],
            Behavior::StartsWithDotDot => {
                response.files = vec![file("..data/foo", 420, b"x".into())]
            }
            Behavior::DuplicatePath => {
                if let Some(first) = response.files.first().cloned() {
                    response.files.push(first);
                }
            }
            Behavior::ModeOutOfRange => {
                if let Some(first) = response.files.first_mut() {
                    first.mode = 512;
                }
            }
            Behavior::Oversize(len) => response.files = vec![file("big", 420, vec![b'x'; len])],
            Behavior::MissingVersions => response.object_version.clear(),
            Behavior::ErrorCode(code) => {
                response.files.clear();
                response.error = Some(pb::Error { code });
            }
        }
        Ok(Response::new(response))
    }
}
