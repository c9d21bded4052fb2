//! The in-memory tree of one volume: inode table, directories implied by
//! file paths, directory modes derived from the files, and the changes the
//! kernel must be told about after each mutation. The record of the
//! versions a process leaves for the next is in `record.rs`.
//!
//! # Versions
//!
//! Each version of a file is an inode of its own. A name points at its
//! file's *current* version; a change of contents that the kernel may have
//! seen gives the name a new inode (a new version number), and the old one
//! is *retired*: the kernel is told the name changed (`inval_entry`), so new
//! opens look the name up again and get the new inode, whose bytes never
//! change afterwards. Nothing a reader of one version's page cache sees can
//! ever be torn by a rotation. A retired version stays answerable for as
//! long as the kernel may hold it (an open descriptor, a mapping, a bind
//! mount): until the kernel FORGETs it. It either keeps its own bytes
//! ([`Role::Kept`]) or answers the file's newest contents
//! ([`Role::Follows`]; see there for when).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::future::{BoxFuture, Shared};
use secretfs_secrets::SecretBytes;

use crate::inode::{ROOT_INO, generation, inode_number, version_inode_number};
use crate::spec::{Content, ContentSource, FileSpec, LoadError, TreeError, VolumeId, VolumeSpec};

mod record;

pub(crate) use record::{decode_versions, encode_versions};

pub(crate) type SharedLoad = Shared<BoxFuture<'static, Result<Arc<SecretBytes>, LoadError>>>;

/// Versions a process taking over a volume treats as possibly known to the
/// kernel beyond the last one recorded (a crash between a change and its
/// record); its own versions start after them.
pub(crate) const GHOST_VERSIONS: u64 = 4;

/// A file's contents at one moment.
pub(crate) enum ContentState {
    Ready(Arc<SecretBytes>),
    Unloaded,
    /// A load is under way; `epoch` tells a finished load whether the file
    /// was replaced or reloaded meanwhile (then its result is dropped).
    Loading {
        epoch: u64,
        future: SharedLoad,
    },
}

/// What a file inode stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    /// The version the file's name points at now.
    Current,
    /// An older version the kernel may still hold (an open descriptor, a
    /// mapping): answered with its own bytes, which never change.
    Kept,
    /// An older version answered with the file's newest contents, changed
    /// in place and invalidated at every change. A version a bind mount pins
    /// (kubelet's `subPath`) has no name the kernel could look up again, so
    /// it follows; so does every older version in atomic mode (reads come to
    /// the driver one at a time there), and one taken over from another
    /// process whose bytes were not kept.
    Follows,
}

pub(crate) struct FileNode {
    /// The file this inode is a version of.
    pub path: String,
    pub role: Role,
    /// This version's contents (`Current` and `Kept`; unused by `Follows`).
    pub state: ContentState,
    pub source: Option<Arc<dyn ContentSource>>,
    /// Time of the last content change: `ls -l` and pollers see rotations.
    pub mtime: SystemTime,
    /// Bumped on every content change; see `ContentState::Loading`.
    pub epoch: u64,
    /// Size of the last known contents, kept across an unload so `stat`
    /// stays stable; 0 before the first load.
    pub last_size: u64,
    /// LOOKUP replies that named this inode, less what the kernel FORGOT:
    /// while above 0 the kernel may hold the inode.
    pub lookups: u64,
    /// Taken over from another process: how often the kernel holds it is
    /// not known, so only a FORGET lets it go.
    pub inherited: bool,
    /// Since when these contents are shown (mount, or the change that
    /// made them), Unix milliseconds; kept across an unload.
    pub shown_since: u64,
    /// When a READ of these contents first reached this process, Unix
    /// milliseconds; 0: never. Set by readers under the tree's read lock.
    pub first_read: AtomicU64,
}

impl FileNode {
    /// Whether the kernel may hold this inode.
    pub fn held(&self) -> bool {
        self.lookups > 0 || self.inherited
    }

