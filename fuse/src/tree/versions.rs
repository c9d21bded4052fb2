//! The versions of each file: how a change of contents moves a name to a
//! new inode and retires the old one, how the kernel's FORGET drops
//! retired versions, and how a process taking over a volume adopts the
//! versions another one left ([`FileVersions`]).
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

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use secretfs_secrets::SecretBytes;

use super::{ContentState, FileNode, Invalidations, Node, NodeKind, Role, Tree, unix_millis};
use crate::inode::{ROOT_INO, generation, version_inode_number};
use crate::spec::TreeError;

/// Versions a process taking over a volume treats as possibly known to the
/// kernel beyond the last one recorded (a crash between a change and its
/// record); its own versions start after them.
pub(crate) const GHOST_VERSIONS: u64 = 4;

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

impl Tree {
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

    /// The current version of a removed file, and those that followed it,
    /// keep its last bytes while the kernel may hold them.
    pub(super) fn retire_removed(&mut self, ino: u64) {
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
}
