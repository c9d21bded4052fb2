//! The file system's behaviour, independent of fuser and of the kernel.
//!
//! Tests drive this directly; the fuser adapter only translates. Lookups,
//! attribute requests and reads are `async` because a file whose contents
//! are not loaded yet is loaded on that first access.
//!
//! Lock order: there is one lock, the tree's `RwLock`. It is never held
//! across an `.await` or while calling into the kernel.
//!
//! # Which version a read answers from
//!
//! Each version of a file is its own inode (see `tree/versions.rs`): a read of
//! an inode answers that version's bytes, which never change, so the kernel's
//! page cache of it can never hold a mix. A lookup answers the name's current
//! version. Only an older version that *follows* the newest (one a bind mount
//! pins, or any in atomic mode) changes in place; its reads and attributes
//! answer the newest contents, moved together before the invalidation that
//! drops the kernel's copy, and with `FUSE_AUTO_INVAL_DATA` every read that
//! starts afterwards asks GETATTR first. In page-cache mode a read of such an
//! inode that is already inside the kernel across the change can combine the
//! old size with the new bytes; in atomic mode every read comes here and
//! answers one version.
//!
//! (Answering from the version last *reported* in a GETATTR instead, so as
//! to match the size an overlapping reader holds, did not make those reads
//! whole, and a READ sent after the invalidation by a reader that checked
//! its attributes before it then put old bytes back into the page cache: a
//! stale read after the replace, about once per 8 stress runs under load.)

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::SystemTime;

use futures::FutureExt;
use secretfs_secrets::SecretBytes;

use crate::error::FsError;
use crate::inode::ROOT_INO;
use crate::spec::{FileSpec, TreeError, VolumeId};
use crate::tree::{ContentState, FileReads, FileVersions, Invalidations, NodeKind, Swap, Tree};

/// Directory or regular file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Directory,
    File,
}

/// Attributes of one inode, as reported by `stat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attr {
    pub ino: u64,
    pub generation: u64,
    pub kind: Kind,
    pub size: u64,
    pub perm: u16,
    pub uid: u32,
    pub gid: u32,
    pub nlink: u32,
    pub mtime: SystemTime,
    pub crtime: SystemTime,
}

/// Bytes answered to a read: a range of one snapshot of the contents, so a
/// read never mixes two versions.
#[derive(Debug)]
pub struct ReadData {
    bytes: Arc<SecretBytes>,
    start: usize,
    end: usize,
}

impl ReadData {
    pub fn as_slice(&self) -> &[u8] {
        &self.bytes.expose()[self.start..self.end]
    }
}

/// One directory entry; `offset` is where the next `readdir` resumes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    pub ino: u64,
    pub kind: Kind,
    pub name: String,
    pub offset: u64,
}

/// `statfs` figures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatFs {
    pub blocks: u64,
    pub files: u64,
    pub block_size: u32,
    pub name_len: u32,
}

/// How many requests of each kind reached the core: a warm read in
/// page-cache mode must not show up here at all.
#[derive(Debug, Default)]
pub struct OpCounters {
    pub lookups: AtomicU64,
    pub getattrs: AtomicU64,
    pub reads: AtomicU64,
    pub readdirs: AtomicU64,
    pub loads: AtomicU64,
    /// Requests answered with an error (ENOENT included).
    pub errors: AtomicU64,
    /// The same errors by operation (they add up to `errors`).
    pub lookup_errors: AtomicU64,
    pub getattr_errors: AtomicU64,
    pub read_errors: AtomicU64,
    pub readdir_errors: AtomicU64,
}

impl OpCounters {
    /// (lookups, getattrs, reads, readdirs, loads) now.
    pub fn snapshot(&self) -> [u64; 5] {
        [
            &self.lookups,
            &self.getattrs,
            &self.reads,
            &self.readdirs,
            &self.loads,
        ]
        .map(|c| c.load(Ordering::Relaxed))
    }
}

/// The core of one volume.
pub struct FsCore {
    tree: RwLock<Tree>,
    counters: OpCounters,
}

impl std::fmt::Debug for FsCore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let tree = self.read_tree();
        f.debug_struct("FsCore")
            .field("volume", tree.volume())
            .field("files", &tree.file_count())
            .finish()
    }
}

impl FsCore {
    pub(crate) fn new(tree: Tree) -> Self {
        Self {
            tree: RwLock::new(tree),
            counters: OpCounters::default(),
        }
    }

