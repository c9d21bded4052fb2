//! `MountedVolume`, the guard that owns a mount: mounting, taking over
//! another process's connection, serving it, releasing and unmounting.

use std::ffi::{CString, OsStr};
use std::fs::OpenOptions;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use fuser::{BackgroundSession, Config, Session, SessionACL};
use rustix::mount::{MountFlags, UnmountFlags};
use tokio::runtime::Handle;

use crate::adapter::FuseAdapter;
use crate::config::{MountOptions, ReadMode};
use crate::relay::{self, Relay, RelayEnd};
use crate::spec::VolumeSpec;
use crate::tree::{decode_versions, encode_versions};
use crate::wire::{self, Notifier};

use super::{FS_TYPE, Link, MountError, Volume};

/// What a process needs, besides the `/dev/fuse` descriptor (and the
/// files' bytes), to take over a live connection: the INIT request the
/// kernel sent at mount time and the answer it got, and which inode
/// numbers the kernel may hold for each file's versions. None of it is
/// secret; all of it is safe to store.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SessionState {
    pub init_request: Vec<u8>,
    pub init_reply: Vec<u8>,
    /// The files' versions, in this crate's own encoding; empty from a
    /// build that recorded none (every file then had one inode).
    pub versions: Vec<u8>,
}

/// How serving a volume ended at [`MountedVolume::release`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Released {
    /// Requests read from the kernel and still unanswered at the deadline:
    /// the next server gets them again only on Linux 6.9+ (`RESEND`).
    pub unanswered: usize,
}

/// The running parts of a mounted volume.
#[derive(Debug)]
struct Serving {
    dev: Arc<OwnedFd>,
    relay: Relay,
    fuser: BackgroundSession,
}

/// A mounted volume. Dropping it unmounts (errors are logged); call
/// [`MountedVolume::unmount`] to see them, or [`MountedVolume::release`]
/// to stop serving and leave the mount to another process.
#[derive(Debug)]
pub struct MountedVolume {
    volume: Volume,
    target: PathBuf,
    session: Option<Serving>,
    state: SessionState,
}

impl MountedVolume {
    /// Validates `spec`, then mounts it read-only at `target` (an existing
    /// directory) with `nosuid,nodev,noexec,default_permissions,allow_other`.
    /// Requests are served on a fuser thread; loads run on `runtime`. Nothing
    /// is mounted unless every step succeeds.
    pub fn mount(
        spec: VolumeSpec,
        target: &Path,
        options: &MountOptions,
        runtime: Handle,
    ) -> Result<Self, MountError> {
        let volume = Volume::new(spec)?;
        Self::mount_volume(volume, target, options, runtime)
    }

    /// Mounts an already built volume.
    pub fn mount_volume(
        volume: Volume,
        target: &Path,
        options: &MountOptions,
        runtime: Handle,
    ) -> Result<Self, MountError> {
        if !target.is_dir() {
            return Err(MountError::TargetNotDirectory {
                path: target.to_owned(),
            });
        }
        // We call mount(2) ourselves instead of letting fuser do it: this
        // gives the real file-system type (`fuse.secretfs`), and is the
        // "mount first, serve later" split that restart survival builds on.
        let dev = OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/fuse")
            .map_err(|source| MountError::DevFuse { source })?;
        let data = format!(
            "fd={},rootmode=40000,user_id=0,group_id=0,default_permissions,allow_other,max_read={}",
            dev.as_raw_fd(),
            relay::MAX_READ
        );
        let data = CString::new(data).map_err(|e| MountError::Mount {
            path: target.to_owned(),
            source: std::io::Error::other(e),
        })?;
        let source_name = options.fs_name.replace([',', ' ', '\n'], "_");
        rustix::mount::mount(
            source_name.as_str(),
            target,
            FS_TYPE,
            MountFlags::RDONLY | MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC,
            data.as_c_str(),
        )
        .map_err(|e| MountError::Mount {
            path: target.to_owned(),
            source: e.into(),
        })?;
        let dev = Arc::new(OwnedFd::from(dev));
        volume
            .core()
            .set_keep_versions(options.read_mode == ReadMode::PageCache);
        let started = read_init(&dev)
            .and_then(|init| serve(&volume, target, dev.clone(), init, None, options, runtime));
        match started {
            Ok((session, state)) => {
                tracing::debug!(target = %target.display(), volume = %volume.id(), "mounted");
                Ok(Self {
                    volume,
                    target: target.to_owned(),
                    session: Some(session),
                    state,
                })
            }
            Err(source) => {
                let _ = force_unmount(target);
                Err(MountError::Session {
                    path: target.to_owned(),
                    source,
                })
            }
        }
    }

