//! `Volume`: the handle through which a volume's files change while it is
//! mounted, and the errors of changing and mounting a volume.
//! `MountedVolume`, the guard that owns the mount, is in `mounted.rs`; how
//! bind mounts of a volume's files are found, in `mountinfo.rs`.

use std::ffi::OsStr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};

use secretfs_secrets::SecretBytes;
use thiserror::Error;

use crate::core::FsCore;
use crate::relay;
use crate::spec::{FileSpec, TreeError, VolumeId, VolumeSpec};
use crate::tree::{FileReads, Invalidations, Swap, Tree};
use crate::wire::Notifier;

mod mounted;
mod mountinfo;

pub use mounted::{MountedVolume, Released, SessionState};
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