    /// Notes a READ of these contents: only the first one writes.
    pub fn mark_read(&self) {
        if self.first_read.load(Ordering::Relaxed) == 0 {
            let now = unix_millis(SystemTime::now()).max(1);
            let _ = self
                .first_read
                .compare_exchange(0, now, Ordering::Relaxed, Ordering::Relaxed);
        }
    }

    /// When these contents were first read, if they were.
    pub fn first_read_at(&self) -> Option<SystemTime> {
        match self.first_read.load(Ordering::Relaxed) {
            0 => None,
            ms => Some(from_unix_millis(ms)),
        }
    }
}

pub(crate) fn unix_millis(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

pub(crate) fn from_unix_millis(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

pub(crate) enum NodeKind {
    Dir { children: BTreeMap<String, u64> },
    File(FileNode),
}

pub(crate) struct Node {
    pub generation: u64,
    pub parent: u64,
    pub perm: u16,
    pub uid: u32,
    pub gid: u32,
    pub kind: NodeKind,
}

impl Node {
    pub fn is_dir(&self) -> bool {
        matches!(self.kind, NodeKind::Dir { .. })
    }

    pub fn file(&self) -> Option<&FileNode> {
        match &self.kind {
            NodeKind::File(file) => Some(file),
            NodeKind::Dir { .. } => None,
        }
    }

    fn file_mut(&mut self) -> Option<&mut FileNode> {
        match &mut self.kind {
            NodeKind::File(file) => Some(file),
            NodeKind::Dir { .. } => None,
        }
    }
}

/// What the kernel must forget after a mutation.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Invalidations {
    /// Directory entries (parent inode, name) that appeared or disappeared.
    pub entries: Vec<(u64, String)>,
    /// Inodes whose attributes, data or listing changed.
    pub inodes: Vec<u64>,
}

/// What changing a file's contents did, for the kernel's caches.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Swap {
    /// The name now points at a new inode: (parent, name) to invalidate.
    /// `None` when the contents changed in place, because the kernel never
    /// held the version they replaced.
    pub moved: Option<(u64, String)>,
    /// The file's current inode after the change.
    pub ino: u64,
    /// Older versions that follow the newest contents: their attributes
    /// and pages must be dropped.
    pub follows: Vec<u64>,
    /// Older versions with bytes of their own that the kernel may still
    /// hold; a bind mount may pin one of them (it should then follow).
    pub kept: Vec<u64>,
}

/// Whether a file's current contents were read: since when they are shown
/// (the mount, or the rotation that brought them) and when a read of them
/// first reached the driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileReads {
    pub path: String,
    pub since: SystemTime,
    pub first_read: Option<SystemTime>,
}

/// The versions of one file path the kernel may know, as recorded for the
/// next process (no secrets).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FileVersions {
    pub path: String,
    /// The highest version number given out for this path.
    pub latest: u64,
    /// Inode numbers of its versions the kernel may hold.
    pub inodes: Vec<u64>,
}

#[derive(Debug, Default)]
struct Versions {
    /// The highest version number given out for the path (kept after the
    /// file is removed, so a file added again gets new numbers).
    latest: u64,
    /// Retired versions still known (`Kept` or `Follows`).
    older: Vec<u64>,
}

pub(crate) struct Tree {
    volume: VolumeId,
    dir_uid: u32,
    dir_gid: u32,
    nodes: HashMap<u64, Node>,
    by_path: HashMap<String, u64>,
    versions: HashMap<String, Versions>,
    created: SystemTime,
    /// Whether retired versions keep their own bytes (page-cache mode) or
    /// follow the newest (atomic mode).
    keep_versions: bool,
}