    fn read_tree(&self) -> RwLockReadGuard<'_, Tree> {
        self.tree.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write_tree(&self) -> RwLockWriteGuard<'_, Tree> {
        self.tree.write().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn counters(&self) -> &OpCounters {
        &self.counters
    }

    pub fn volume_id(&self) -> VolumeId {
        self.read_tree().volume().clone()
    }

    /// Every file path, sorted.
    pub fn file_paths(&self) -> Vec<String> {
        self.read_tree().file_paths()
    }

    /// Counts a failed request, in total and for its operation.
    fn tally<T>(&self, op_errors: &AtomicU64, result: Result<T, FsError>) -> Result<T, FsError> {
        if result.is_err() {
            self.counters.errors.fetch_add(1, Ordering::Relaxed);
            op_errors.fetch_add(1, Ordering::Relaxed);
        }
        result
    }

    /// Looks `name` up in directory `parent`. A file not loaded yet is
    /// loaded first, so the size reported is always the real one.
    pub async fn lookup(&self, parent: u64, name: &str) -> Result<Attr, FsError> {
        self.counters.lookups.fetch_add(1, Ordering::Relaxed);
        let result = self.lookup_inner(parent, name).await;
        self.tally(&self.counters.lookup_errors, result)
    }

    async fn lookup_inner(&self, parent: u64, name: &str) -> Result<Attr, FsError> {
        // A lookup answers the name's current version. The kernel's
        // reference is counted before the attributes are taken, so a
        // replace meanwhile moves the name instead of changing this version
        // in place (which would give the kernel one size and other bytes).
        // A version that changed while its first contents loaded is looked
        // up again (a few times at most; then the version found is
        // answered, whole).
        let mut tries = 0;
        loop {
            let ino = {
                let mut tree = self.write_tree();
                let dir = tree.node(parent).ok_or(FsError::NotFound)?;
                if !dir.is_dir() {
                    return Err(FsError::NotADirectory);
                }
                let ino = tree.child(parent, name).ok_or(FsError::NotFound)?;
                tree.looked_up(ino);
                ino
            };
            let result = self.report_attr(ino).await;
            tries += 1;
            let mut tree = self.write_tree();
            let moved = tree.child(parent, name) != Some(ino);
            match result {
                Ok(attr) if !moved || tries >= 4 => return Ok(attr),
                Err(err) if !moved || tries >= 4 => {
                    tree.forget(ino, 1);
                    return Err(err);
                }
                _ => {
                    tree.forget(ino, 1);
                }
            }
        }
    }

    /// The kernel dropped `nlookup` references to `ino` (FORGET). An older
    /// version it no longer holds is dropped.
    pub fn forget(&self, ino: u64, nlookup: u64) {
        self.write_tree().forget(ino, nlookup);
    }

    /// Attributes of `ino`; loads a file not loaded yet (see `lookup`).
    /// From now on reads of the file answer from the version reported.
    pub async fn getattr(&self, ino: u64) -> Result<Attr, FsError> {
        self.counters.getattrs.fetch_add(1, Ordering::Relaxed);
        let result = self.report_attr(ino).await;
        self.tally(&self.counters.getattr_errors, result)
    }

    async fn report_attr(&self, ino: u64) -> Result<Attr, FsError> {
        if self.is_file(ino)? {
            self.contents(ino, false).await?;
        }
        self.attr_now(ino)
    }

    /// Up to `size` bytes of `ino` from `offset`, all from one version: the
    /// newest (loaded first if the file is not loaded).
    pub async fn read(&self, ino: u64, offset: u64, size: u32) -> Result<ReadData, FsError> {
        self.counters.reads.fetch_add(1, Ordering::Relaxed);
        let result = self.read_inner(ino, offset, size).await;
        self.tally(&self.counters.read_errors, result)
    }

    async fn read_inner(&self, ino: u64, offset: u64, size: u32) -> Result<ReadData, FsError> {
        let bytes = self.contents(ino, true).await?;
        let len = bytes.len();
        let start = usize::try_from(offset).unwrap_or(usize::MAX).min(len);
        let end = start.saturating_add(size as usize).min(len);
        Ok(ReadData { bytes, start, end })
    }

    /// Entries of directory `ino` from `offset` on (`.` and `..` first).
    pub fn readdir(&self, ino: u64, offset: u64) -> Result<Vec<DirEntry>, FsError> {
        self.counters.readdirs.fetch_add(1, Ordering::Relaxed);
        let result = self.readdir_inner(ino, offset);
        self.tally(&self.counters.readdir_errors, result)
    }

