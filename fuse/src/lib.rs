//! `secretfs-fuse`: a read-only FUSE file system over a tree of secret
//! files whose contents can change in place while containers read them.
//!
//! It knows nothing of CSI, Kubernetes or vaults. A caller describes a
//! volume ([`VolumeSpec`]: paths, modes, owners, contents or a lazy
//! [`ContentSource`]), mounts it ([`MountedVolume::mount`]), and changes it
//! through the [`Volume`] handle; each change is atomic per file and the
//! kernel's caches are invalidated so the next read sees the new bytes.
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use secretfs_fuse::{Content, FileSpec, MountOptions, MountedVolume, VolumeId, VolumeSpec};
//! use secretfs_secrets::SecretBytes;
//!
//! let runtime = tokio::runtime::Runtime::new()?;
//! let spec = VolumeSpec {
//!     id: VolumeId::new("csi-0123"),
//!     dir_uid: 0,
//!     dir_gid: 2000,
//!     files: vec![FileSpec::new("SECRET_1", 0o640, 0, 2000, Content::bytes(&b"s3cr3t"[..]))?],
//! };
//! let mounted = MountedVolume::mount(spec, "/mnt/secrets".as_ref(), &MountOptions::default(), runtime.handle().clone())?;
//! mounted.volume().replace("SECRET_1", Arc::new(SecretBytes::from_slice(b"rotated")))?;
//! mounted.unmount()?;
//! # Ok(()) }
//! ```

// No unsafe code: the locked, non-dumped mappings of secret bytes live in
// `secretfs-secrets` (`SecretBytes`).
#![forbid(unsafe_code)]

mod adapter;
mod audit;
mod config;
mod core;
mod error;
mod inode;
mod path;
mod relay;
mod spec;
mod tree;
mod volume;
mod wire;

pub use audit::{OpenAudit, OpenEvent, OpenObserver, parse_start_time, start_time};
pub use config::{CachePolicy, MountOptions, ReadMode};
pub use core::{Attr, DirEntry, FsCore, Kind, OpCounters, ReadData, StatFs};
pub use error::FsError;
pub use inode::{ROOT_INO, generation, inode_number};
pub use path::{MAX_NAME_LEN, MAX_PATH_LEN, PathError, VolumePath};
pub use spec::{Content, ContentSource, FileSpec, LoadError, TreeError, VolumeId, VolumeSpec};
pub use tree::FileReads;
pub use volume::{FS_TYPE, MountError, MountedVolume, Released, SessionState, Volume, VolumeError};
