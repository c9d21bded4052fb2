//! The keeper's side: the socket, the accept loop, one thread per
//! connection, and the kept entries.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use rustix::event::{PollFd, PollFlags, poll};
use rustix::io::Errno;
use zeroize::Zeroizing;

use super::KeeperError;
use super::wire::{self, Body, Header};

/// One kept volume. The fd is shared with the entries that replace this
/// one without a new fd, and with LIST answers in flight; it is closed when
/// the last of them goes. The blob is wiped when this entry is dropped.
struct Entry {
    fd: Arc<OwnedFd>,
    blob: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Entry")
            .field("fd", &self.fd)
            .field("blob", &format_args!("<{} bytes>", self.blob.len()))
            .finish()
    }
}

/// The kept entries, by key.
#[derive(Debug, Default)]
struct State {
    entries: Mutex<HashMap<String, Arc<Entry>>>,
}

impl State {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Arc<Entry>>> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Stores `key`; without `fd`, the fd already kept for it is reused.
    /// Returns the number of entries, or why it was refused.
    fn put(
        &self,
        key: &str,
        fd: Option<OwnedFd>,
        blob: Zeroizing<Vec<u8>>,
    ) -> Result<usize, String> {
        let mut entries = self.lock();
        let fd = match fd {
            Some(fd) => Arc::new(fd),
            None => match entries.get(key) {
                Some(old) => old.fd.clone(),
                None => {
                    return Err(format!(
                        "no fd is kept for {key:?}: the first PUT of a volume must carry its fd"
                    ));
                }
            },
        };
        let old = entries.insert(key.to_owned(), Arc::new(Entry { fd, blob }));
        let count = entries.len();
        drop(entries);
        // The replaced entry (its fd closed unless reused, its blob wiped)
        // goes outside the lock.
        drop(old);
        Ok(count)
    }

    fn remove(&self, key: &str) -> (bool, usize) {
        let mut entries = self.lock();
        let old = entries.remove(key);
        let count = entries.len();
        drop(entries);
        (old.is_some(), count)
    }

    /// The entries, sorted by key, without holding the lock while they are
    /// sent.
    fn snapshot(&self) -> Vec<(String, Arc<Entry>)> {
        let mut all: Vec<_> = self
            .lock()
            .iter()
            .map(|(k, e)| (k.clone(), e.clone()))
            .collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }
}

/// Stops a [`KeeperServer`] from another thread (or a signal handler
/// thread). Cloneable; dropping it does not stop the server.
#[derive(Debug, Clone)]
pub struct KeeperStopper {
    wake: Arc<UnixStream>,
}

impl KeeperStopper {
    /// Makes [`KeeperServer::serve`] return: connections are closed and
    /// every kept fd and blob is released.
    pub fn stop(&self) {
        let _ = self.wake.shutdown(std::net::Shutdown::Both);
    }
}

/// A bound keeper socket, not yet serving.
#[derive(Debug)]
pub struct KeeperServer {
    path: PathBuf,
    listener: UnixListener,
    /// Readable once [`KeeperStopper::stop`] is called.
    woken: UnixStream,
    wake: Arc<UnixStream>,
    state: Arc<State>,
}

impl KeeperServer {
    /// Binds the socket at `path` (mode 0600), creating its directory
    /// (0700) if missing. A stale socket there is replaced; a live keeper
    /// or anything that is not a socket is refused.
    pub fn bind(path: &Path) -> Result<Self, KeeperError> {
        let listener = bind(path)?;
        let io = |source| KeeperError::Socket {
            path: path.to_owned(),
            source,
        };
        listener.set_nonblocking(true).map_err(io)?;
        let (woken, wake) = UnixStream::pair().map_err(io)?;
        Ok(Self {
            path: path.to_owned(),
            listener,
            woken,
            wake: Arc::new(wake),
            state: Arc::default(),
        })
    }

    /// The socket path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A handle that stops [`Self::serve`].
    pub fn stopper(&self) -> KeeperStopper {
        KeeperStopper {
            wake: self.wake.clone(),
        }
    }

