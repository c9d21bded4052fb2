//! What a caller hands over to build or change a volume.

use std::fmt;
use std::sync::Arc;

use futures::future::BoxFuture;
use secretfs_secrets::SecretBytes;
use thiserror::Error;

use crate::path::{PathError, VolumePath};

/// Identifies a volume; inode numbers are derived from it, so it must be the
/// same for the same volume across restarts (the CSI volume id).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VolumeId(String);

impl VolumeId {
    pub fn new(id: impl Into<String>) -> Self {
        Self(id.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for VolumeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl fmt::Display for VolumeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why loading a file's contents failed. The message is shown to operators
/// (logs, status) and must not contain secret material; readers see `EIO`,
/// or `ENOENT` for [`LoadError::not_found`].
#[derive(Clone, PartialEq, Eq, Error)]
#[error("{message}")]
pub struct LoadError {
    message: Arc<str>,
    not_found: bool,
}

impl LoadError {
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: Arc::from(message.into()),
            not_found: false,
        }
    }

    /// The file's object does not exist (e.g. an optional vault object that
    /// is missing): readers see `ENOENT` instead of `EIO`. The next access
    /// asks again.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self {
            message: Arc::from(message.into()),
            not_found: true,
        }
    }

    /// Whether this is [`LoadError::not_found`].
    pub fn is_not_found(&self) -> bool {
        self.not_found
    }
}

impl fmt::Debug for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LoadError({:?})", &*self.message)
    }
}

/// Loads a file's contents on first access (and again after a failed load
/// or an unload). Implemented by the driver over its shared cache.
pub trait ContentSource: Send + Sync + 'static {
    /// Fetch the current contents. Called at most once at a time per file:
    /// concurrent readers of a file that is loading wait for the same call.
    fn load(&self) -> BoxFuture<'static, Result<Arc<SecretBytes>, LoadError>>;
}

/// Where a file's bytes come from.
#[derive(Clone)]
pub enum Content {
    /// Known now.
    Ready(Arc<SecretBytes>),
    /// Loaded through the source on first access.
    Lazy(Arc<dyn ContentSource>),
}

impl Content {
    /// Contents known now, from plain bytes.
    pub fn bytes(bytes: impl Into<SecretBytes>) -> Self {
        Self::Ready(Arc::new(bytes.into()))
    }
}

impl fmt::Debug for Content {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Ready(bytes) => write!(f, "Ready({bytes:?})"),
            Self::Lazy(_) => f.write_str("Lazy"),
        }
    }
}

/// One file of a volume.
#[derive(Debug, Clone)]
pub struct FileSpec {
    pub path: VolumePath,
    /// Permission bits, `0..=0o777`.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub content: Content,
}

impl FileSpec {
    /// A file with validated `path`, owned by `uid:gid` with `mode`.
    pub fn new(
        path: &str,
        mode: u32,
        uid: u32,
        gid: u32,
        content: Content,
    ) -> Result<Self, PathError> {
        Ok(Self {
            path: VolumePath::parse(path)?,
            mode,
            uid,
            gid,
            content,
        })
    }
}

/// A whole volume: its id, the owner of its directories, and its files.
///
/// Directories are implied by the file paths. A directory's mode follows the
/// files below it: for each of owner, group and other, it is `r-x` when any
/// file below is readable by that class, and `---` otherwise (an empty root
/// is `r-x` for everyone).
#[derive(Debug, Clone)]
pub struct VolumeSpec {
    pub id: VolumeId,
    pub dir_uid: u32,
    pub dir_gid: u32,
    pub files: Vec<FileSpec>,
}

/// Why a volume could not be built or changed. Each names the path.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TreeError {
    #[error(transparent)]
    Path(#[from] PathError),
    #[error("file path {path:?} is listed twice: each file needs its own path")]
    Duplicate { path: String },
    #[error(
        "file path {path:?} needs {dir:?} to be a directory, but {dir:?} is a file: rename one of them"
    )]
    FileIsDirectory { path: String, dir: String },
    #[error(
        "file path {path:?} is a directory of other files ({child:?}): a path cannot be both a file and a directory"
    )]
    DirectoryIsFile { path: String, child: String },
    #[error("file path {path:?} has mode {mode:#o}: modes are permission bits from 0 to 0o777")]
    InvalidMode { path: String, mode: u32 },
    #[error("no file {path:?} in this volume")]
    NotFound { path: String },
    #[error(
        "file {path:?} was given as bytes, with no source to load it again: it cannot be unloaded"
    )]
    NoSource { path: String },
}
