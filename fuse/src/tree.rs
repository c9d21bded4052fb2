//! The in-memory tree of one volume: inode table, directories implied by
//! file paths, directory modes derived from the files, and the changes the
//! kernel must be told about after each mutation.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::SystemTime;

use futures::future::{BoxFuture, Shared};

use crate::bytes::SecretBytes;
use crate::inode::{ROOT_INO, generation, inode_number};
use crate::spec::{Content, ContentSource, FileSpec, LoadError, TreeError, VolumeId, VolumeSpec};

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

pub(crate) struct FileNode {
    /// The newest contents (what the next `stat` reports).
    pub state: ContentState,
    pub source: Option<Arc<dyn ContentSource>>,
    /// Time of the last content change: `ls -l` and pollers see rotations.
    pub mtime: SystemTime,
    /// Bumped on every content change; see `ContentState::Loading`.
    pub epoch: u64,
    /// Size of the last known contents, kept across an unload so `stat`
    /// stays stable; 0 before the first load.
    pub last_size: u64,
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
}

/// What the kernel must forget after a mutation.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Invalidations {
    /// Directory entries (parent inode, name) that appeared or disappeared.
    pub entries: Vec<(u64, String)>,
    /// Inodes whose attributes, data or listing changed.
    pub inodes: Vec<u64>,
}

pub(crate) struct Tree {
    volume: VolumeId,
    dir_uid: u32,
    dir_gid: u32,
    nodes: HashMap<u64, Node>,
    by_path: HashMap<String, u64>,
    created: SystemTime,
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
            created: now,
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

    /// Every file path, sorted.
    pub fn file_paths(&self) -> Vec<String> {
        let mut paths: Vec<String> = self
            .by_path
            .iter()
            .filter(|(_, ino)| self.nodes.get(ino).is_some_and(|n| !n.is_dir()))
            .map(|(path, _)| path.clone())
            .collect();
        paths.sort();
        paths
    }

    pub fn file_count(&self) -> usize {
        self.nodes.values().filter(|n| !n.is_dir()).count()
    }