    /// Serves until [`KeeperStopper::stop`]; then closes every connection,
    /// releases every entry and returns how many there were.
    pub fn serve(self) -> Result<usize, KeeperError> {
        let uid = rustix::process::geteuid();
        tracing::info!(socket = %self.path.display(), uid = uid.as_raw(), "keeper started");
        let connections: Arc<Mutex<HashMap<u64, UnixStream>>> = Arc::default();
        let mut threads: Vec<JoinHandle<()>> = Vec::new();
        let mut next_id = 0u64;
        let result = loop {
            let mut fds = [
                PollFd::new(&self.listener, PollFlags::IN),
                PollFd::new(&self.woken, PollFlags::IN),
            ];
            match poll(&mut fds, None) {
                Ok(_) => {}
                Err(Errno::INTR) => continue,
                Err(e) => break Err(KeeperError::Io(e.into())),
            }
            if !fds[1].revents().is_empty() {
                break Ok(());
            }
            if fds[0].revents().is_empty() {
                continue;
            }
            threads.retain(|t| !t.is_finished());
            loop {
                let stream = match self.listener.accept() {
                    Ok((stream, _)) => stream,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        // Out of fds, most likely: wait instead of spinning.
                        tracing::warn!(error = %e, "keeper accept");
                        std::thread::sleep(Duration::from_millis(100));
                        break;
                    }
                };
                if !allowed(&stream, uid) {
                    continue;
                }
                next_id += 1;
                if let Some(thread) = spawn(stream, next_id, &self.state, &connections) {
                    threads.push(thread);
                }
            }
        };
        for stream in lock(&connections).values() {
            let _ = stream.shutdown(std::net::Shutdown::Both);
        }
        for thread in threads {
            let _ = thread.join();
        }
        let held = self.state.lock().len();
        if held > 0 {
            tracing::warn!(
                "{held} volume connection(s) released: those mounts stay alive only while the node plugin holds them"
            );
        } else {
            tracing::info!("keeper stopped, no volume connection held");
        }
        result.map(|()| held)
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Only the keeper's own user may talk to it (the socket's mode says the
/// same; this also holds when the socket is reached some other way).
///
/// The peer's pid is not used: the kernel reports 0 for a peer in a PID
/// namespace the keeper cannot see, which is the usual case (the chart runs
/// the keeper and the node plugin in two pods). rustix's `UCred` cannot hold
/// a pid of 0 and fails on exactly those peers, so the credentials are read
/// with getsockopt(2) directly.
fn allowed(stream: &UnixStream, uid: rustix::process::Uid) -> bool {
    match peer_credentials(stream) {
        Ok(peer) if peer.uid == uid.as_raw() => true,
        Ok(peer) => {
            tracing::warn!(
                peer_uid = peer.uid,
                peer_pid = peer.pid,
                "keeper: refused a connection from uid {}: only uid {} may use the keeper",
                peer.uid,
                uid.as_raw()
            );
            false
        }
        Err(e) => {
            tracing::warn!(error = %e, "keeper: refused a connection whose peer is unknown");
            false
        }
    }
}

/// SO_PEERCRED of a connected Unix socket: uid and gid as the keeper's user
/// namespace sees them, pid as its PID namespace does (0 when invisible).
fn peer_credentials(stream: &UnixStream) -> std::io::Result<libc::ucred> {
    use std::os::fd::AsRawFd as _;
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `cred` is a live, writable `ucred` and `len` holds its size,
    // as SO_PEERCRED requires; the fd is borrowed from a live socket.
    let rc = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&raw mut cred).cast::<libc::c_void>(),
            &raw mut len,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    if len as usize != std::mem::size_of::<libc::ucred>() {
        return Err(std::io::Error::other(format!(
            "SO_PEERCRED returned {len} bytes, not a struct ucred"
        )));
    }
    Ok(cred)
}

/// Starts the thread of one connection, registered in `connections` so
/// that stopping the keeper can close it.
fn spawn(
    stream: UnixStream,
    id: u64,
    state: &Arc<State>,
    connections: &Arc<Mutex<HashMap<u64, UnixStream>>>,
) -> Option<JoinHandle<()>> {
    let registered = stream
        .set_nonblocking(false)
        .and_then(|()| stream.try_clone());
    match registered {
        Ok(clone) => {
            lock(connections).insert(id, clone);
        }
        Err(e) => {
            tracing::warn!(error = %e, "keeper: cannot set up a connection");
            return None;
        }
    }
    let (state, registry) = (state.clone(), connections.clone());
    let spawned = std::thread::Builder::new()
        .name(format!("keeper-conn-{id}"))
        .spawn(move || {
            connection(&stream, &state);
            lock(&registry).remove(&id);
        });
    match spawned {
        Ok(thread) => Some(thread),
        Err(e) => {
            tracing::warn!(error = %e, "keeper: cannot start a connection thread");
            lock(connections).remove(&id);
            None
        }
    }
}

