//! `secretfs keeper`: a tiny process that holds the `/dev/fuse` connections
//! of the node plugin's volumes, and one opaque blob per volume (the state
//! the node plugin needs to serve it again), so that the FUSE mounts
//! survive a restart or upgrade of the node plugin. A FUSE mount lives as
//! long as some process holds its `/dev/fuse` fd; the node plugin hands each
//! fd to the keeper when it mounts, and takes duplicates back when it starts.
//!
//! The keeper's memory is locked ([`secretfs_secrets::hygiene::harden`])
//! because the blobs hold secret bytes; they are never logged, and are wiped
//! when replaced, removed or released.
//!
//! # Wire protocol
//!
//! A Unix `SOCK_STREAM` socket (mode 0600; the peer's uid must be the
//! keeper's euid). Every message is a frame:
//!
//! ```text
//! u32 length   little-endian, the number of bytes that follow (op + body),
//!              1 ..= 64 MiB
//! u8  op
//! ..  body     fields; a field is a little-endian u32 length, then bytes
//! ```
//!
//! A frame that carries an fd sends it as `SCM_RIGHTS` ancillary data in the
//! same `sendmsg` as the frame's first bytes; the receiver reads the 5-byte
//! header with `recvmsg` (room for one fd) and the body with plain reads.
//! At most one fd per frame, and only PUT (requests) and ENTRY (answers)
//! carry one.
//!
//! | op     | code | direction      | body                          | fd           |
//! |--------|------|----------------|-------------------------------|--------------|
//! | PUT    | 0x01 | client→keeper  | key, u8 has-fd (0/1), blob    | if has-fd is 1 |
//! | REMOVE | 0x02 | client→keeper  | key                           | no           |
//! | LIST   | 0x03 | client→keeper  | (empty)                       | no           |
//! | OK     | 0x80 | keeper→client  | (empty)                       | no           |
//! | ENTRY  | 0x81 | keeper→client  | key, blob                     | always       |
//! | END    | 0x82 | keeper→client  | (empty)                       | no           |
//! | ERR    | 0x83 | keeper→client  | message (UTF-8)               | no           |
//!
//! PUT answers OK, or ERR when it has no fd and none is kept for its key.
//! REMOVE answers OK (an unknown key too). LIST answers one ENTRY per kept
//! volume, sorted by key, then END. Keys are non-empty UTF-8 of at most
//! 4096 bytes; messages at most 64 KiB. A frame that breaks these rules
//! (length, unknown op, a field running past its frame, bytes left over, an
//! unexpected fd) is answered with ERR and the connection is closed, since
//! the stream can no longer be trusted; other clients are not affected.

mod server;
mod wire;

use std::io;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use zeroize::Zeroizing;

pub use server::{KeeperServer, KeeperStopper};
pub use wire::{MAX_FRAME, MAX_KEY};

/// The default keeper socket.
pub const DEFAULT_SOCKET: &str = "/var/run/secretfs/keeper.sock";

