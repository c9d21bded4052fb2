//! The relay between a kernel FUSE connection and fuser.
//!
//! fuser serves one end of a `SOCK_SEQPACKET` socket pair; the relay
//! copies each request from `/dev/fuse` to it and each answer back, one
//! message per read as the kernel does. Owning that loop is what makes a
//! connection survive a restart of this process (docs/ARCHITECTURE.md,
//! "Restart survival"):
//!
//! - fuser insists on a fresh `FUSE_INIT`, which the kernel sends once per
//!   connection. A process that takes over a live connection replays the
//!   INIT request recorded at mount time into fuser and drops fuser's
//!   answer: the kernel keeps the terms it agreed the first time.
//! - fuser has no way to stop between requests. The relay does: told to
//!   drain, it stops reading from the kernel, waits for the answers of the
//!   requests already handed to fuser, and ends; requests that arrive after
//!   that wait in the kernel's queue for the next server.
//! - It knows which requests are unanswered, so a release reports them.
//!
//! Notifications do not pass through here (see [`crate::wire::Notifier`]).

use std::collections::HashSet;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rustix::event::{EventfdFlags, PollFd, PollFlags, Timespec, eventfd, poll};
use rustix::io::Errno;

use crate::wire;

/// Largest message fuser sends: a READ answer of at most `MAX_READ` bytes
/// (the mount's `max_read`) plus its header. It fits a socket pair's
/// default send buffer, so a `SOCK_SEQPACKET` write never fails with
/// `EMSGSIZE`.
pub(crate) const MAX_READ: usize = 128 * 1024;
const FUSER_MESSAGE_MAX: usize = MAX_READ + 4096;

const RUN: u8 = 0;
const DRAIN: u8 = 1;
const ABANDON: u8 = 2;

/// How a relay ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RelayEnd {
    /// Drained: every request handed to fuser was answered, except
    /// `unanswered` (still pending in the kernel after the deadline).
    Released { unanswered: usize },
    /// Stopped at once, answering nothing more (a simulated crash).
    Abandoned,
    /// The kernel ended the connection (unmounted or aborted).
    Disconnected,
    /// fuser's side closed.
    SessionEnded,
}

pub(crate) struct Relay {
    wake: Arc<OwnedFd>,
    mode: Arc<AtomicU8>,
    drain: Arc<std::sync::Mutex<Duration>>,
    thread: Option<JoinHandle<RelayEnd>>,
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay")
            .field("running", &self.thread.is_some())
            .finish()
    }
}

/// The size a read from `/dev/fuse` needs: the kernel refuses buffers
/// smaller than a WRITE request of `max_write` bytes.
pub(crate) fn kernel_buffer_len(max_write: u32) -> usize {
    (max_write as usize + 4096).max(8192 + 4096)
}

impl Relay {
    /// Starts relaying between `dev` and `sock` (fuser's peer end).
    pub(crate) fn start(
        dev: Arc<OwnedFd>,
        sock: OwnedFd,
        kernel_buffer: usize,
        sessions: usize,
        name: &str,
    ) -> std::io::Result<Self> {
        let wake = Arc::new(eventfd(0, EventfdFlags::CLOEXEC)?);
        let mode = Arc::new(AtomicU8::new(RUN));
        let drain = Arc::new(std::sync::Mutex::new(Duration::ZERO));
        let thread = std::thread::Builder::new().name(name.to_owned()).spawn({
            let (wake, mode, drain) = (wake.clone(), mode.clone(), drain.clone());
            move || {
                let mut relay = Running {
                    dev,
                    sock,
                    wake,
                    mode,
                    drain,
                    in_flight: HashSet::new(),
                    from_kernel: vec![0; kernel_buffer],
                    from_fuser: vec![0; FUSER_MESSAGE_MAX],
                };
                let end = relay.run();
                // End fuser's reader threads the way the kernel would, so
                // they stop quietly instead of on a short read.
                for _ in 0..sessions {
                    let _ = rustix::io::write(&relay.sock, &wire::destroy_request());
                }
                relay.wait_for_destroyed(sessions, Duration::from_secs(1));
                end
            }
        })?;
        Ok(Self {
            wake,
            mode,
            drain,
            thread: Some(thread),
        })
    }

    /// Stops reading from the kernel, waits up to `deadline` for the
    /// answers of requests already read, and ends.
    pub(crate) fn release(mut self, deadline: Duration) -> RelayEnd {
        *self.drain.lock().unwrap_or_else(|e| e.into_inner()) = deadline;
        self.stop(DRAIN)
    }

    /// Ends at once, leaving requests unanswered (as a crash would).
    pub(crate) fn abandon(mut self) -> RelayEnd {
        self.stop(ABANDON)
    }

    /// Lets the relay run on by itself until the kernel ends the
    /// connection (a lazily unmounted volume still in use).
    pub(crate) fn detach(mut self) {
        self.thread.take();
    }

    /// Waits for the relay to end by itself (after an unmount).
    pub(crate) fn join(mut self) -> RelayEnd {
        self.thread
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or(RelayEnd::Disconnected)
    }

    fn stop(&mut self, mode: u8) -> RelayEnd {
        self.mode.store(mode, Ordering::SeqCst);
        let _ = rustix::io::write(self.wake.as_fd(), &1u64.to_ne_bytes());
        self.thread
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or(RelayEnd::Disconnected)
    }
}

