//! The in-memory tree of one volume: inode table, directories implied by
//! file paths, directory modes derived from the files, and the changes the
//! kernel must be told about after each mutation. How a change of contents
//! gives a file a new version and what becomes of the old one is in
//! `versions.rs`; the record of the versions a process leaves for the next
//! is in `record.rs`.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::future::{BoxFuture, Shared};
use secretfs_secrets::SecretBytes;

use crate::inode::{ROOT_INO, generation, inode_number, version_inode_number};
use crate::spec::{Content, ContentSource, FileSpec, LoadError, TreeError, VolumeId, VolumeSpec};

mod record;
mod versions;

pub(crate) use record::{decode_versions, encode_versions};
pub(crate) use versions::{FileVersions, Swap};

pub(crate) type SharedLoad = Shared<BoxFuture<'static, Result<Arc<SecretBytes>, LoadError>>>;

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

/// Whether a file's current contents were read: since when they are shown
/// (the mount, or the rotation that brought them) and when a read of them
/// first reached the driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileReads {
    pub path: String,
    pub since: SystemTime,
    pub first_read: Option<SystemTime>,
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