impl Tree {
    /// Builds a tree from `spec`, checking every path and mode. Files are
    /// inserted in path order so inode probing is deterministic.
    pub fn build(spec: VolumeSpec) -> Result<Self, TreeError> {
        let now = SystemTime::now();
        let mut tree = Tree {
            volume: spec.id,
            dir_uid: spec.dir_uid,
            dir_gid: spec.dir_gid,
            nodes: HashMap::new(),
            by_path: HashMap::new(),
            versions: HashMap::new(),
            created: now,
            keep_versions: true,
        };
        tree.nodes.insert(
            ROOT_INO,
            Node {
                generation: 1,
                parent: ROOT_INO,
                perm: 0o555,
                uid: spec.dir_uid,
                gid: spec.dir_gid,
                kind: NodeKind::Dir {
                    children: BTreeMap::new(),
                },
            },
        );
        tree.by_path.insert(String::new(), ROOT_INO);
        let mut files = spec.files;
        files.sort_by(|a, b| a.path.cmp(&b.path));
        for pair in files.windows(2) {
            if pair[0].path == pair[1].path {
                return Err(TreeError::Duplicate {
                    path: pair[0].path.to_string(),
                });
            }
        }
        for file in files {
            tree.insert_file(file, now)?;
        }
        Ok(tree)
    }

    /// Retired versions keep their own bytes (`true`, the default) or
    /// follow the newest contents (`false`).
    pub fn set_keep_versions(&mut self, keep: bool) {
        self.keep_versions = keep;
    }

    pub fn volume(&self) -> &VolumeId {
        &self.volume
    }

    pub fn created(&self) -> SystemTime {
        self.created
    }

    pub fn node(&self, ino: u64) -> Option<&Node> {
        self.nodes.get(&ino)
    }

    pub fn node_mut(&mut self, ino: u64) -> Option<&mut Node> {
        self.nodes.get_mut(&ino)
    }

    pub fn ino_of(&self, path: &str) -> Option<u64> {
        self.by_path.get(path).copied()
    }

    pub fn child(&self, parent: u64, name: &str) -> Option<u64> {
        match &self.nodes.get(&parent)?.kind {
            NodeKind::Dir { children } => children.get(name).copied(),
            NodeKind::File(_) => None,
        }
    }

    /// The inode whose contents `ino` answers with: itself, or for a
    /// version that follows the newest, its file's current inode.
    pub fn answering(&self, ino: u64) -> Option<u64> {
        let node = self.nodes.get(&ino)?;
        match node.file() {
            Some(file) if file.role == Role::Follows => {
                let current = self.ino_of(&file.path)?;
                (!self.nodes.get(&current)?.is_dir()).then_some(current)
            }
            _ => Some(ino),
        }
    }

    fn is_current_file(&self, ino: u64) -> bool {
        self.nodes
            .get(&ino)
            .and_then(Node::file)
            .is_some_and(|f| f.role == Role::Current)
    }

    /// Every file path, sorted.
    pub fn file_paths(&self) -> Vec<String> {
        let mut paths: Vec<String> = self
            .by_path
            .iter()
            .filter(|(_, ino)| self.is_current_file(**ino))
            .map(|(path, _)| path.clone())
            .collect();
        paths.sort();
        paths
    }

    pub fn file_count(&self) -> usize {
        self.by_path
            .values()
            .filter(|ino| self.is_current_file(**ino))
            .count()
    }

    /// Sum of the sizes of the files whose contents are known.
    pub fn total_bytes(&self) -> u64 {
        self.by_path
            .values()
            .filter_map(|ino| self.nodes.get(ino)?.file())
            .map(|f| f.last_size)
            .sum()
    }

