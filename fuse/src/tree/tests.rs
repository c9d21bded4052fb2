//! Unit tests of the tree: directory modes, conflicts, pruning, inode
//! numbers and the version record.

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
fn recorded_versions_read_back_and_damaged_records_are_refused() {
    let files = vec![
        FileVersions {
            path: "a/b".into(),
            latest: 7,
            inodes: vec![1 << 40, 99],
        },
        FileVersions {
            path: "c".into(),
            latest: 0,
            inodes: vec![],
        },
    ];
    let bytes = encode_versions(&files);
    assert_eq!(decode_versions(&bytes), Ok(Some(files)));
    assert_eq!(decode_versions(b""), Ok(None), "an older build's record");
    assert_eq!(decode_versions(b"XXXX\0\0\0\0"), Err("unknown format"));
    assert_eq!(decode_versions(&bytes[..bytes.len() - 1]), Err("truncated"));
    let mut longer = bytes.clone();
    longer.push(0);
    assert_eq!(decode_versions(&longer), Err("trailing bytes"));
}

#[test]
fn inode_numbers_do_not_depend_on_insertion_order() {
    let one = Tree::build(spec(vec![file("b", 0o644), file("a/c", 0o644)])).unwrap();
    let two = Tree::build(spec(vec![file("a/c", 0o644), file("b", 0o644)])).unwrap();
    for path in ["", "a", "a/c", "b"] {
        assert_eq!(one.ino_of(path), two.ino_of(path), "{path}");
    }
}
