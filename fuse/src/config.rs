//! How long the kernel may cache what we tell it, and how volumes are
//! mounted. The reasons are part of the contract (see docs/SEMANTICS.md).

use std::time::Duration;

/// Kernel cache policy.
///
/// Every change to a volume goes through [`crate::Volume`], which tells the
/// kernel to drop exactly what changed (`inval_inode` for contents and
/// attributes, `inval_entry` for names). Nothing changes behind the kernel's
/// back, so long time-outs are safe, and they are what keeps warm reads from
/// ever leaving the kernel: a dentry or attribute that expires costs a round
/// trip to this process on the next `open` or `stat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CachePolicy {
    /// How long a name → inode mapping stays valid without a LOOKUP.
    pub entry_ttl: Duration,
    /// How long size, mode and times stay valid without a GETATTR.
    pub attr_ttl: Duration,
}

impl Default for CachePolicy {
    fn default() -> Self {
        // One hour: long enough that a hot file never costs a round trip;
        // short enough that a lost invalidation (which we have never seen,
        // but a kernel bug could cause) heals by itself.
        Self {
            entry_ttl: Duration::from_secs(3600),
            attr_ttl: Duration::from_secs(3600),
        }
    }
}

/// How reads reach the bytes (docs/SEMANTICS.md, "Rotation and read
/// consistency").
///
/// Linux updates a cached file's size and drops its cached pages in two
/// steps, and readers of the page cache take no lock against either: a
/// file whose contents change in place while another process is inside a
/// `read(2)` of it can give that read the old bytes with the new size (or
/// the reverse). So in both modes a rotation gives the file's name a new
/// inode, and a version's inode never changes; what differs is how reads
/// are answered and what an older version does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReadMode {
    /// Reads are served from the kernel page cache: a warm open+read+close
    /// never leaves the kernel, and the first one after a rotation neither
    /// (the new version is handed to the page cache at once). An open by
    /// path reads the newest version, whole; a descriptor or mapping made
    /// before a rotation keeps the version it opened, whole; a bind mount of
    /// a file (`subPath`) follows rotations in place, where a read that
    /// overlaps one can be torn.
    #[default]
    PageCache,
    /// Every `read(2)` is answered by this process from one version, so no
    /// read is ever torn, and descriptors, mappings and bind mounts made
    /// before a rotation follow it. Costs a round trip per open and per
    /// read (tens to hundreds of µs).
    Atomic,
}

/// How a volume is mounted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountOptions {
    /// Source shown by `mount` and `df` (the file-system type is always
    /// `fuse.secretfs`).
    pub fs_name: String,
    pub cache: CachePolicy,
    pub read_mode: ReadMode,
    /// Threads reading requests from the kernel. One is enough: no request
    /// blocks a thread (loads run on the async runtime).
    pub threads: usize,
    /// Opt-in open auditing (see `audit.rs`): OPEN is answered and each
    /// first open of a version by a process is reported here. `None` (the
    /// default): OPEN answers as the read mode says and is never sent again.
    pub audit: Option<crate::audit::OpenAudit>,
}

impl Default for MountOptions {
    fn default() -> Self {
        Self {
            fs_name: "secretfs".to_owned(),
            cache: CachePolicy::default(),
            read_mode: ReadMode::default(),
            threads: 1,
            audit: None,
        }
    }
}