    /// Adds a file (and any missing directories above it).
    pub fn insert_file(
        &mut self,
        spec: FileSpec,
        now: SystemTime,
    ) -> Result<Invalidations, TreeError> {
        let path = spec.path.as_str().to_owned();
        if spec.mode > 0o777 {
            return Err(TreeError::InvalidMode {
                path,
                mode: spec.mode,
            });
        }
        if let Some(&ino) = self.by_path.get(&path) {
            return Err(match &self.nodes[&ino].kind {
                NodeKind::File(_) => TreeError::Duplicate { path },
                NodeKind::Dir { children } => TreeError::DirectoryIsFile {
                    child: format!(
                        "{path}/{}",
                        children.keys().next().cloned().unwrap_or_default()
                    ),
                    path,
                },
            });
        }
        for dir in spec.path.ancestors() {
            if let Some(&ino) = self.by_path.get(dir)
                && !self.nodes[&ino].is_dir()
            {
                return Err(TreeError::FileIsDirectory {
                    path,
                    dir: dir.to_owned(),
                });
            }
        }

        let mut inval = Invalidations::default();
        let mut parent = ROOT_INO;
        let (dir_uid, dir_gid) = (self.dir_uid, self.dir_gid);
        for dir in spec.path.ancestors() {
            parent = match self.by_path.get(dir) {
                Some(&ino) => ino,
                None => {
                    let name = dir.rsplit('/').next().unwrap_or(dir).to_owned();
                    let ino = self.free_number(dir, 0);
                    self.link(ino, parent, dir, name.clone(), |generation| Node {
                        generation,
                        parent,
                        perm: 0,
                        uid: dir_uid,
                        gid: dir_gid,
                        kind: NodeKind::Dir {
                            children: BTreeMap::new(),
                        },
                    });
                    inval.entries.push((parent, name));
                    ino
                }
            };
        }

        let (state, source, last_size) = match spec.content {
            Content::Ready(bytes) => {
                let size = bytes.len() as u64;
                (ContentState::Ready(bytes), None, size)
            }
            Content::Lazy(source) => (ContentState::Unloaded, Some(source), 0),
        };
        // A path seen before (removed, now added again) gets a new version:
        // the kernel may still hold the old one.
        let version = self
            .versions
            .get(&path)
            .map_or(0, |v| v.latest.saturating_add(1));
        self.versions.entry(path.clone()).or_default().latest = version;
        let name = spec.path.file_name().to_owned();
        let (uid, gid, perm) = (spec.uid, spec.gid, spec.mode as u16);
        let ino = self.free_number(&path, version);
        let file_path = path.clone();
        self.link(ino, parent, &path, name.clone(), |generation| Node {
            generation,
            parent,
            perm,
            uid,
            gid,
            kind: NodeKind::File(FileNode {
                path: file_path,
                role: Role::Current,
                state,
                source,
                mtime: now,
                epoch: 0,
                last_size,
                lookups: 0,
                inherited: false,
                shown_since: unix_millis(now),
                first_read: AtomicU64::new(0),
            }),
        });
        inval.entries.push((parent, name));
        self.refresh_dir_modes(parent, &mut inval);
        Ok(inval)
    }

