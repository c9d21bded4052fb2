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
//! Each version of a file is its own inode (see `tree/versions.rs`): a read of an
//! inode answers that version's bytes, which never change, so the kernel's
//! page cache of it can never hold a mix. A lookup answers the name's
//! current version. Only an older version that *follows* the newest (one a
//! bind mount pins, or any in atomic mode) changes in place; its reads and
//! attributes answer the newest contents, moved together before the
//! invalidation that drops the kernel's copy, and with
//! `FUSE_AUTO_INVAL_DATA` every read that starts afterwards asks GETATTR
//! first. In page-cache mode a read of such an inode that is already inside
//! the kernel across the change can combine the old size with the new
//! bytes; in atomic mode every read comes here and answers one version.
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
mod tests {
    //! Attributes and reads of the core, with no kernel.

    use std::time::Duration;

    use futures::executor::block_on;

    use super::*;
    use crate::spec::{Content, VolumeSpec};

    const VOLUME: &str = "vol-attrs";

    fn file(path: &str, mode: u32, uid: u32, gid: u32, bytes: &[u8]) -> FileSpec {
        FileSpec::new(path, mode, uid, gid, Content::bytes(bytes)).unwrap()
    }

    fn core(files: Vec<FileSpec>) -> FsCore {
        FsCore::new(
            Tree::build(VolumeSpec {
                id: VolumeId::new(VOLUME),
                dir_uid: 10,
                dir_gid: 20,
                files,
            })
            .unwrap(),
        )
    }

    fn bytes(b: &[u8]) -> Arc<SecretBytes> {
        Arc::new(SecretBytes::from_slice(b))
    }

    /// Attributes of `path`, looked up from the root one name at a time.
    fn stat(core: &FsCore, path: &str) -> Attr {
        let mut attr = block_on(core.getattr(ROOT_INO)).unwrap();
        for name in path.split('/').filter(|n| !n.is_empty()) {
            attr = block_on(core.lookup(attr.ino, name)).unwrap();
        }
        attr
    }

    fn read(core: &FsCore, ino: u64) -> Vec<u8> {
        block_on(core.read(ino, 0, 1 << 20))
            .unwrap()
            .as_slice()
            .to_vec()
    }

    #[test]
    fn files_report_kind_size_owner_mode_one_link_and_their_derived_numbers() {
        let core = core(vec![
            file("SECRET_1", 0o640, 1000, 2000, b"p@ssw0rd"),
            file("empty", 0o400, 0, 0, b""),
        ]);
        let attr = stat(&core, "SECRET_1");
        assert_eq!(attr.kind, Kind::File);
        assert_eq!(attr.size, 8);
        assert_eq!((attr.perm, attr.uid, attr.gid), (0o640, 1000, 2000));
        assert_eq!(attr.nlink, 1);
        assert_eq!(attr.ino, crate::inode::inode_number(VOLUME, "SECRET_1", 0));
        assert_eq!(
            attr.generation,
            crate::inode::generation(VOLUME, "SECRET_1")
        );
        assert_ne!(attr.generation, 0);
        assert_eq!(block_on(core.getattr(attr.ino)).unwrap(), attr);

        let empty = stat(&core, "empty");
        assert_eq!((empty.kind, empty.size, empty.nlink), (Kind::File, 0, 1));
        assert_eq!(empty.generation, crate::inode::generation(VOLUME, "empty"));
    }

    #[test]
    fn directories_report_two_links_plus_one_per_subdirectory() {
        let core = core(vec![
            file("top", 0o644, 0, 0, b"t"),
            file("a/f", 0o640, 0, 0, b"f"),
            file("a/b/x", 0o600, 0, 0, b"x"),
            file("a/c/y", 0o600, 0, 0, b"y"),
            file("a/c/d/z", 0o600, 0, 0, b"z"),
        ]);
        let root = stat(&core, "");
        assert_eq!(
            (root.ino, root.kind, root.size),
            (ROOT_INO, Kind::Directory, 0)
        );
        assert_eq!((root.perm, root.uid, root.gid), (0o555, 10, 20));
        assert_eq!(root.nlink, 3, "root: . and .. plus a");
        assert_eq!(root.generation, 1);
        let nlink = |path| stat(&core, path).nlink;
        assert_eq!(nlink("a"), 4, "a: b and c, the file f does not count");
        assert_eq!(nlink("a/b"), 2);
        assert_eq!(nlink("a/c"), 3);
        let dir = stat(&core, "a/c");
        assert_eq!(dir.kind, Kind::Directory);
        assert_eq!((dir.uid, dir.gid), (10, 20));
        assert_eq!(dir.generation, crate::inode::generation(VOLUME, "a/c"));
        assert_eq!(dir.ino, crate::inode::inode_number(VOLUME, "a/c", 0));
        // Directories keep the volume's creation time.
        assert_eq!(dir.mtime, root.crtime);
        assert_eq!(root.mtime, root.crtime);

        // Adding and removing subdirectories moves the counts.
        core.add(file("a/e/w", 0o600, 0, 0, b"w")).unwrap();
        assert_eq!(nlink("a"), 5);
        core.remove("a/c/d/z").unwrap();
        assert_eq!(nlink("a/c"), 2);
        core.remove("a/c/y").unwrap();
        assert_eq!(nlink("a"), 4, "a/c went with its last file");
        assert_eq!(
            block_on(core.lookup(stat(&core, "a").ino, "c")),
            Err(FsError::NotFound)
        );
    }