struct Running {
    dev: Arc<OwnedFd>,
    sock: OwnedFd,
    wake: Arc<OwnedFd>,
    mode: Arc<AtomicU8>,
    drain: Arc<std::sync::Mutex<Duration>>,
    /// Requests handed to fuser and not yet answered.
    in_flight: HashSet<u64>,
    from_kernel: Vec<u8>,
    from_fuser: Vec<u8>,
}

impl Running {
    fn run(&mut self) -> RelayEnd {
        let mut draining_until: Option<Instant> = None;
        loop {
            if let Some(until) = draining_until
                && (self.in_flight.is_empty() || Instant::now() >= until)
            {
                return RelayEnd::Released {
                    unanswered: self.in_flight.len(),
                };
            }
            let kernel_events = if draining_until.is_some() {
                PollFlags::empty()
            } else {
                PollFlags::IN
            };
            let timeout = draining_until.map(|until| {
                let left = until.saturating_duration_since(Instant::now());
                Timespec::try_from(left).unwrap_or(Timespec {
                    tv_sec: 0,
                    tv_nsec: 1_000_000,
                })
            });
            let (kernel, fuser, woken) = {
                let mut fds = [
                    PollFd::new(self.dev.as_ref(), kernel_events),
                    PollFd::new(&self.sock, PollFlags::IN),
                    PollFd::new(self.wake.as_ref(), PollFlags::IN),
                ];
                match poll(&mut fds, timeout.as_ref()) {
                    Ok(_) => {}
                    Err(Errno::INTR) => continue,
                    Err(e) => {
                        tracing::warn!(error = %e, "FUSE relay: poll failed");
                        return RelayEnd::Disconnected;
                    }
                }
                (fds[0].revents(), fds[1].revents(), fds[2].revents())
            };
            if !woken.is_empty() {
                let mut counter = [0u8; 8];
                let _ = rustix::io::read(self.wake.as_fd(), &mut counter);
                match self.mode.load(Ordering::SeqCst) {
                    ABANDON => return RelayEnd::Abandoned,
                    DRAIN => {
                        let deadline = *self.drain.lock().unwrap_or_else(|e| e.into_inner());
                        draining_until = Some(Instant::now() + deadline);
                    }
                    _ => {}
                }
            }
            if !fuser.is_empty()
                && let Some(end) = self.answer()
            {
                return end;
            }
            if draining_until.is_none()
                && !kernel.is_empty()
                && let Some(end) = self.forward()
            {
                return end;
            }
        }
    }

    /// Reads (and drops) what fuser still sends until it has answered
    /// `sessions` DESTROY requests, so those answers find a reader.
    fn wait_for_destroyed(&mut self, sessions: usize, limit: Duration) {
        let until = Instant::now() + limit;
        let mut answered = 0;
        while answered < sessions {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            let timeout = Timespec::try_from(left).ok();
            let mut fds = [PollFd::new(&self.sock, PollFlags::IN)];
            match poll(&mut fds, timeout.as_ref()) {
                Ok(0) => return,
                Ok(_) => {}
                Err(Errno::INTR) => continue,
                Err(_) => return,
            }
            match rustix::io::read(&self.sock, &mut self.from_fuser) {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if wire::reply_unique(&self.from_fuser[..n]) == Some(wire::DESTROY_UNIQUE) {
                        answered += 1;
                    }
                }
            }
        }
    }

    /// One message from fuser (an answer) to the kernel.
    fn answer(&mut self) -> Option<RelayEnd> {
        let n = match rustix::io::read(&self.sock, &mut self.from_fuser) {
            Ok(0) => return Some(RelayEnd::SessionEnded),
            Ok(n) => n,
            Err(Errno::INTR | Errno::AGAIN) => return None,
            Err(_) => return Some(RelayEnd::SessionEnded),
        };
        let message = &self.from_fuser[..n];
        if let Some(unique) = wire::reply_unique(message) {
            self.in_flight.remove(&unique);
        }
        match rustix::io::write(self.dev.as_fd(), message) {
            // The request was interrupted and is gone: nothing to answer.
            Ok(_) | Err(Errno::NOENT) => None,
            Err(Errno::NODEV) => Some(RelayEnd::Disconnected),
            Err(e) => {
                tracing::warn!(error = %e, "FUSE relay: the kernel refused an answer");
                None
            }
        }
    }

    /// One request from the kernel to fuser.
    fn forward(&mut self) -> Option<RelayEnd> {
        let n = match rustix::io::read(self.dev.as_fd(), &mut self.from_kernel) {
            Ok(n) => n,
            // Interrupted before we read it, or nothing after all.
            Err(Errno::NOENT | Errno::INTR | Errno::AGAIN) => return None,
            Err(Errno::NODEV) => return Some(RelayEnd::Disconnected),
            Err(e) => {
                tracing::warn!(error = %e, "FUSE relay: reading from the kernel failed");
                return Some(RelayEnd::Disconnected);
            }
        };
        let message = &self.from_kernel[..n];
        if let Some((opcode, unique)) = wire::request_id(message)
            && wire::expects_reply(opcode)
        {
            self.in_flight.insert(unique);
        }
        match rustix::io::write(&self.sock, message) {
            Ok(_) => None,
            Err(_) => Some(RelayEnd::SessionEnded),
        }
    }
}