    /// Gives `path` new contents: `Some(bytes)`, or `None` to unload them
    /// (the next access loads them through the file's source). If the
    /// kernel may hold the current version, the name moves to a new inode
    /// and the old one is retired; otherwise the change is made in place.
    /// `now` is the new modification time (`None` keeps it: an unload does
    /// not change the contents).
    pub fn swap(
        &mut self,
        path: &str,
        bytes: Option<Arc<SecretBytes>>,
        now: Option<SystemTime>,
    ) -> Result<Swap, TreeError> {
        let not_found = || TreeError::NotFound {
            path: path.to_owned(),
        };
        let ino = self.ino_of(path).ok_or_else(not_found)?;
        let keep = self.keep_versions;
        let node = self.nodes.get_mut(&ino).ok_or_else(not_found)?;
        let (generation, parent, perm, uid, gid) =
            (node.generation, node.parent, node.perm, node.uid, node.gid);
        let file = node.file_mut().ok_or_else(not_found)?;
        if bytes.is_none() && file.source.is_none() {
            return Err(TreeError::NoSource {
                path: path.to_owned(),
            });
        }
        // New contents are unread from now; an unload keeps the record.
        let (shown_since, first_read) = match (&bytes, now) {
            (Some(_), Some(now)) => (unix_millis(now), 0),
            (Some(_), None) => (unix_millis(SystemTime::now()), 0),
            (None, _) => (file.shown_since, file.first_read.load(Ordering::Relaxed)),
        };
        let (state, last_size) = match bytes {
            Some(bytes) => {
                let size = bytes.len() as u64;
                (ContentState::Ready(bytes), size)
            }
            None => (ContentState::Unloaded, file.last_size),
        };
        let mtime = now.unwrap_or(file.mtime);
        let mut swap = Swap {
            ino,
            ..Swap::default()
        };
        if !file.held() {
            // The kernel never saw this version (or forgot it): in place.
            file.state = state;
            file.last_size = last_size;
            file.mtime = mtime;
            file.epoch += 1;
            file.shown_since = shown_since;
            file.first_read.store(first_read, Ordering::Relaxed);
        } else {
            let source = file.source.clone();
            let epoch = file.epoch + 1;
            // Retire the old version.
            file.role = match (&file.state, keep) {
                (ContentState::Ready(_), true) => Role::Kept,
                _ => Role::Follows,
            };
            if file.role == Role::Follows {
                file.state = ContentState::Unloaded;
            }
            let versions = self.versions.entry(path.to_owned()).or_default();
            versions.older.push(ino);
            versions.latest = versions.latest.saturating_add(1);
            let version = versions.latest;
            let new = self.free_number(path, version);
            let name = path.rsplit('/').next().unwrap_or(path).to_owned();
            self.nodes.insert(
                new,
                Node {
                    generation,
                    parent,
                    perm,
                    uid,
                    gid,
                    kind: NodeKind::File(FileNode {
                        path: path.to_owned(),
                        role: Role::Current,
                        state,
                        source,
                        mtime,
                        epoch,
                        last_size,
                        lookups: 0,
                        inherited: false,
                        shown_since,
                        first_read: AtomicU64::new(first_read),
                    }),
                },
            );
            self.by_path.insert(path.to_owned(), new);
            if let Some(NodeKind::Dir { children }) =
                self.nodes.get_mut(&parent).map(|n| &mut n.kind)
            {
                children.insert(name.clone(), new);
            }
            swap.moved = Some((parent, name));
            swap.ino = new;
        }
        for &old in self.versions.get(path).map_or(&[][..], |v| &v.older) {
            match self.nodes.get(&old).and_then(Node::file) {
                Some(f) if f.role == Role::Follows => swap.follows.push(old),
                Some(f) if f.held() => swap.kept.push(old),
                _ => {}
            }
        }
        Ok(swap)
    }

    /// The kernel dropped `nlookup` references to `ino`. A retired version
    /// it no longer holds is dropped (its bytes are wiped once no read
    /// holds them). Returns whether `ino` was dropped.
    pub fn forget(&mut self, ino: u64, nlookup: u64) -> bool {
        let Some(file) = self.nodes.get_mut(&ino).and_then(Node::file_mut) else {
            return false;
        };
        file.lookups = file.lookups.saturating_sub(nlookup);
        if file.role == Role::Current {
            if file.lookups == 0 {
                file.inherited = false;
            }
            return false;
        }
        // A retired version taken over from another process: the count is
        // not known, and a FORGET of it comes only when the kernel lets it go.
        if file.lookups > 0 && !file.inherited {
            return false;
        }
        let path = file.path.clone();
        self.nodes.remove(&ino);
        if let Some(v) = self.versions.get_mut(&path) {
            v.older.retain(|o| *o != ino);
        }
        true
    }

    /// Makes the retired version `ino` follow its file's newest contents
    /// (a bind mount pins it). Returns whether it changed.
    pub fn follow(&mut self, ino: u64) -> bool {
        match self.nodes.get_mut(&ino).and_then(Node::file_mut) {
            Some(file) if file.role == Role::Kept => {
                file.role = Role::Follows;
                file.state = ContentState::Unloaded;
                true
            }
            _ => false,
        }
    }

