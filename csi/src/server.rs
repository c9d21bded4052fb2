//! Serving the CSI services on a Unix socket.

use std::future::Future;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::TryStreamExt as _;
use thiserror::Error;
use tokio::net::UnixListener;
use tokio_stream::wrappers::UnixListenerStream;

use crate::manager::VolumeManager;
use crate::node::{IdentityService, NodeService};
use crate::proto::csi::identity_server::IdentityServer;
use crate::proto::csi::node_server::NodeServer;

/// Why the server could not start or stopped.
#[derive(Debug, Error)]
pub enum ServerError {
    #[error("endpoint {endpoint:?} is not a unix socket: use unix:///path/to/csi.sock")]
    Endpoint { endpoint: String },
    #[error(
        "{path:?} exists and is not a socket: refusing to remove it; move it away or choose another --endpoint"
    )]
    NotASocket { path: PathBuf },
    #[error("cannot prepare socket {path:?}: {source}")]
    Socket {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("gRPC server failed: {0}")]
    Serve(#[from] tonic::transport::Error),
}

/// The socket path of an endpoint: `unix:///abs/path`, `unix://rel/path`
/// or a plain path.
pub fn socket_path(endpoint: &str) -> Result<PathBuf, ServerError> {
    let path = match endpoint.strip_prefix("unix://") {
        Some(rest) => rest,
        None if endpoint.contains("://") => {
            return Err(ServerError::Endpoint {
                endpoint: endpoint.to_owned(),
            });
        }
        None => endpoint,
    };
    if path.is_empty() {
        return Err(ServerError::Endpoint {
            endpoint: endpoint.to_owned(),
        });
    }
    Ok(PathBuf::from(path))
}

/// The file of a socket this process bound: removed when dropped (a clean
/// stop leaves no socket behind), but only while it is still the one this
/// process made: a newer process that replaced it keeps its own.
#[derive(Debug)]
pub struct SocketFile {
    path: PathBuf,
    /// (device, inode) of the socket file as bound.
    id: Option<(u64, u64)>,
}

impl SocketFile {
    fn of(path: &Path) -> Self {
        use std::os::unix::fs::MetadataExt;
        let id = std::fs::symlink_metadata(path)
            .ok()
            .map(|m| (m.dev(), m.ino()));
        Self {
            path: path.to_owned(),
            id,
        }
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        use std::os::unix::fs::MetadataExt;
        let now = std::fs::symlink_metadata(&self.path)
            .ok()
            .filter(|m| m.file_type().is_socket())
            .map(|m| (m.dev(), m.ino()));
        if now.is_some() && now == self.id {
            match std::fs::remove_file(&self.path) {
                Ok(()) => tracing::debug!(path = ?self.path, "socket removed"),
                Err(e) => tracing::warn!(path = ?self.path, error = %e, "cannot remove the socket"),
            }
        }
    }
}

/// [`bind`], and the socket's file, removed when the returned
/// [`SocketFile`] is dropped.
pub fn bind_owned(path: &Path) -> Result<(UnixListener, SocketFile), ServerError> {
    let listener = bind(path)?;
    Ok((listener, SocketFile::of(path)))
}

/// Binds `path` with mode 0600 before anyone can connect: the socket is
/// created under a temporary name, restricted, then renamed into place. A
/// stale socket at `path` is replaced; anything else there is left alone.
/// The socket file stays when the listener closes: see [`bind_owned`].
pub fn bind(path: &Path) -> Result<UnixListener, ServerError> {
    let io = |source| ServerError::Socket {
        path: path.to_owned(),
        source,
    };
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => std::fs::remove_file(path).map_err(io)?,
        Ok(_) => {
            return Err(ServerError::NotASocket {
                path: path.to_owned(),
            });
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(e)),
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let mut temp = path.as_os_str().to_owned();
    temp.push(format!(".{}.tmp", std::process::id()));
    let temp = PathBuf::from(temp);
    let _ = std::fs::remove_file(&temp);
    let listener = UnixListener::bind(&temp).map_err(io)?;
    let placed = std::fs::set_permissions(&temp, std::fs::Permissions::from_mode(0o600))
        .and_then(|()| std::fs::rename(&temp, path));
    if let Err(e) = placed {
        let _ = std::fs::remove_file(&temp);
        return Err(io(e));
    }
    Ok(listener)
}

/// Serves the Identity and Node services on `listener` until `shutdown`
/// completes, then finishes the calls in progress and returns. Clients may
/// send any `:authority` ([`crate::authority`]): gRPC-Go's `localhost`,
/// C-core's percent-encoded socket path, grpc-java's path.
pub async fn serve(
    listener: UnixListener,
    identity: IdentityService,
    node: NodeService,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServerError> {
    tonic::transport::Server::builder()
        .layer(crate::failures::FailureLog)
        .add_service(IdentityServer::new(identity))
        .add_service(NodeServer::new(node))
        .serve_with_incoming_shutdown(
            UnixListenerStream::new(listener).map_ok(crate::authority::AnyAuthority::new),
            shutdown,
        )
        .await?;
    Ok(())
}

/// Builds both services around one manager.
pub fn services(
    driver_name: &str,
    version: &str,
    node_id: &str,
    manager: Arc<dyn VolumeManager>,
) -> (IdentityService, NodeService) {
    (
        IdentityService::new(driver_name, version, manager.clone()),
        NodeService::new(node_id, manager),
    )
}