    #[test]
    fn a_replace_of_a_looked_up_file_gives_the_name_a_new_inode_and_keeps_the_old_version() {
        let core = core(vec![file("s", 0o600, 7, 8, b"first")]);
        let before = stat(&core, "s");
        assert_eq!(read(&core, before.ino), b"first");
        std::thread::sleep(Duration::from_millis(2));

        let swap = core.replace("s", bytes(b"second, longer")).unwrap();
        let after = stat(&core, "s");
        assert_eq!(swap.moved, Some((ROOT_INO, "s".to_owned())));
        assert_eq!(swap.ino, after.ino);
        assert_ne!(after.ino, before.ino, "a new version is a new inode");
        assert_eq!(
            after.ino,
            crate::inode::version_inode_number(VOLUME, "s", 1, 0)
        );
        assert_eq!(read(&core, after.ino), b"second, longer");
        assert_eq!(after.size, 14);
        assert!(after.mtime > before.mtime, "mtime moves on replace");
        assert_eq!(after.crtime, before.crtime);
        assert_eq!(
            (after.generation, after.kind, after.nlink),
            (before.generation, Kind::File, 1)
        );
        assert_eq!((after.perm, after.uid, after.gid), (0o600, 7, 8));

        // The old version, still held by the kernel, keeps its bytes and
        // attributes: a descriptor opened before reads it whole.
        assert_eq!(swap.kept, vec![before.ino]);
        assert_eq!(read(&core, before.ino), b"first");
        assert_eq!(block_on(core.getattr(before.ino)).unwrap(), before);
        // Until the kernel forgets it.
        core.forget(before.ino, 1);
        assert_eq!(block_on(core.getattr(before.ino)), Err(FsError::NotFound));

        std::thread::sleep(Duration::from_millis(2));
        core.replace("s", bytes(b"3rd")).unwrap();
        let shorter = stat(&core, "s");
        assert_eq!(read(&core, shorter.ino), b"3rd");
        assert_eq!(shorter.size, 3);
        assert!(shorter.mtime > after.mtime);
        // The volume's figures follow the current versions only.
        assert_eq!(core.statfs().blocks, 1);
        assert_eq!(core.statfs().files, 1);

        assert_eq!(
            core.replace("missing", bytes(b"x")),
            Err(TreeError::NotFound {
                path: "missing".to_owned()
            })
        );
    }

    #[test]
    fn a_file_the_kernel_never_looked_up_changes_in_place() {
        let core = core(vec![file("s", 0o644, 0, 0, b"one")]);
        let ino = core.read_tree().ino_of("s").unwrap();
        let swap = core.replace("s", bytes(b"two!")).unwrap();
        assert_eq!(swap.moved, None);
        assert_eq!(swap.ino, ino);
        assert_eq!(stat(&core, "s").ino, ino);
        assert_eq!(read(&core, ino), b"two!");
        // Looked up once and forgotten: in place again.
        core.forget(ino, 1);
        assert_eq!(core.replace("s", bytes(b"3")).unwrap().moved, None);
        assert_eq!(stat(&core, "s").ino, ino);
    }