/// Answers the frames of one connection until it closes or breaks the
/// protocol (answered with ERR, then closed: the stream is out of step).
fn connection(stream: &UnixStream, state: &State) {
    loop {
        let served = wire::recv_header(stream).and_then(|header| match header {
            Some(header) => answer(stream, state, header).map(|()| true),
            None => Ok(false),
        });
        match served {
            Ok(true) => {}
            Ok(false) => return,
            Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                tracing::warn!(error = %e, "keeper: protocol error, closing the connection");
                let message = e.to_string();
                let _ = wire::send(
                    stream,
                    wire::ERR,
                    None,
                    &[&wire::len32(message.len()), message.as_bytes()],
                );
                return;
            }
            Err(e) => {
                tracing::debug!(error = %e, "keeper: connection ended");
                return;
            }
        }
    }
}

/// Answers one request.
fn answer(stream: &UnixStream, state: &State, header: Header) -> io::Result<()> {
    let mut body = Body::new(stream, &header);
    if header.fd.is_some() && header.op != wire::PUT {
        return Err(wire::invalid(format!(
            "{} carries an fd: only PUT may",
            wire::op_name(header.op)
        )));
    }
    let outcome = match header.op {
        wire::PUT => {
            let key = key(&mut body)?;
            let announced = match body.u8("PUT fd flag")? {
                0 => false,
                1 => true,
                other => return Err(wire::invalid(format!("PUT fd flag {other} is not 0 or 1"))),
            };
            let blob = body.secret("PUT blob")?;
            body.end()?;
            match (announced, header.fd.is_some()) {
                (true, false) => {
                    return Err(wire::invalid(format!(
                        "PUT {key:?} announces an fd but none arrived"
                    )));
                }
                (false, true) => {
                    return Err(wire::invalid(format!(
                        "PUT {key:?} carries an fd its flag does not announce"
                    )));
                }
                _ => {}
            }
            let bytes = blob.len();
            state.put(&key, header.fd, blob).map(|entries| {
                tracing::debug!(key, entries, bytes, new_fd = announced, "keeper: kept");
            })
        }
        wire::REMOVE => {
            let key = key(&mut body)?;
            body.end()?;
            let (removed, entries) = state.remove(&key);
            if removed {
                tracing::debug!(key, entries, "keeper: released");
            }
            Ok(())
        }
        wire::LIST => {
            body.end()?;
            let all = state.snapshot();
            for (key, entry) in &all {
                wire::send(
                    stream,
                    wire::ENTRY,
                    Some(entry.fd.as_fd()),
                    &[
                        &wire::len32(key.len()),
                        key.as_bytes(),
                        &wire::len32(entry.blob.len()),
                        &entry.blob,
                    ],
                )?;
            }
            tracing::debug!(entries = all.len(), "keeper: listed");
            return wire::send(stream, wire::END, None, &[]);
        }
        other => {
            return Err(wire::invalid(format!(
                "{} is not a request",
                wire::op_name(other)
            )));
        }
    };
    match outcome {
        Ok(()) => wire::send(stream, wire::OK, None, &[]),
        Err(message) => wire::send(
            stream,
            wire::ERR,
            None,
            &[&wire::len32(message.len()), message.as_bytes()],
        ),
    }
}

/// A key field: non-empty UTF-8 of at most [`wire::MAX_KEY`] bytes.
fn key(body: &mut Body<'_>) -> io::Result<String> {
    let key = body.text("key", wire::MAX_KEY)?;
    if key.is_empty() {
        return Err(wire::invalid("empty key"));
    }
    Ok(key)
}

/// Creates the directory (0700) if missing, clears a stale socket, binds
/// under a temporary name and renames the socket into place once its mode
/// is 0600 (it is never reachable with a wider mode).
fn bind(path: &Path) -> Result<UnixListener, KeeperError> {
    let io = |source| KeeperError::Socket {
        path: path.to_owned(),
        source,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io)?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => match UnixStream::connect(path) {
            Ok(_) => {
                return Err(KeeperError::AlreadyRunning {
                    path: path.to_owned(),
                });
            }
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                std::fs::remove_file(path).map_err(io)?;
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(e)),
        },
        Ok(_) => {
            return Err(KeeperError::NotASocket {
                path: path.to_owned(),
            });
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(e)),
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
