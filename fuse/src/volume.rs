//! `Volume`: the handle through which a volume's files change while it is
//! mounted, and `MountedVolume`, the guard that owns the mount.

use std::ffi::{CString, OsStr};
use std::fs::OpenOptions;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use fuser::{BackgroundSession, Config, INodeNo, Notifier, Session, SessionACL};
use rustix::mount::{MountFlags, UnmountFlags};
use thiserror::Error;
use tokio::runtime::Handle;

use crate::adapter::FuseAdapter;
use crate::bytes::SecretBytes;
use crate::config::MountOptions;
use crate::core::FsCore;
use crate::spec::{FileSpec, TreeError, VolumeId, VolumeSpec};
use crate::tree::{Invalidations, Tree};

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
    notifier: Mutex<Option<Notifier>>,
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
            .field("mounted", &self.notifier().is_some())
            .finish()
    }
}

impl Volume {
    /// Builds an unmounted volume, checking every path and mode.
    pub fn new(spec: VolumeSpec) -> Result<Self, TreeError> {
        Ok(Self {
            inner: Arc::new(VolumeInner {
                core: Arc::new(FsCore::new(Tree::build(spec)?)),
                notifier: Mutex::new(None),
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

    /// The newest contents of the file at `path`, if known now.
    pub fn contents(&self, path: &str) -> Option<Arc<SecretBytes>> {
        self.inner.core.contents_now(path)
    }

    /// Replaces the contents of the file at `path`.
    pub fn replace(&self, path: &str, bytes: Arc<SecretBytes>) -> Result<(), VolumeError> {
        let ino = self.inner.core.replace(path, bytes)?;
        self.invalidate(
            path,
            &Invalidations {
                entries: Vec::new(),
                inodes: vec![ino],
            },
        )
    }

    /// Forgets the bytes of a lazily loaded file; the next access loads
    /// them again. Meant for cache eviction: a changed value must come
    /// through [`Volume::replace`].
    pub fn unload(&self, path: &str) -> Result<(), VolumeError> {
        let ino = self.inner.core.unload(path)?;
        self.invalidate(
            path,
            &Invalidations {
                entries: Vec::new(),
                inodes: vec![ino],
            },
        )
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

    fn notifier(&self) -> Option<Notifier> {
        self.inner
            .notifier
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn set_notifier(&self, notifier: Option<Notifier>) {
        *self
            .inner
            .notifier
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = notifier;
    }

    fn invalidate(&self, path: &str, inval: &Invalidations) -> Result<(), VolumeError> {
        let Some(notifier) = self.notifier() else {
            return Ok(());
        };
        let failed = |source| VolumeError::Invalidate {
            path: path.to_owned(),
            source,
        };
        for (parent, name) in &inval.entries {
            notifier
                .inval_entry(INodeNo(*parent), OsStr::new(name))
                .map_err(failed)?;
        }
        for ino in &inval.inodes {
            // Offset 0, length 0: attributes and every cached page.
            notifier.inval_inode(INodeNo(*ino), 0, 0).map_err(failed)?;
        }
        Ok(())
    }
}

/// A mounted volume. Dropping it unmounts (errors are logged); call
/// [`MountedVolume::unmount`] to see them.
#[derive(Debug)]
pub struct MountedVolume {
    volume: Volume,
    target: PathBuf,
    session: Option<BackgroundSession>,
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
            "fd={},rootmode=40000,user_id=0,group_id=0,default_permissions,allow_other",
            dev.as_raw_fd()
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

        let adapter = FuseAdapter::new(volume.core().clone(), runtime, options);
        let mut config = Config::default();
        config.n_threads = Some(options.threads.max(1));
        let started =
            Session::from_fd(adapter, dev.into(), SessionACL::All, config).and_then(|session| {
                let notifier = session.notifier();
                session.spawn().map(|bg| (bg, notifier))
            });
        let (session, notifier) = match started {
            Ok(ok) => ok,
            Err(source) => {
                let _ = force_unmount(target);
                return Err(MountError::Session {
                    path: target.to_owned(),
                    source,
                });
            }
        };
        volume.set_notifier(Some(notifier));
        tracing::debug!(target = %target.display(), volume = %volume.id(), "mounted");
        Ok(Self {
            volume,
            target: target.to_owned(),
            session: Some(session),
        })
    }

    pub fn volume(&self) -> &Volume {
        &self.volume
    }

    pub fn target(&self) -> &Path {
        &self.target
    }

    /// Unmounts. Succeeds if the target is already unmounted.
    pub fn unmount(mut self) -> Result<(), MountError> {
        self.unmount_inner()
    }

    fn unmount_inner(&mut self) -> Result<(), MountError> {
        let Some(session) = self.session.take() else {
            return Ok(());
        };
        self.volume.set_notifier(None);
        let lazily = force_unmount(&self.target).map_err(|source| MountError::Unmount {
            path: self.target.clone(),
            source,
        })?;
        if lazily {
            // Still in use: the kernel keeps serving open files until they
            // close, and the session thread ends by itself then.
            drop(session.guard);
        } else {
            let _ = session.join();
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

/// Unmounts `target`; falls back to a lazy unmount if it is busy. Returns
/// whether the unmount was lazy. A target that is not mounted is fine.
fn force_unmount(target: &Path) -> std::io::Result<bool> {
    match rustix::mount::unmount(target, UnmountFlags::empty()) {
        Ok(()) => Ok(false),
        Err(rustix::io::Errno::BUSY) => {
            rustix::mount::unmount(target, UnmountFlags::DETACH)?;
            Ok(true)
        }
        Err(rustix::io::Errno::INVAL | rustix::io::Errno::NOENT) => Ok(false),
        Err(e) => Err(e.into()),
    }
}