    /// Takes over the live connection `dev` of the volume mounted at
    /// `target` by another (possibly dead) process, with the `state` it
    /// recorded. `volume` must be built from the same spec (same volume id
    /// and paths), so every inode the kernel knows keeps its meaning.
    /// Requests that waited in the kernel's queue are answered now; on
    /// Linux 6.9+ so are those the previous process read and never answered.
    pub fn adopt(
        volume: Volume,
        target: &Path,
        dev: OwnedFd,
        state: &SessionState,
        options: &MountOptions,
        runtime: Handle,
    ) -> Result<Self, MountError> {
        let adopt_error = |reason: String| MountError::Adopt {
            path: target.to_owned(),
            reason,
        };
        if wire::request_id(&state.init_request).map(|(op, _)| op) != Some(wire::OP_INIT) {
            return Err(adopt_error("the recorded INIT request is not one".into()));
        }
        let recorded = decode_versions(&state.versions)
            .map_err(|e| adopt_error(format!("the recorded file versions are unreadable ({e})")))?;
        volume
            .core()
            .set_keep_versions(options.read_mode == ReadMode::PageCache);
        // Every inode the kernel may hold keeps a meaning, and every name
        // moves to a version of this process (see `Tree::adopt`).
        let inval = volume.core().adopt(recorded.as_deref());
        let dev = Arc::new(dev);
        let (session, _) = serve(
            &volume,
            target,
            dev,
            state.init_request.clone(),
            Some(&state.init_reply),
            options,
            runtime,
        )
        .map_err(|e| adopt_error(e.to_string()))?;
        let notifier = Notifier::new(session.dev.clone());
        if let Err(e) = notifier.resend() {
            tracing::info!(
                target = %target.display(),
                error = %e,
                "the kernel cannot resend requests (Linux older than 6.9): reads the previous process left unanswered stay blocked"
            );
        }
        // The kernel drops what it cached of the names and of the inodes
        // taken over. On its own thread: an invalidation of a name waits for
        // lookups in progress in its directory, and on a kernel without
        // RESEND a lookup the previous process left unanswered never ends.
        let volume_id = volume.id();
        let spawned = std::thread::Builder::new()
            .name("secretfs-adopt".into())
            .spawn(move || {
                for (parent, name) in &inval.entries {
                    let _ = notifier.inval_entry(*parent, OsStr::new(name));
                }
                for ino in &inval.inodes {
                    let _ = notifier.inval_inode(*ino);
                }
            });
        if let Err(e) = spawned {
            tracing::warn!(volume = %volume_id, error = %e, "cannot start the thread that refreshes the kernel's caches after a takeover");
        }
        tracing::debug!(target = %target.display(), volume = %volume.id(), "adopted");
        Ok(Self {
            volume,
            target: target.to_owned(),
            session: Some(session),
            state: SessionState {
                versions: Vec::new(),
                ..state.clone()
            },
        })
    }

    pub fn volume(&self) -> &Volume {
        &self.volume
    }

    pub fn target(&self) -> &Path {
        &self.target
    }

    /// What another process needs to take this mount over, now (the
    /// versions change with every rotation: take it again after each).
    pub fn session_state(&self) -> SessionState {
        SessionState {
            versions: encode_versions(&self.volume.core().version_state()),
            ..self.state.clone()
        }
    }

