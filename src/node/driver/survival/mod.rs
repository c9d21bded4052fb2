//! Restart survival (docs/ARCHITECTURE.md, "Restart survival").
//!
//! Two places keep a volume alive while no node plugin runs:
//! - the state directory: one JSON record per volume with everything that
//!   is not secret (pod, class, parameters, files and versions, the FUSE
//!   session's INIT exchange). Written at publish and after each change.
//! - the keeper (`secretfs keeper`): the volume's `/dev/fuse` connection
//!   (which keeps the mount alive) and, in locked memory, what is secret:
//!   the files' bytes, the pod's tokens and the publish secrets.
//!
//! A starting node reads the records, takes each connection back from the
//! keeper and serves the same files under the same inode numbers; requests
//! that waited meanwhile are answered, and on Linux 6.9+ so are those a
//! killed process left unanswered. What cannot be kept is repaired: a
//! record without a connection means the mount died with the old process;
//! it is unmounted and the pods that need a restart are named in the log.

//! - [`record`]: the state records; [`blob`]: the keeper's blobs;
//! - this file: where both live ([`Persistence`], the link to the keeper)
//!   and how a published volume goes to them, the hand-over at a stop;
//! - [`restore`]: the takeover at a start.

mod blob;
mod record;
mod restore;
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{Driver, Published};
use crate::node::keeper::KeeperClient;
use blob::encode_secrets;
use record::record_of;

pub use restore::RestoreReport;

/// Where volumes are kept across restarts.
pub struct Persistence {
    state_dir: PathBuf,
    keeper: Option<KeeperLink>,
}

impl std::fmt::Debug for Persistence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Persistence")
            .field("state_dir", &self.state_dir)
            .field("keeper", &self.keeper.as_ref().map(|k| &k.socket))
            .finish()
    }
}

/// A connection to the keeper, made again after an error.
struct KeeperLink {
    socket: PathBuf,
    client: std::sync::Mutex<Option<KeeperClient>>,
}

impl KeeperLink {
    /// Runs `op` on a connected client; on failure the connection is dropped
    /// and made again next time.
    fn with<T>(
        &self,
        mut op: impl FnMut(&mut KeeperClient) -> std::io::Result<T>,
    ) -> std::io::Result<T> {
        let mut guard = self.client.lock().unwrap_or_else(|e| e.into_inner());
        // A kept connection may lead to a keeper that has since restarted:
        // on failure, connect again once and retry.
        if let Some(client) = guard.as_mut() {
            match op(client) {
                Ok(value) => return Ok(value),
                Err(_) => *guard = None,
            }
        }
        let mut client = KeeperClient::connect(&self.socket)?;
        let result = op(&mut client);
        if result.is_ok() {
            *guard = Some(client);
        }
        result
    }
}

impl Persistence {
    /// Records go to `state_dir` (created 0700); connections and secrets
    /// to the keeper at `keeper` (none: volumes die with the process, and
    /// the next start only repairs).
    pub fn new(state_dir: &Path, keeper: Option<&Path>) -> std::io::Result<Self> {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(state_dir)?;
        Ok(Self {
            state_dir: state_dir.to_owned(),
            keeper: keeper.map(|socket| KeeperLink {
                socket: socket.to_owned(),
                client: std::sync::Mutex::new(None),
            }),
        })
    }

    pub fn has_keeper(&self) -> bool {
        self.keeper.is_some()
    }
}

impl Driver {
    /// Keeps volumes across restarts with `persistence`.
    pub fn with_persistence(mut self, persistence: Persistence) -> Self {
        self.persist = Some(Arc::new(persistence));
        self
    }