    #[test]
    fn an_older_version_that_follows_answers_the_newest_under_its_own_number() {
        let core = core(vec![file("d/s", 0o640, 1, 2, b"pinned")]);
        let pinned = stat(&core, "d/s");
        core.replace("d/s", bytes(b"second")).unwrap();
        assert!(core.follow(pinned.ino), "a kept version can follow");
        assert!(!core.follow(pinned.ino), "only once");
        let attr = block_on(core.getattr(pinned.ino)).unwrap();
        assert_eq!((attr.ino, attr.size), (pinned.ino, 6));
        assert_eq!(read(&core, pinned.ino), b"second");
        stat(&core, "d/s");
        let swap = core.replace("d/s", bytes(b"third, longer")).unwrap();
        assert_eq!(
            swap.follows,
            vec![pinned.ino],
            "invalidated at every change"
        );
        assert_eq!(read(&core, pinned.ino), b"third, longer");
        assert_eq!(block_on(core.getattr(pinned.ino)).unwrap().size, 13);
        // Removing the file leaves it the last bytes.
        core.remove("d/s").unwrap();
        assert_eq!(read(&core, pinned.ino), b"third, longer");
        assert_eq!(core.file_paths(), Vec::<String>::new());
    }

    #[test]
    fn in_atomic_mode_older_versions_follow_the_newest() {
        let core = core(vec![file("s", 0o644, 0, 0, b"old")]);
        core.set_keep_versions(false);
        let held = stat(&core, "s");
        let swap = core.replace("s", bytes(b"new")).unwrap();
        assert_eq!(swap.follows, vec![held.ino]);
        assert!(swap.kept.is_empty());
        assert_eq!(read(&core, held.ino), b"new");
    }

    #[test]
    fn a_removed_file_stays_readable_through_a_held_version_until_forgotten() {
        let core = core(vec![file("s", 0o644, 0, 0, b"gone soon")]);
        let held = stat(&core, "s");
        core.remove("s").unwrap();
        assert_eq!(read(&core, held.ino), b"gone soon");
        assert_eq!(block_on(core.lookup(ROOT_INO, "s")), Err(FsError::NotFound));
        core.forget(held.ino, 1);
        assert!(block_on(core.read(held.ino, 0, 10)).is_err());
        // Added again: a new inode, never the old number.
        core.add(file("s", 0o644, 0, 0, b"back")).unwrap();
        let back = stat(&core, "s");
        assert_ne!(back.ino, held.ino);
        assert_eq!(read(&core, back.ino), b"back");
    }

    #[test]
    fn a_process_taking_over_answers_every_recorded_inode_and_moves_every_name() {
        let first = core(vec![
            file("a", 0o644, 0, 0, b"a1"),
            file("b", 0o644, 0, 0, b"b1"),
        ]);
        let a0 = stat(&first, "a");
        first.replace("a", bytes(b"a2")).unwrap();
        let a1 = stat(&first, "a");
        let b0 = stat(&first, "b");
        let recorded =
            crate::tree::decode_versions(&crate::tree::encode_versions(&first.version_state()))
                .unwrap()
                .unwrap();
        assert_eq!(recorded.len(), 2);

        // The next process has the newest bytes only.
        let next = core(vec![
            file("a", 0o644, 0, 0, b"a2"),
            file("b", 0o644, 0, 0, b"b1"),
        ]);
        let inval = next.adopt(Some(&recorded));
        for old in [a0.ino, a1.ino, b0.ino] {
            assert!(inval.inodes.contains(&old), "{old:x} invalidated");
            assert!(block_on(next.getattr(old)).is_ok(), "{old:x} answered");
        }
        assert_eq!(
            read(&next, a0.ino),
            b"a2",
            "taken over with the bytes kept now"
        );
        assert_eq!(read(&next, a1.ino), b"a2");
        assert_eq!(read(&next, b0.ino), b"b1");
        assert_eq!(inval.entries.len(), 2, "every name");
        let a = stat(&next, "a");
        assert!(![a0.ino, a1.ino].contains(&a.ino), "the name moved on");
        assert_eq!(
            a.ino,
            crate::inode::version_inode_number(VOLUME, "a", 1 + 5, 0)
        );
        // Versions a crash may have left unrecorded are answered too.
        let ghost = crate::inode::version_inode_number(VOLUME, "a", 2, 0);
        assert_eq!(read(&next, ghost), b"a2");
        // Taken-over versions go at their first FORGET.
        next.forget(a0.ino, 1);
        assert_eq!(block_on(next.getattr(a0.ino)), Err(FsError::NotFound));

        // From a build that recorded nothing: version 0 was every file's.
        let old = core(vec![file("a", 0o644, 0, 0, b"x")]);
        let v0 = stat(&old, "a").ino;
        let inval = old.adopt(None);
        assert!(inval.inodes.contains(&v0));
        assert_ne!(stat(&old, "a").ino, v0);
        assert_eq!(read(&old, v0), b"x");
    }

    fn first_read(core: &FsCore, path: &str) -> Option<SystemTime> {
        core.reads()
            .into_iter()
            .find(|r| r.path == path)
            .unwrap()
            .first_read
    }