    /// The kernel connection, to hand a duplicate to a keeper: the mount
    /// stays alive while any process holds one.
    pub fn connection(&self) -> Option<BorrowedFd<'_>> {
        self.session.as_ref().map(|s| s.dev.as_fd())
    }

    /// Stops serving without unmounting: no new request is read; those
    /// already read are answered (waiting up to `drain`); then the session
    /// ends. Requests that arrive later wait in the kernel until a process
    /// adopts the connection — so someone must hold a duplicate of
    /// [`MountedVolume::connection`], or the mount dies.
    pub fn release(mut self, drain: Duration) -> Released {
        let Some(serving) = self.session.take() else {
            return Released { unanswered: 0 };
        };
        self.volume.set_link(None);
        let end = serving.relay.release(drain);
        let _ = serving.fuser.join();
        let unanswered = match end {
            RelayEnd::Released { unanswered } => unanswered,
            _ => 0,
        };
        tracing::debug!(target = %self.target.display(), unanswered, "released");
        Released { unanswered }
    }

    /// Stops serving at once, answering nothing more and keeping the
    /// mount: what a crash does (for tests of the takeover).
    #[doc(hidden)]
    pub fn abandon(mut self) {
        if let Some(serving) = self.session.take() {
            self.volume.set_link(None);
            serving.relay.abandon();
            // The fuser thread ends when its socket closes, after any load
            // it is waiting for; it is not waited for.
            drop(serving.fuser.guard);
        }
    }

    /// Unmounts. Succeeds if the target is already unmounted.
    pub fn unmount(mut self) -> Result<(), MountError> {
        self.unmount_inner()
    }

    fn unmount_inner(&mut self) -> Result<(), MountError> {
        let Some(serving) = self.session.take() else {
            return Ok(());
        };
        self.volume.set_link(None);
        let unmounted = force_unmount(&self.target).map_err(|source| MountError::Unmount {
            path: self.target.clone(),
            source,
        })?;
        let still_connected = match unmounted {
            Unmounted::Now => false,
            Unmounted::Lazily => true,
            // Unmounted from outside: by `umount` (the connection is gone),
            // or by `umount -l` while files are open (it lives until they
            // close; waiting for the relay would wait for that).
            Unmounted::Elsewhere => connected(&serving.dev),
        };
        if still_connected {
            // Still in use: the kernel keeps serving open files until they
            // close, and the relay and session threads end by themselves.
            serving.relay.detach();
            drop(serving.fuser.guard);
        } else {
            serving.relay.join();
            let _ = serving.fuser.join();
        }
        tracing::debug!(target = %self.target.display(), "unmounted");
        Ok(())
    }
}

impl Drop for MountedVolume {
    fn drop(&mut self) {
        if let Err(err) = self.unmount_inner() {
            tracing::warn!(error = %err, "unmount on drop failed");
        }
    }
}

/// Reads the INIT request the kernel sends on a fresh connection.
fn read_init(dev: &OwnedFd) -> std::io::Result<Vec<u8>> {
    let mut buffer = vec![0u8; relay::kernel_buffer_len(0)];
    let n = loop {
        match rustix::io::read(dev, &mut buffer) {
            Ok(n) => break n,
            Err(rustix::io::Errno::INTR | rustix::io::Errno::NOENT) => continue,
            Err(e) => return Err(e.into()),
        }
    };
    buffer.truncate(n);
    match wire::request_id(&buffer) {
        Some((wire::OP_INIT, _)) => Ok(buffer),
        _ => Err(std::io::Error::other(
            "the kernel's first FUSE request was not INIT",
        )),
    }
}