    /// Sum of the sizes of the files whose contents are known.
    pub fn total_bytes(&self) -> u64 {
        self.nodes
            .values()
            .map(|n| match &n.kind {
                NodeKind::File(f) => f.last_size,
                NodeKind::Dir { .. } => 0,
            })
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
                    let ino = self.add_node(parent, dir, name.clone(), |generation| Node {
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
        let name = spec.path.file_name().to_owned();
        let (uid, gid, perm) = (spec.uid, spec.gid, spec.mode as u16);
        self.add_node(parent, &path, name.clone(), |generation| Node {
            generation,
            parent,
            perm,
            uid,
            gid,
            kind: NodeKind::File(FileNode {
                state,
                source,
                mtime: now,
                epoch: 0,
                last_size,
            }),
        });
        inval.entries.push((parent, name));
        self.refresh_dir_modes(parent, &mut inval);
        Ok(inval)
    }

    /// Removes a file, and the directories it leaves empty.
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
            let node = self.nodes.remove(&victim).ok_or_else(not_found)?;
            self.by_path.remove(&victim_path);
            let name = victim_path
                .rsplit('/')
                .next()
                .unwrap_or(&victim_path)
                .to_owned();
            let parent = node.parent;
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

    fn add_node(
        &mut self,
        parent: u64,
        path: &str,
        name: String,
        make: impl FnOnce(u64) -> Node,
    ) -> u64 {
        let mut attempt = 0;
        let ino = loop {
            let candidate = inode_number(self.volume.as_str(), path, attempt);
            if !self.nodes.contains_key(&candidate) {
                break candidate;
            }
            attempt += 1;
        };
        let node = make(generation(self.volume.as_str(), path));
        self.nodes.insert(ino, node);
        self.by_path.insert(path.to_owned(), ino);
        if let Some(NodeKind::Dir { children }) = self.nodes.get_mut(&parent).map(|n| &mut n.kind) {
            children.insert(name, ino);
        }
        ino
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
mod tests {
    use super::*;
    use crate::path::PathError;

    fn file(path: &str, mode: u32) -> FileSpec {
        FileSpec::new(path, mode, 0, 0, Content::bytes(path.as_bytes())).unwrap()
    }

    fn spec(files: Vec<FileSpec>) -> VolumeSpec {
        VolumeSpec {
            id: VolumeId::new("vol"),
            dir_uid: 0,
            dir_gid: 2000,
            files,
        }
    }

    fn mode_of(tree: &Tree, path: &str) -> u16 {
        tree.node(tree.ino_of(path).unwrap()).unwrap().perm
    }

    #[test]
    fn directories_follow_the_files_below_them() {
        let tree = Tree::build(spec(vec![
            file("a/x", 0o640),
            file("a/b/y", 0o600),
            file("z", 0o444),
        ]))
        .unwrap();
        assert_eq!(mode_of(&tree, "a/b"), 0o500);
        assert_eq!(mode_of(&tree, "a"), 0o550);
        assert_eq!(mode_of(&tree, ""), 0o555);
        let dir = tree.node(tree.ino_of("a").unwrap()).unwrap();
        assert_eq!((dir.uid, dir.gid), (0, 2000));
    }

    #[test]
    fn empty_root_is_listable() {
        let tree = Tree::build(spec(vec![])).unwrap();
        assert_eq!(mode_of(&tree, ""), 0o555);
        assert_eq!(tree.file_count(), 0);
    }

    #[test]
    fn build_rejects_conflicts_naming_the_path() {
        let err = Tree::build(spec(vec![file("a", 0o644), file("a", 0o600)]))
            .err()
            .unwrap();
        assert_eq!(err, TreeError::Duplicate { path: "a".into() });

        let err = Tree::build(spec(vec![file("a", 0o644), file("a/b", 0o644)]))
            .err()
            .unwrap();
        assert_eq!(
            err,
            TreeError::FileIsDirectory {
                path: "a/b".into(),
                dir: "a".into()
            }
        );
        assert!(err.to_string().contains("\"a/b\""));

        let err = Tree::build(spec(vec![file("k", 0o4755)])).err().unwrap();
        assert_eq!(
            err,
            TreeError::InvalidMode {
                path: "k".into(),
                mode: 0o4755
            }
        );
    }

    #[test]
    fn a_directory_cannot_become_a_file() {
        let mut tree = Tree::build(spec(vec![file("d/f", 0o644)])).unwrap();
        let err = tree
            .insert_file(file("d", 0o644), SystemTime::now())
            .unwrap_err();
        assert!(matches!(err, TreeError::DirectoryIsFile { ref path, .. } if path == "d"));
    }

    #[test]
    fn path_errors_surface_through_file_spec() {
        let err = FileSpec::new("../x", 0o644, 0, 0, Content::bytes(&b""[..])).unwrap_err();
        assert!(matches!(err, PathError::ParentComponent { .. }));
    }

    #[test]
    fn removing_the_last_file_prunes_empty_directories() {
        let mut tree = Tree::build(spec(vec![file("a/b/c", 0o644), file("a/d", 0o600)])).unwrap();
        let a = tree.ino_of("a").unwrap();
        let inval = tree.remove_file("a/b/c").unwrap();
        assert!(tree.ino_of("a/b").is_none());
        assert!(inval.entries.contains(&(a, "b".to_owned())));
        assert_eq!(mode_of(&tree, "a"), 0o500);
        tree.remove_file("a/d").unwrap();
        assert!(tree.ino_of("a").is_none());
        assert_eq!(tree.file_paths(), Vec::<String>::new());
        assert_eq!(
            tree.remove_file("a/d").unwrap_err(),
            TreeError::NotFound { path: "a/d".into() }
        );
    }

    #[test]
    fn inode_numbers_do_not_depend_on_insertion_order() {
        let one = Tree::build(spec(vec![file("b", 0o644), file("a/c", 0o644)])).unwrap();
        let two = Tree::build(spec(vec![file("a/c", 0o644), file("b", 0o644)])).unwrap();
        for path in ["", "a", "a/c", "b"] {
            assert_eq!(one.ino_of(path), two.ino_of(path), "{path}");
        }
    }
}