    /// Hands the keeper `p`'s secrets and a duplicate of its connection,
    /// and, when what it shows changed (`changed`: publish, rotation),
    /// rewrites its record; a republish only brings new tokens. Failures
    /// are logged: the volume works, it just would not survive a restart.
    pub(super) async fn persist(&self, target: &Path, p: &Published, changed: bool) {
        let Some(persist) = self.persist.clone() else {
            return;
        };
        let record = changed.then(|| record_of(target, p));
        let blob = persist.keeper.is_some().then(|| encode_secrets(p));
        // The connection goes with every update: a keeper that restarted
        // since the last one has none.
        let fd = p
            .mounted
            .connection()
            .and_then(|fd| fd.try_clone_to_owned().ok());
        let target = target.to_owned();
        let done = tokio::task::spawn_blocking(move || {
            if let Some(record) = record
                && let Err(e) = persist.write_record(&record)
            {
                tracing::warn!(target = ?target, error = %e, "cannot write the volume's state record: it will not survive a restart");
            }
            if let (Some(link), Some(blob)) = (&persist.keeper, blob) {
                let key = target.to_string_lossy();
                let result = link.with(|c| {
                    use std::os::fd::AsFd;
                    c.put(&key, fd.as_ref().map(|f| f.as_fd()), &blob)
                });
                if let Err(e) = result {
                    tracing::warn!(target = ?target, error = %e, "the keeper did not take the volume: it will not survive a restart");
                }
            }
        })
        .await;
        if let Err(e) = done {
            tracing::warn!(error = %e, "persisting a volume failed");
        }
    }

    /// Watches the keeper: when it comes back after a restart (it lost
    /// everything it held), every volume is handed to it again. Runs until
    /// the process ends; does nothing without a keeper.
    pub async fn watch_keeper(self: Arc<Self>) {
        let Some(socket) = self
            .persist
            .as_ref()
            .and_then(|p| p.keeper.as_ref())
            .map(|k| k.socket.clone())
        else {
            return;
        };
        let mut seen = false;
        loop {
            let connected = tokio::net::UnixStream::connect(&socket).await;
            let Ok(mut stream) = connected else {
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                continue;
            };
            if seen {
                tracing::info!(socket = ?socket, "the keeper is back: handing it every volume again");
                for (target, slot) in self.slots() {
                    let guard = slot.lock().await;
                    if let Some(published) = guard.as_ref() {
                        self.persist(&target, published, false).await;
                    }
                }
            }
            seen = true;
            // The keeper never writes on this connection: a read ends only
            // when the keeper goes away.
            let mut byte = [0u8; 1];
            let _ = tokio::io::AsyncReadExt::read(&mut stream, &mut byte).await;
            tracing::warn!(socket = ?socket, "lost the keeper: volumes survive a restart again once it is back");
        }
    }

    /// Forgets a volume that was unpublished.
    pub(super) async fn forget(&self, target: &Path) {
        let Some(persist) = self.persist.clone() else {
            return;
        };
        let target = target.to_owned();
        let _ = tokio::task::spawn_blocking(move || {
            persist.remove_record(&target);
            if let Some(link) = &persist.keeper
                && let Err(e) = link.with(|c| c.remove(&target.to_string_lossy()))
            {
                tracing::warn!(target = ?target, error = %e, "the keeper did not drop the volume");
            }
        })
        .await;
    }

    /// Stops serving every volume without unmounting, after the keeper has
    /// its newest state: the next process takes them over. Without a
    /// keeper this does nothing (the volumes die with the process).
    pub async fn hand_over(&self, drain: std::time::Duration) -> usize {
        let Some(persist) = self.persist.clone() else {
            return 0;
        };
        if !persist.has_keeper() {
            return 0;
        }
        let mut handed = 0;
        for (target, slot) in self.slots() {
            let mut guard = slot.lock().await;
            let Some(published) = guard.take() else {
                continue;
            };
            // The record too: it carries the files' newest versions.
            self.persist(&target, &published, true).await;
            let released =
                tokio::task::spawn_blocking(move || published.mounted.release(drain)).await;
            match released {
                Ok(r) if r.unanswered > 0 => {
                    tracing::warn!(target = ?target, unanswered = r.unanswered, "requests left unanswered at hand-over; the next process gets them again on Linux 6.9+")
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(target = ?target, error = %e, "release failed"),
            }
            handed += 1;
        }
        handed
    }
}