/// Why the keeper could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum KeeperError {
    #[error("keeper socket {path:?}: {source}")]
    Socket {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "{path:?} exists and is not a socket: refusing to replace it (remove it or pass another --socket)"
    )]
    NotASocket { path: PathBuf },
    #[error(
        "a keeper is already serving at {path:?}: stop it first (it holds the volumes' connections)"
    )]
    AlreadyRunning { path: PathBuf },
    #[error("cannot wait for SIGTERM/SIGINT: {0}")]
    Signals(#[source] io::Error),
    #[error("keeper: {0}")]
    Io(#[source] io::Error),
}

/// One kept volume, as [`KeeperClient::list`] returns it.
pub struct Kept {
    pub key: String,
    /// A duplicate of the kept fd (the keeper keeps its own).
    pub fd: OwnedFd,
    pub blob: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for Kept {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kept")
            .field("key", &self.key)
            .field("fd", &self.fd)
            .field("blob", &format_args!("<{} bytes>", self.blob.len()))
            .finish()
    }
}

/// A blocking connection to the keeper (call it from `spawn_blocking`).
/// Every socket read or write gives up after [`Self::DEFAULT_TIMEOUT`]
/// unless [`Self::set_timeout`] says otherwise. After a failure that
/// leaves the stream out of step (a timeout, a protocol error) every
/// further call fails: connect again.
#[derive(Debug)]
pub struct KeeperClient {
    stream: UnixStream,
    timeout: Option<Duration>,
    broken: bool,
}

impl KeeperClient {
    /// How long one socket read or write may wait by default.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

    /// Connects to the keeper at `socket`.
    pub fn connect(socket: &Path) -> io::Result<Self> {
        let stream = UnixStream::connect(socket).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!(
                    "cannot reach the keeper at {socket:?} ({e}): is `secretfs keeper` running?"
                ),
            )
        })?;
        let mut client = Self {
            stream,
            timeout: None,
            broken: false,
        };
        client.set_timeout(Some(Self::DEFAULT_TIMEOUT))?;
        Ok(client)
    }

    /// Bounds every socket read and write (`None`: wait forever).
    pub fn set_timeout(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        self.stream.set_read_timeout(timeout)?;
        self.stream.set_write_timeout(timeout)?;
        self.timeout = timeout;
        Ok(())
    }

    /// Stores (or replaces) the entry `key`. `fd` None keeps the fd already
    /// kept for `key` (an error if there is none). The blob replaces the
    /// kept blob.
    pub fn put(&mut self, key: &str, fd: Option<BorrowedFd<'_>>, blob: &[u8]) -> io::Result<()> {
        check_key(key)?;
        // op, key field, fd flag, blob field
        if 1 + 4 + key.len() + 1 + 4 + blob.len() > MAX_FRAME {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "the blob of {key:?} ({} bytes) is over the keeper's {} MiB frame limit",
                    blob.len(),
                    MAX_FRAME >> 20
                ),
            ));
        }
        self.call(|stream| {
            wire::send(
                stream,
                wire::PUT,
                fd,
                &[
                    &wire::len32(key.len()),
                    key.as_bytes(),
                    &[u8::from(fd.is_some())],
                    &wire::len32(blob.len()),
                    blob,
                ],
            )?;
            expect_ok(stream, "PUT")
        })
    }

    /// Drops the entry `key` (an unknown key is fine): the keeper closes its
    /// fd and wipes its blob.
    pub fn remove(&mut self, key: &str) -> io::Result<()> {
        check_key(key)?;
        self.call(|stream| {
            wire::send(
                stream,
                wire::REMOVE,
                None,
                &[&wire::len32(key.len()), key.as_bytes()],
            )?;
            expect_ok(stream, "REMOVE")
        })
    }

    /// Every kept entry, sorted by key, with a duplicate of its fd (the
    /// keeper keeps its own).
    pub fn list(&mut self) -> io::Result<Vec<Kept>> {
        self.call(|stream| {
            wire::send(stream, wire::LIST, None, &[])?;
            let mut kept = Vec::new();
            loop {
                let header = answer_header(stream, "LIST")?;
                match header.op {
                    wire::END if header.fd.is_none() => {
                        end_empty(stream, &header)?;
                        return Ok(kept);
                    }
                    wire::ENTRY => {
                        let mut body = wire::Body::new(stream, &header);
                        let key = body.text("key", MAX_KEY)?;
                        let blob = body.secret("blob")?;
                        body.end()?;
                        let fd = header.fd.ok_or_else(|| {
                            wire::invalid(format!("the keeper sent {key:?} without its fd"))
                        })?;
                        kept.push(Kept { key, fd, blob });
                    }
                    op => return Err(unexpected(op, "LIST")),
                }
            }
        })
    }

    /// Runs one exchange; a failure other than a refusal (ERR) marks the
    /// connection broken.
    fn call<T>(&mut self, exchange: impl FnOnce(&UnixStream) -> io::Result<T>) -> io::Result<T> {
        if self.broken {
            return Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "an earlier call to the keeper failed mid-way: connect again",
            ));
        }
        exchange(&self.stream).map_err(|e| match e.kind() {
            io::ErrorKind::Other => e,
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
                self.broken = true;
                io::Error::new(
                    io::ErrorKind::TimedOut,
                    match self.timeout {
                        Some(t) => format!("the keeper did not answer within {t:?}"),
                        None => "the keeper did not answer in time".to_owned(),
                    },
                )
            }
            _ => {
                self.broken = true;
                e
            }
        })
    }
}

/// The body of an answer that has none must be empty.
fn end_empty(stream: &UnixStream, header: &wire::Header) -> io::Result<()> {
    wire::Body::new(stream, header).end()
}

fn check_key(key: &str) -> io::Result<()> {
    if key.is_empty() || key.len() > MAX_KEY {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "keeper keys are 1 to {MAX_KEY} bytes, this one has {}",
                key.len()
            ),
        ));
    }
    Ok(())
}

/// The header of the keeper's answer to `request`; ERR becomes an error
/// of kind `Other` carrying the keeper's message.
fn answer_header(stream: &UnixStream, request: &str) -> io::Result<wire::Header> {
    let header = wire::recv_header(stream)?.ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("the keeper closed the connection before answering {request}"),
        )
    })?;
    if header.op != wire::ERR {
        return Ok(header);
    }
    let mut body = wire::Body::new(stream, &header);
    let message = body.text("error message", wire::MAX_MESSAGE)?;
    body.end()?;
    Err(io::Error::other(format!(
        "the keeper refused {request}: {message}"
    )))
}

fn expect_ok(stream: &UnixStream, request: &str) -> io::Result<()> {
    let header = answer_header(stream, request)?;
    match header.op {
        wire::OK if header.fd.is_none() => end_empty(stream, &header),
        op => Err(unexpected(op, request)),
    }
}

fn unexpected(op: u8, request: &str) -> io::Error {
    wire::invalid(format!(
        "the keeper answered {request} with {}",
        wire::op_name(op)
    ))
}