    /// Removes a file, and the directories it leaves empty. Versions the
    /// kernel may hold keep the last contents.
    pub fn remove_file(&mut self, path: &str) -> Result<Invalidations, TreeError> {
        let not_found = || TreeError::NotFound {
            path: path.to_owned(),
        };
        let ino = self.by_path.get(path).copied().ok_or_else(not_found)?;
        if self.nodes[&ino].is_dir() {
            return Err(not_found());
        }
        let mut inval = Invalidations::default();
        let mut victim = ino;
        let mut victim_path = path.to_owned();
        loop {
            let parent = self.nodes.get(&victim).ok_or_else(not_found)?.parent;
            self.by_path.remove(&victim_path);
            if victim == ino {
                self.retire_removed(ino);
            } else {
                self.nodes.remove(&victim);
            }
            let name = victim_path
                .rsplit('/')
                .next()
                .unwrap_or(&victim_path)
                .to_owned();
            inval.entries.push((parent, name.clone()));
            let parent_now_empty = match self.nodes.get_mut(&parent).map(|n| &mut n.kind) {
                Some(NodeKind::Dir { children }) => {
                    children.remove(&name);
                    children.is_empty()
                }
                _ => false,
            };
            if parent == ROOT_INO || !parent_now_empty {
                self.refresh_dir_modes(parent, &mut inval);
                return Ok(inval);
            }
            victim = parent;
            victim_path = match victim_path.rfind('/') {
                Some(index) => victim_path[..index].to_owned(),
                None => return Ok(inval),
            };
        }
    }

    /// The current version of a removed file, and those that followed it,
    /// keep its last bytes while the kernel may hold them.
    fn retire_removed(&mut self, ino: u64) {
        let Some(file) = self.nodes.get_mut(&ino).and_then(Node::file_mut) else {
            return;
        };
        let path = file.path.clone();
        let last = match &file.state {
            ContentState::Ready(bytes) => Some(bytes.clone()),
            _ => None,
        };
        if file.held() && last.is_some() {
            file.role = Role::Kept;
            self.versions
                .entry(path.clone())
                .or_default()
                .older
                .push(ino);
        } else {
            self.nodes.remove(&ino);
        }
        let older = self
            .versions
            .get(&path)
            .map(|v| v.older.clone())
            .unwrap_or_default();
        for old in older {
            let Some(file) = self.nodes.get_mut(&old).and_then(Node::file_mut) else {
                continue;
            };
            if file.role == Role::Follows
                && let Some(bytes) = &last
            {
                file.role = Role::Kept;
                file.last_size = bytes.len() as u64;
                file.state = ContentState::Ready(bytes.clone());
            }
        }
    }

    /// Counts a LOOKUP reply that names `ino`.
    pub fn looked_up(&mut self, ino: u64) {
        if let Some(file) = self.nodes.get_mut(&ino).and_then(Node::file_mut) {
            file.lookups += 1;
        }
    }

    /// Whether each file's current contents were read since they were
    /// shown, sorted by path.
    pub fn reads(&self) -> Vec<FileReads> {
        let mut out: Vec<FileReads> = self
            .by_path
            .iter()
            .filter_map(|(path, ino)| {
                let file = self.nodes.get(ino)?.file()?;
                Some(FileReads {
                    path: path.clone(),
                    since: from_unix_millis(file.shown_since),
                    first_read: file.first_read_at(),
                })
            })
            .collect();
        out.sort_by(|a, b| a.path.cmp(&b.path));
        out
    }

    /// Sets what `reads` says of the files named in `recorded` (a previous
    /// process's record); other files are left as they are.
    pub fn restore_reads(&mut self, recorded: &[FileReads]) {
        for r in recorded {
            let Some(ino) = self.ino_of(&r.path) else {
                continue;
            };
            if let Some(file) = self.nodes.get_mut(&ino).and_then(Node::file_mut) {
                file.shown_since = unix_millis(r.since);
                let first = r.first_read.map_or(0, |t| unix_millis(t).max(1));
                file.first_read.store(first, Ordering::Relaxed);
            }
        }
    }