    #[test]
    fn a_read_marks_the_version_it_answers_and_only_a_read_does() {
        struct Source;
        impl crate::spec::ContentSource for Source {
            fn load(
                &self,
            ) -> futures::future::BoxFuture<'static, Result<Arc<SecretBytes>, crate::spec::LoadError>>
            {
                Box::pin(async { Ok(Arc::new(SecretBytes::from_slice(b"lazy"))) })
            }
        }
        let lazy = FileSpec::new("l", 0o644, 0, 0, Content::Lazy(Arc::new(Source))).unwrap();
        let core = core(vec![file("s", 0o644, 0, 0, b"one"), lazy]);
        // Lookups and attributes load and report, but are no read.
        let s = stat(&core, "s");
        let l = stat(&core, "l");
        block_on(core.getattr(l.ino)).unwrap();
        assert_eq!(
            (first_read(&core, "s"), first_read(&core, "l")),
            (None, None)
        );
        assert_eq!(read(&core, l.ino), b"lazy");
        let loaded = first_read(&core, "l").expect("the lazy file was read");
        // An unload keeps the record (same contents); a reload is no read.
        core.unload("l").unwrap();
        assert_eq!(first_read(&core, "l"), Some(loaded));

        // A read of the version a descriptor kept marks that version, not
        // the new one; a version that follows marks the newest.
        core.replace("s", bytes(b"two")).unwrap();
        assert_eq!(read(&core, s.ino), b"one");
        assert_eq!(first_read(&core, "s"), None, "the kept version was read");
        assert!(core.follow(s.ino));
        assert_eq!(read(&core, s.ino), b"two");
        assert!(first_read(&core, "s").is_some(), "it answered the newest");
    }

    #[test]
    fn reads_cut_to_the_offset_and_length_asked() {
        let core = core(vec![file("s", 0o600, 0, 0, b"0123456789")]);
        let ino = stat(&core, "s").ino;
        let slice = |offset, size| {
            block_on(core.read(ino, offset, size))
                .unwrap()
                .as_slice()
                .to_vec()
        };
        assert_eq!(slice(2, 3), b"234");
        assert_eq!(slice(8, 100), b"89");
        assert_eq!(slice(10, 5), b"");
        assert_eq!(slice(u64::MAX, 5), b"");
        assert_eq!(
            block_on(core.read(ROOT_INO, 0, 1)).unwrap_err(),
            FsError::IsADirectory
        );
    }

    /// Reads raced against replaces: each read of the name's current
    /// version answers one whole value, never one older than the last
    /// replace completed before the lookup.
    #[test]
    fn looked_up_reads_racing_replaces_return_whole_values_never_older() {
        fn value(i: usize) -> Vec<u8> {
            let len = 8 + (i * 37) % 300;
            let mut v = format!("{i:06}|").into_bytes();
            v.resize(len, b'a' + (i % 26) as u8);
            v
        }
        fn number(read: &[u8]) -> usize {
            let i: usize = std::str::from_utf8(&read[..6]).unwrap().parse().unwrap();
            assert_eq!(read, value(i).as_slice(), "a mix of two values");
            i
        }
        const REPLACES: usize = 2000;
        let core = Arc::new(core(vec![file("s", 0o600, 0, 0, &value(0))]));
        let completed = Arc::new(AtomicU64::new(0));
        let readers: Vec<_> = (0..4)
            .map(|_| {
                let (core, completed) = (core.clone(), completed.clone());
                std::thread::spawn(move || {
                    let mut reads = 0;
                    loop {
                        let floor = completed.load(Ordering::SeqCst) as usize;
                        let attr = stat(&core, "s");
                        let read = read(&core, attr.ino);
                        let i = number(&read);
                        assert!(i >= floor, "read {i} after {floor} completed");
                        assert_eq!(attr.size, read.len() as u64);
                        core.forget(attr.ino, 1);
                        reads += 1;
                        if floor == REPLACES {
                            return reads;
                        }
                    }
                })
            })
            .collect();
        for i in 1..=REPLACES {
            core.replace("s", bytes(&value(i))).unwrap();
            completed.store(i as u64, Ordering::SeqCst);
        }
        for reader in readers {
            assert!(reader.join().unwrap() > 0);
        }
        let last = stat(&core, "s");
        assert_eq!(number(&read(&core, last.ino)), REPLACES);
        // Every older version was forgotten and dropped.
        assert_eq!(core.version_state()[0].inodes, vec![last.ino]);
    }
}
