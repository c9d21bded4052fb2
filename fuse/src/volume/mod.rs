//! `Volume`: the handle through which a volume's files change while it is
//! mounted, and `MountedVolume`, the guard that owns the mount.
//! How bind mounts of a volume's files are found is in `mountinfo.rs`.

use std::ffi::{CString, OsStr};
use std::fs::OpenOptions;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use fuser::{BackgroundSession, Config, Session, SessionACL};
use rustix::mount::{MountFlags, UnmountFlags};
use secretfs_secrets::SecretBytes;
use thiserror::Error;
use tokio::runtime::Handle;

use crate::adapter::FuseAdapter;
use crate::config::{MountOptions, ReadMode};
use crate::core::FsCore;
use crate::relay::{self, Relay, RelayEnd};
use crate::spec::{FileSpec, TreeError, VolumeId, VolumeSpec};
use crate::tree::{FileReads, Invalidations, Swap, Tree, decode_versions, encode_versions};
use crate::wire::{self, Notifier};

mod mountinfo;

use mountinfo::pinned_by_bind_mounts;

/// The file-system type shown in `/proc/mounts`.
pub const FS_TYPE: &str = "fuse.secretfs";

/// Why a change to a volume failed.
#[derive(Debug, Error)]
pub enum VolumeError {
    #[error(transparent)]
    Tree(#[from] TreeError),
    /// The change was made, but the kernel may serve the old contents or
    /// listing until its cache times out.
    #[error("changed {path:?}, but telling the kernel to drop its cached copy failed: {source}")]
    Invalidate {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// Why mounting or unmounting failed.
#[derive(Debug, Error)]
pub enum MountError {
    #[error(transparent)]
    Tree(#[from] TreeError),
    #[error("mount target {path:?} is not an existing directory: create it first")]
    TargetNotDirectory { path: PathBuf },
    #[error(
        "cannot open /dev/fuse ({source}): the node needs the fuse module and the driver needs access to /dev/fuse"
    )]
    DevFuse {
        #[source]
        source: std::io::Error,
    },
    #[error("mount(2) of {path:?} failed: {source}")]
    Mount {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the FUSE session for {path:?} did not start: {source}")]
    Session {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot take over the FUSE connection of {path:?}: {reason}")]
    Adopt { path: PathBuf, reason: String },
    #[error("unmounting {path:?} failed: {source}")]
    Unmount {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

struct VolumeInner {
    core: Arc<FsCore>,
    /// Present while mounted. Cleared at unmount so the handle does not
    /// keep the /dev/fuse connection open.
    link: Mutex<Option<Link>>,
}

/// What a mounted volume's changes need to reach the kernel.
#[derive(Debug, Clone)]
struct Link {
    notifier: Notifier,
    /// Where the volume is mounted (in this process's mount namespace).
    target: PathBuf,
    /// The mount's device (major, minor): bind mounts of its files show it.
    dev: Option<(u32, u32)>,
    /// Page-cache mode: a new version's bytes after its first page are
    /// handed to the kernel's page cache as soon as its name moved to it.
    store: bool,
}

/// A volume's tree. Cheap to clone; all clones see the same files.
///
/// Changes are atomic per file: a reader gets all of the old bytes or all of
/// the new ones. After each change the kernel is told to drop what it cached.
/// Do not call these methods from a thread that answers FUSE requests of the
/// same volume: an invalidation may wait for a read in progress.
#[derive(Clone)]
pub struct Volume {
    inner: Arc<VolumeInner>,
}

impl std::fmt::Debug for Volume {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Volume")
            .field("core", &self.inner.core)
            .field("mounted", &self.link().is_some())
            .finish()
    }
}

impl Volume {
    /// Builds an unmounted volume, checking every path and mode.
    pub fn new(spec: VolumeSpec) -> Result<Self, TreeError> {
        Ok(Self {
            inner: Arc::new(VolumeInner {
                core: Arc::new(FsCore::new(Tree::build(spec)?)),
                link: Mutex::new(None),
            }),
        })
    }

    pub fn id(&self) -> VolumeId {
        self.inner.core.volume_id()
    }

    /// The core, for driving the file system without a kernel.
    pub fn core(&self) -> &Arc<FsCore> {
        &self.inner.core
    }

    /// Every file path, sorted.
    pub fn file_paths(&self) -> Vec<String> {
        self.inner.core.file_paths()
    }

    /// For every file, sorted by path: since when its current contents are
    /// shown (the mount, or the change that brought them) and when a read
    /// of them first reached this process. In page-cache mode only the
    /// first read of each version comes here (later ones are served by the
    /// kernel); in atomic mode every read does. Read by a process that took
    /// the volume over: what [`Volume::restore_reads`] set, then its own.
    pub fn reads(&self) -> Vec<FileReads> {
        self.inner.core.reads()
    }

    /// Sets the read records of the files `recorded` names (what another
    /// process's [`Volume::reads`] said), e.g. before a takeover.
    pub fn restore_reads(&self, recorded: &[FileReads]) {
        self.inner.core.restore_reads(recorded);
    }

    /// The newest contents of the file at `path`, if known now.
    pub fn contents(&self, path: &str) -> Option<Arc<SecretBytes>> {
        self.inner.core.contents_now(path)
    }

    /// Replaces the contents of the file at `path`.
    ///
    /// If the kernel may hold the file's current version, the name moves to
    /// a new inode with the new bytes (new opens see them, whole), the old
    /// version stays as it was for descriptors and mappings that hold it,
    /// and a bind mount of the file (kubelet's `subPath`) follows the new
    /// bytes in place. The kernel then looks the name up before this
    /// returns and, in page-cache mode, gets the new bytes after the first
    /// page: the first read of the new version (from offset 0) reaches this
    /// process with one request for one page, which is how
    /// [`Volume::reads`] sees it. Returns once the kernel was told.
    pub fn replace(&self, path: &str, bytes: Arc<SecretBytes>) -> Result<(), VolumeError> {
        let swap = self.inner.core.replace(path, bytes.clone())?;
        self.after_swap(path, &swap, Some(&bytes))
    }

    /// Forgets the bytes of a lazily loaded file; the next access loads
    /// them again. Meant for cache eviction: a changed value must come
    /// through [`Volume::replace`].
    pub fn unload(&self, path: &str) -> Result<(), VolumeError> {
        match self.inner.core.unload(path)? {
            Some(swap) => self.after_swap(path, &swap, None),
            None => Ok(()),
        }
    }

    /// Adds a file (creating the directories above it).
    pub fn add(&self, file: FileSpec) -> Result<(), VolumeError> {
        let path = file.path.to_string();
        let inval = self.inner.core.add(file)?;
        self.invalidate(&path, &inval)
    }

    /// Removes a file (and the directories it leaves empty).
    pub fn remove(&self, path: &str) -> Result<(), VolumeError> {
        let inval = self.inner.core.remove(path)?;
        self.invalidate(path, &inval)
    }

    fn link(&self) -> Option<Link> {
        self.inner
            .link
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn set_link(&self, link: Option<Link>) {
        *self
            .inner
            .link
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = link;
    }

    fn invalidate(&self, path: &str, inval: &Invalidations) -> Result<(), VolumeError> {
        let Some(link) = self.link() else {
            return Ok(());
        };
        let failed = |source| VolumeError::Invalidate {
            path: path.to_owned(),
            source,
        };
        for (parent, name) in &inval.entries {
            link.notifier
                .inval_entry(*parent, OsStr::new(name))
                .map_err(failed)?;
        }
        for ino in &inval.inodes {
            // Offset 0, length 0: attributes and every cached page.
            link.notifier.inval_inode(*ino).map_err(failed)?;
        }
        Ok(())
    }

    /// Tells the kernel what a change of `path`'s contents did; `bytes`
    /// are the new contents, if known.
    fn after_swap(
        &self,
        path: &str,
        swap: &Swap,
        bytes: Option<&Arc<SecretBytes>>,
    ) -> Result<(), VolumeError> {
        let Some(link) = self.link() else {
            return Ok(());
        };
        let failed = |source| VolumeError::Invalidate {
            path: path.to_owned(),
            source,
        };
        // New opens look the name up again and get the new inode. (The
        // kernel holds the directory locked while a lookup in it waits for
        // its answer, so an answer naming the old inode cannot land after
        // this and stay.)
        if let Some((parent, name)) = &swap.moved {
            link.notifier
                .inval_entry(*parent, OsStr::new(name))
                .map_err(failed)?;
        }
        for ino in &swap.follows {
            link.notifier.inval_inode(*ino).map_err(failed)?;
        }
        if !swap.kept.is_empty() {
            self.follow_bind_mounts(&link, path, &swap.kept)
                .map_err(failed)?;
        }
        // (Not after an unload: a lookup would load the file again.)
        if let (Some(_), Some(bytes)) = (&swap.moved, bytes) {
            self.warm(&link, path, swap.ino, bytes);
        }
        Ok(())
    }

    /// Older versions of `path` that a bind mount pins (kubelet's `subPath`
    /// bind-mounts the file itself) have no name the kernel could look up
    /// again: they follow the newest contents from now on. Found in this
    /// process's mount table, so the mounts must be visible here (kubelet's
    /// are, under a pods directory mounted with `Bidirectional` or
    /// `HostToContainer` propagation); a descriptor or mapping is never
    /// mistaken for one.
    fn follow_bind_mounts(&self, link: &Link, path: &str, kept: &[u64]) -> std::io::Result<()> {
        let Some(dev) = link.dev else {
            return Ok(());
        };
        for ino in pinned_by_bind_mounts(dev, kept) {
            if self.inner.core.follow(ino) {
                tracing::debug!(file = %path, "a bind mount pins an older version: it follows the newest");
                link.notifier.inval_inode(ino)?;
            }
        }
        Ok(())
    }

    /// Makes the kernel know the name's new inode now, so the next open
    /// needs no LOOKUP, and in page-cache mode hands it the new bytes after
    /// the first page (`NOTIFY_STORE`): the first read of the version then
    /// makes one request, a READ of that one page, which this process
    /// records ([`Volume::reads`]); everything else is already in the page
    /// cache. Best effort: a reader that comes first asks for what it needs.
    fn warm(&self, link: &Link, path: &str, ino: u64, bytes: &Arc<SecretBytes>) {
        // A `stat` of the path looks the name up (and the directories'
        // attributes that the name's invalidation dropped).
        match std::fs::symlink_metadata(link.target.join(path)) {
            Ok(meta) if std::os::unix::fs::MetadataExt::ino(&meta) == ino => {}
            // Changed again meanwhile, or gone: the next reader asks.
            _ => return,
        }
        if link.store {
            // Whole pages from the second on (MAX_READ is a multiple of the
            // page size): page 0 stays for the READ that shows the first read.
            let bytes = bytes.expose();
            let first = secretfs_secrets::page_size().min(bytes.len());
            for (index, chunk) in bytes[first..].chunks(relay::MAX_READ).enumerate() {
                let offset = (first + index * relay::MAX_READ) as u64;
                if let Err(e) = link.notifier.store(ino, offset, chunk) {
                    tracing::debug!(file = %path, error = %e, "handing a new version to the page cache failed; the next read asks for it");
                    return;
                }
            }
        }
    }
}

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