/// Starts fuser on a socket pair, gives it `init` and relays its answer:
/// to the kernel for a new mount (`recorded` is `None`), or nowhere when
/// taking over a connection whose INIT was answered long ago (`recorded`
/// is that answer; a different one from this build is logged).
fn serve(
    volume: &Volume,
    target: &Path,
    dev: Arc<OwnedFd>,
    init: Vec<u8>,
    recorded: Option<&[u8]>,
    options: &MountOptions,
    runtime: Handle,
) -> std::io::Result<(Serving, SessionState)> {
    use rustix::net::{AddressFamily, SocketFlags, SocketType, socketpair};
    let (ours, theirs) = socketpair(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC,
        None,
    )?;
    rustix::io::write(&ours, &init)?;
    let adapter = FuseAdapter::new(volume.core().clone(), runtime, options);
    let mut config = Config::default();
    config.n_threads = Some(options.threads.max(1));
    let session = Session::from_fd(adapter, theirs, SessionACL::All, config)?;
    let mut reply = vec![0u8; relay::kernel_buffer_len(0)];
    let n = rustix::io::read(&ours, &mut reply)?;
    reply.truncate(n);
    if wire::reply_error(&reply) != Some(0) {
        return Err(std::io::Error::other("fuser refused the INIT request"));
    }
    match recorded {
        None => {
            rustix::io::write(dev.as_fd(), &reply)?;
        }
        Some(recorded) if recorded != reply.as_slice() => {
            tracing::warn!(
                "this build answers INIT differently from the one that mounted the volume; the kernel keeps the first answer"
            );
        }
        Some(_) => {}
    }
    let max_write = wire::init_reply_max_write(recorded.unwrap_or(&reply)).unwrap_or(0);
    // Another process may be waiting on this connection later: never block
    // in a read that a concurrent interrupt emptied.
    rustix::io::ioctl_fionbio(dev.as_fd(), true)?;
    let relay = Relay::start(
        dev.clone(),
        ours,
        relay::kernel_buffer_len(max_write),
        options.threads.max(1),
        "secretfs-relay",
    )?;
    let fuser = match session.spawn() {
        Ok(fuser) => fuser,
        Err(e) => {
            relay.abandon();
            return Err(e);
        }
    };
    volume.set_link(Some(Link {
        notifier: Notifier::new(dev.clone()),
        target: target.to_owned(),
        dev: mount_device(target),
        store: options.read_mode == ReadMode::PageCache,
    }));
    Ok((
        Serving { dev, relay, fuser },
        SessionState {
            init_request: init,
            init_reply: recorded.map_or(reply, <[u8]>::to_vec),
            versions: Vec::new(),
        },
    ))
}

/// The device of the file system mounted at `target`, from the kernel's
/// cache (no request reaches the server).
fn mount_device(target: &Path) -> Option<(u32, u32)> {
    use rustix::fs::{AtFlags, CWD, StatxFlags, statx};
    statx(
        CWD,
        target,
        AtFlags::STATX_DONT_SYNC | AtFlags::NO_AUTOMOUNT,
        StatxFlags::INO,
    )
    .ok()
    .map(|s| (s.stx_dev_major, s.stx_dev_minor))
}

/// How [`force_unmount`] found and left the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unmounted {
    /// Unmounted here; the kernel ended the connection.
    Now,
    /// Busy, so detached here; the connection lives until files close.
    Lazily,
    /// Not mounted there any more: someone else unmounted it.
    Elsewhere,
}

/// Unmounts `target`; falls back to a lazy unmount if it is busy. A target
/// that is not mounted is fine.
fn force_unmount(target: &Path) -> std::io::Result<Unmounted> {
    match rustix::mount::unmount(target, UnmountFlags::empty()) {
        Ok(()) => Ok(Unmounted::Now),
        Err(rustix::io::Errno::BUSY) => {
            rustix::mount::unmount(target, UnmountFlags::DETACH)?;
            Ok(Unmounted::Lazily)
        }
        Err(rustix::io::Errno::INVAL | rustix::io::Errno::NOENT) => Ok(Unmounted::Elsewhere),
        Err(e) => Err(e.into()),
    }
}

/// Whether the kernel still serves the FUSE connection `dev` (a connection
/// the kernel ended polls as an error).
fn connected(dev: &OwnedFd) -> bool {
    use rustix::event::{PollFd, PollFlags, Timespec, poll};
    let mut fds = [PollFd::new(dev, PollFlags::IN)];
    let now = Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    match poll(&mut fds, Some(&now)) {
        Ok(_) => !fds[0]
            .revents()
            .intersects(PollFlags::ERR | PollFlags::HUP | PollFlags::NVAL),
        // Cannot tell: assume it lives, so nothing waits for it.
        Err(_) => true,
    }
}
