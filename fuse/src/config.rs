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

/// How reads reach the bytes: the trade between speed and atomicity.
///
/// Linux updates a cached file's size and drops its cached pages in two
/// steps, and readers of the page cache take no lock against either. So when
/// a file's contents are replaced in place while another process is inside a
/// `read(2)` of it, that read can combine the old bytes with the new size
/// (or the reverse): a torn value. No reply from a FUSE server can prevent
/// it; only bypassing the page cache can (measured: docs/BENCHMARKS.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReadMode {
    /// Every `read(2)` is answered by this process from one version: a read
    /// never returns a mix, whatever runs concurrently. Costs a round trip
    /// per open and per read, and `mmap` of the files is refused.
    #[default]
    Atomic,
    /// Reads are served from the kernel page cache: a warm open+read+close
    /// never leaves the kernel. A read that overlaps a replace of the same
    /// file can return a torn value; reads before or after it cannot.
    PageCache,
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
}

impl Default for MountOptions {
    fn default() -> Self {
        Self {
            fs_name: "secretfs".to_owned(),
            cache: CachePolicy::default(),
            read_mode: ReadMode::default(),
            threads: 1,
        }
    }
}
