//! Errors of the file-system operations, mapped to errno in one place.

use thiserror::Error;

use crate::spec::LoadError;

/// Why a file-system operation failed, as the kernel will hear it.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum FsError {
    #[error("no such entry")]
    NotFound,
    #[error("not a directory")]
    NotADirectory,
    #[error("is a directory")]
    IsADirectory,
    /// The contents could not be loaded; the next access tries again
    /// (`EIO`, or `ENOENT` when the object does not exist).
    #[error("loading the contents failed: {0}")]
    Load(LoadError),
}

impl FsError {
    /// The errno the reader sees.
    pub fn errno(&self) -> i32 {
        match self {
            Self::NotFound => libc::ENOENT,
            Self::NotADirectory => libc::ENOTDIR,
            Self::IsADirectory => libc::EISDIR,
            Self::Load(e) if e.is_not_found() => libc::ENOENT,
            Self::Load(_) => libc::EIO,
        }
    }
}