    fn readdir_inner(&self, ino: u64, offset: u64) -> Result<Vec<DirEntry>, FsError> {
        let tree = self.read_tree();
        let node = tree.node(ino).ok_or(FsError::NotFound)?;
        let NodeKind::Dir { children } = &node.kind else {
            return Err(FsError::NotADirectory);
        };
        let dots = [
            (ino, Kind::Directory, "."),
            (node.parent, Kind::Directory, ".."),
        ];
        let named = children.iter().map(|(name, &child)| {
            let kind = match tree.node(child).map(|n| n.is_dir()) {
                Some(true) => Kind::Directory,
                _ => Kind::File,
            };
            (child, kind, name.as_str())
        });
        Ok(dots
            .into_iter()
            .chain(named)
            .enumerate()
            .skip(usize::try_from(offset).unwrap_or(usize::MAX))
            .map(|(index, (ino, kind, name))| DirEntry {
                ino,
                kind,
                name: name.to_owned(),
                offset: index as u64 + 1,
            })
            .collect())
    }

    pub fn statfs(&self) -> StatFs {
        let tree = self.read_tree();
        StatFs {
            blocks: tree.total_bytes().div_ceil(4096),
            files: tree.file_count() as u64,
            block_size: 4096,
            name_len: crate::path::MAX_NAME_LEN as u32,
        }
    }

    fn is_file(&self, ino: u64) -> Result<bool, FsError> {
        let tree = self.read_tree();
        Ok(!tree.node(ino).ok_or(FsError::NotFound)?.is_dir())
    }

    fn attr_now(&self, ino: u64) -> Result<Attr, FsError> {
        let tree = self.read_tree();
        let own = tree.node(ino).ok_or(FsError::NotFound)?;
        // A version that follows the newest reports the newest's attributes
        // under its own number.
        let node = tree
            .answering(ino)
            .and_then(|answering| tree.node(answering))
            .ok_or(FsError::NotFound)?;
        let (kind, size, nlink, mtime) = match &node.kind {
            NodeKind::Dir { children } => {
                let subdirs = children
                    .values()
                    .filter(|c| tree.node(**c).is_some_and(|n| n.is_dir()))
                    .count();
                (Kind::Directory, 0, 2 + subdirs as u32, tree.created())
            }
            NodeKind::File(file) => (Kind::File, file.last_size, 1, file.mtime),
        };
        Ok(Attr {
            ino,
            generation: own.generation,
            kind,
            size,
            perm: node.perm,
            uid: node.uid,
            gid: node.gid,
            nlink,
            mtime,
            crtime: tree.created(),
        })
    }

    /// The current contents of file `ino`, loading them if needed. Only one
    /// load per file runs at a time; concurrent callers share its result.
    /// Never older than the newest: a load that a replace overtook returns
    /// the replaced value (an older one would be answered to readers whose
    /// kernel already holds the new size: stale and cut). `read`: for a
    /// READ, which marks the version answering as read (one atomic load
    /// once it is).
    async fn contents(&self, ino: u64, read: bool) -> Result<Arc<SecretBytes>, FsError> {
        // Which inode answers is decided under each lock taken: a version
        // that follows the newest answers with the current one, which a
        // replace can change at any moment.
        {
            let tree = self.read_tree();
            let answering = tree.answering(ino).ok_or(FsError::NotFound)?;
            match &tree.node(answering).ok_or(FsError::NotFound)?.kind {
                NodeKind::Dir { .. } => return Err(FsError::IsADirectory),
                NodeKind::File(file) => {
                    if let ContentState::Ready(bytes) = &file.state {
                        if read {
                            file.mark_read();
                        }
                        return Ok(bytes.clone());
                    }
                }
            }
        }
        let (ino, epoch, load) = {
            let mut tree = self.write_tree();
            let ino = tree.answering(ino).ok_or(FsError::NotFound)?;
            let node = tree.node_mut(ino).ok_or(FsError::NotFound)?;
            let NodeKind::File(file) = &mut node.kind else {
                return Err(FsError::IsADirectory);
            };
            match &file.state {
                ContentState::Ready(bytes) => {
                    if read {
                        file.mark_read();
                    }
                    return Ok(bytes.clone());
                }
                ContentState::Loading { epoch, future } => (ino, *epoch, future.clone()),
                ContentState::Unloaded => {
                    let Some(source) = file.source.clone() else {
                        return Err(FsError::Load(crate::spec::LoadError::new(
                            "contents were unloaded but the file has no source to reload them from",
                        )));
                    };
                    self.counters.loads.fetch_add(1, Ordering::Relaxed);
                    let future = source.load().shared();
                    file.state = ContentState::Loading {
                        epoch: file.epoch,
                        future: future.clone(),
                    };
                    (ino, file.epoch, future)
                }
            }
        };
        let result = load.await;
        let mut tree = self.write_tree();
        let Some(NodeKind::File(file)) = tree.node_mut(ino).map(|n| &mut n.kind) else {
            return result.map_err(FsError::Load);
        };
        match &file.state {
            ContentState::Loading { epoch: e, .. } if *e == epoch => match &result {
                Ok(bytes) => {
                    file.last_size = bytes.len() as u64;
                    file.state = ContentState::Ready(bytes.clone());
                    if read {
                        file.mark_read();
                    }
                }
                Err(_) => file.state = ContentState::Unloaded,
            },
            // Replaced while loading: the replace's value is the newest.
            ContentState::Ready(newest) => {
                if read {
                    file.mark_read();
                }
                return Ok(newest.clone());
            }
            _ => {}
        }
        result.map_err(FsError::Load)
    }