    /// The versions the kernel may know, for the next process.
    pub fn version_state(&self) -> Vec<FileVersions> {
        let mut out: Vec<FileVersions> = self
            .versions
            .iter()
            .filter_map(|(path, v)| {
                let mut inodes: Vec<u64> = self.ino_of(path).into_iter().collect();
                inodes.retain(|ino| self.is_current_file(*ino));
                inodes.extend(v.older.iter().copied());
                (!inodes.is_empty() || self.by_path.contains_key(path)).then(|| FileVersions {
                    path: path.clone(),
                    latest: v.latest,
                    inodes,
                })
            })
            .collect();
        out.sort_by(|a, b| a.path.cmp(&b.path));
        out
    }

    /// Prepares a tree built from the same spec as a volume another process
    /// served, to take over its connection. `recorded` is what that process
    /// recorded ([`Tree::version_state`]); `None` for a build that recorded
    /// nothing (every file then had one inode, version 0).
    ///
    /// Every inode the kernel may hold becomes an older version taken over
    /// (recorded ones, and the [`GHOST_VERSIONS`] after the last recorded,
    /// which a crash may have left unrecorded); it keeps the bytes this
    /// process has for the file now, or follows them if it has none. Every
    /// name moves to a new version after those. The kernel must be told
    /// (returned): every name, and every inode taken over, since what it
    /// cached of them may be of another version than the bytes kept.
    pub fn adopt(&mut self, recorded: Option<&[FileVersions]>) -> Invalidations {
        let mut known: BTreeMap<String, (u64, Vec<u64>)> = BTreeMap::new();
        if let Some(recorded) = recorded {
            for file in recorded {
                known.insert(file.path.clone(), (file.latest, file.inodes.clone()));
            }
        }
        let mut paths: Vec<String> = self.file_paths();
        for path in known.keys() {
            if !self.by_path.contains_key(path) {
                paths.push(path.clone());
            }
        }
        let mut inval = Invalidations::default();
        for path in paths {
            let current = self.ino_of(&path).filter(|i| self.is_current_file(*i));
            let (latest, mut inodes) = match known.remove(&path) {
                Some(found) => found,
                // Not recorded: it has version 0, as the tree was built.
                None => (0, current.into_iter().collect()),
            };
            for version in latest + 1..=latest + GHOST_VERSIONS {
                inodes.push(version_inode_number(
                    self.volume.as_str(),
                    &path,
                    version,
                    0,
                ));
            }
            let version = latest + GHOST_VERSIONS + 1;
            // The current inode moves to its new number.
            let template = current.and_then(|ino| self.nodes.remove(&ino));
            let renumbered = template.map(|node| {
                let new = self.free_number_except(&path, version, &inodes);
                self.nodes.insert(new, node);
                self.by_path.insert(path.clone(), new);
                let (parent, name) = (
                    self.nodes[&new].parent,
                    path.rsplit('/').next().unwrap_or(&path).to_owned(),
                );
                if let Some(NodeKind::Dir { children }) =
                    self.nodes.get_mut(&parent).map(|n| &mut n.kind)
                {
                    children.insert(name.clone(), new);
                }
                inval.entries.push((parent, name));
                new
            });
            let versions = self.versions.entry(path.clone()).or_default();
            versions.latest = version;
            let snapshot = renumbered.and_then(|new| {
                let node = &self.nodes[&new];
                let file = node.file()?;
                let bytes = match &file.state {
                    ContentState::Ready(bytes) => Some(bytes.clone()),
                    _ => None,
                };
                Some((
                    node.generation,
                    node.parent,
                    node.perm,
                    node.uid,
                    node.gid,
                    file.mtime,
                    bytes,
                ))
            });
            for ino in inodes {
                if ino <= ROOT_INO || self.nodes.contains_key(&ino) {
                    continue;
                }
                let (generation, parent, perm, uid, gid, mtime, bytes) =
                    snapshot.clone().unwrap_or((
                        generation(self.volume.as_str(), &path),
                        ROOT_INO,
                        0,
                        0,
                        0,
                        self.created,
                        None,
                    ));
                let (role, state, last_size) = match bytes {
                    Some(bytes) => {
                        let size = bytes.len() as u64;
                        (Role::Kept, ContentState::Ready(bytes), size)
                    }
                    None => (Role::Follows, ContentState::Unloaded, 0),
                };
                self.nodes.insert(
                    ino,
                    Node {
                        generation,
                        parent,
                        perm,
                        uid,
                        gid,
                        kind: NodeKind::File(FileNode {
                            path: path.clone(),
                            role,
                            state,
                            source: None,
                            mtime,
                            epoch: 0,
                            last_size,
                            lookups: 0,
                            inherited: true,
                            shown_since: unix_millis(mtime),
                            first_read: AtomicU64::new(0),
                        }),
                    },
                );
                self.versions
                    .entry(path.clone())
                    .or_default()
                    .older
                    .push(ino);
                inval.inodes.push(ino);
            }
            if let Some(new) = renumbered {
                inval.inodes.push(new);
            }
        }
        inval
    }