    /// The newest contents of `path`, if known now (not loading).
    pub fn contents_now(&self, path: &str) -> Option<Arc<SecretBytes>> {
        let tree = self.read_tree();
        match &tree.node(tree.ino_of(path)?)?.kind {
            NodeKind::File(file) => match &file.state {
                ContentState::Ready(bytes) => Some(bytes.clone()),
                _ => None,
            },
            NodeKind::Dir { .. } => None,
        }
    }

    /// Gives `path` new contents (see [`Tree::swap`]).
    pub(crate) fn replace(&self, path: &str, bytes: Arc<SecretBytes>) -> Result<Swap, TreeError> {
        self.write_tree()
            .swap(path, Some(bytes), Some(SystemTime::now()))
    }

    /// Drops the bytes of `path` (they are wiped when no reader holds them);
    /// the next access loads them again through the file's source. A file
    /// not loaded has nothing to drop.
    pub(crate) fn unload(&self, path: &str) -> Result<Option<Swap>, TreeError> {
        let mut tree = self.write_tree();
        let ino = tree.ino_of(path).ok_or_else(|| TreeError::NotFound {
            path: path.to_owned(),
        })?;
        match tree.node(ino).and_then(|n| n.file()) {
            Some(file) if file.source.is_none() => Err(TreeError::NoSource {
                path: path.to_owned(),
            }),
            Some(file) if matches!(file.state, ContentState::Ready(_)) => {
                tree.swap(path, None, None).map(Some)
            }
            Some(_) => Ok(None),
            None => Err(TreeError::NotFound {
                path: path.to_owned(),
            }),
        }
    }

    /// Makes the older version `ino` follow its file's newest contents.
    pub(crate) fn follow(&self, ino: u64) -> bool {
        self.write_tree().follow(ino)
    }

    /// Older versions keep their own bytes (page-cache mode) or follow the
    /// newest (atomic mode).
    pub(crate) fn set_keep_versions(&self, keep: bool) {
        self.write_tree().set_keep_versions(keep);
    }

    /// Whether each file's current contents were read, and when first.
    pub fn reads(&self) -> Vec<FileReads> {
        self.read_tree().reads()
    }

    /// Sets the read records of the files in `recorded` (after a takeover).
    pub fn restore_reads(&self, recorded: &[FileReads]) {
        self.write_tree().restore_reads(recorded);
    }

    pub(crate) fn version_state(&self) -> Vec<FileVersions> {
        self.read_tree().version_state()
    }

    pub(crate) fn adopt(&self, recorded: Option<&[FileVersions]>) -> Invalidations {
        self.write_tree().adopt(recorded)
    }

    pub(crate) fn add(&self, file: FileSpec) -> Result<Invalidations, TreeError> {
        self.write_tree().insert_file(file, SystemTime::now())
    }

    pub(crate) fn remove(&self, path: &str) -> Result<Invalidations, TreeError> {
        self.write_tree().remove_file(path)
    }

    /// The path `ino` is a version of, and whether it is the current
    /// version (for open auditing); `None` for a directory or an unknown
    /// inode.
    pub fn version_of(&self, ino: u64) -> Option<(String, bool)> {
        let tree = self.read_tree();
        let file = tree.node(ino)?.file()?;
        Some((file.path.clone(), tree.ino_of(&file.path) == Some(ino)))
    }

    /// The root inode, for callers that walk the tree.
    pub fn root(&self) -> u64 {
        ROOT_INO
    }
}

#[cfg(test)]
mod tests;