    /// The first free inode number for version `version` of `path`.
    fn free_number(&self, path: &str, version: u64) -> u64 {
        self.free_number_except(path, version, &[])
    }

    fn free_number_except(&self, path: &str, version: u64, taken: &[u64]) -> u64 {
        let mut attempt = 0;
        loop {
            let candidate = if version == 0 {
                inode_number(self.volume.as_str(), path, attempt)
            } else {
                version_inode_number(self.volume.as_str(), path, version, attempt)
            };
            if !self.nodes.contains_key(&candidate) && !taken.contains(&candidate) {
                return candidate;
            }
            attempt += 1;
        }
    }

    /// Inserts `ino` for `path` under `parent` with name `name`.
    fn link(
        &mut self,
        ino: u64,
        parent: u64,
        path: &str,
        name: String,
        make: impl FnOnce(u64) -> Node,
    ) {
        let node = make(generation(self.volume.as_str(), path));
        self.nodes.insert(ino, node);
        self.by_path.insert(path.to_owned(), ino);
        if let Some(NodeKind::Dir { children }) = self.nodes.get_mut(&parent).map(|n| &mut n.kind) {
            children.insert(name, ino);
        }
    }

    /// Recomputes the mode of `dir` and its ancestors; records the ones that
    /// changed (and `dir` itself, whose listing changed) for invalidation.
    fn refresh_dir_modes(&mut self, dir: u64, inval: &mut Invalidations) {
        inval.inodes.push(dir);
        let mut current = dir;
        loop {
            let perm = self.derived_dir_mode(current);
            let Some(node) = self.nodes.get_mut(&current) else {
                return;
            };
            if node.perm != perm {
                node.perm = perm;
                if !inval.inodes.contains(&current) {
                    inval.inodes.push(current);
                }
            }
            if current == ROOT_INO {
                return;
            }
            current = node.parent;
        }
    }

    fn derived_dir_mode(&self, dir: u64) -> u16 {
        let Some(NodeKind::Dir { children }) = self.nodes.get(&dir).map(|n| &n.kind) else {
            return 0;
        };
        if dir == ROOT_INO && children.is_empty() {
            return 0o555;
        }
        let readable = children
            .values()
            .filter_map(|ino| self.nodes.get(ino))
            .fold(0u16, |acc, child| acc | (child.perm & 0o444));
        // r for a class implies r-x for that class.
        readable | (readable >> 2)
    }
}

#[cfg(test)]
mod tests;
