//! The core against a reference model, with no kernel: random lookups,
//! listings, reads, replaces, adds and removes over a tiny alphabet of names
//! (so paths collide often), and inodes held the way the kernel holds them
//! (a lookup counted until its FORGET: an open descriptor), which must keep
//! answering the version they were looked up at. Every other lookup is
//! forgotten right after its operation, as the kernel does once nothing
//! holds a file. Shrunk failures are kept below as named `regression_*`
//! tests.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::executor::block_on;
use proptest::prelude::*;
use secretfs_fuse::{
    Content, FileSpec, FsError, Kind, ROOT_INO, Volume, VolumeError, VolumeId, VolumeSpec,
};
use secretfs_secrets::SecretBytes;

#[derive(Debug, Clone)]
enum Op {
    Add(String, Vec<u8>),
    Remove(String),
    Replace(String, Vec<u8>),
    Lookup(String),
    Readdir(String),
    Read(String, u64, u32),
    /// `stat`, then a page-cache style read of the reported version.
    StatThenRead(String),
    /// Looks the file up and keeps it (an open descriptor).
    Hold(String),
    /// Reads a held inode (the n-th, modulo how many are held).
    ReadHeld(usize),
    /// The kernel forgets a held inode.
    Forget(usize),
}

fn name() -> impl Strategy<Value = String> {
    prop_oneof![Just("a"), Just("b"), Just("c")].prop_map(str::to_owned)
}

fn path() -> impl Strategy<Value = String> {
    prop::collection::vec(name(), 1..=3).prop_map(|names| names.join("/"))
}

fn bytes() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..40)
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (path(), bytes()).prop_map(|(p, b)| Op::Add(p, b)),
        path().prop_map(Op::Remove),
        (path(), bytes()).prop_map(|(p, b)| Op::Replace(p, b)),
        path().prop_map(Op::Lookup),
        prop_oneof![Just(String::new()), path()].prop_map(Op::Readdir),
        (path(), 0u64..50, 0u32..50).prop_map(|(p, o, s)| Op::Read(p, o, s)),
        path().prop_map(Op::StatThenRead),
        path().prop_map(Op::Hold),
        any::<usize>().prop_map(Op::ReadHeld),
        any::<usize>().prop_map(Op::Forget),
    ]
}

/// The model: file path → contents. Directories are implied.
#[derive(Default)]
struct Model {
    files: BTreeMap<String, Vec<u8>>,
}

impl Model {
    fn is_dir(&self, path: &str) -> bool {
        path.is_empty()
            || self
                .files
                .keys()
                .any(|f| f.starts_with(&format!("{path}/")))
    }

    fn can_add(&self, path: &str) -> bool {
        !self.files.contains_key(path)
            && !self.is_dir(path)
            && !self
                .files
                .keys()
                .any(|f| path.starts_with(&format!("{f}/")))
    }

    fn children(&self, dir: &str) -> Vec<String> {
        let prefix = if dir.is_empty() {
            String::new()
        } else {
            format!("{dir}/")
        };
        let mut names: Vec<String> = self
            .files
            .keys()
            .filter_map(|f| f.strip_prefix(&prefix))
            .map(|rest| rest.split('/').next().unwrap().to_owned())
            .collect();
        names.dedup();
        names
    }
}

/// Looks `path` up one name at a time; every inode looked up is pushed to
/// `looked_up` (the caller forgets them, or keeps the last).
fn walk_into(
    volume: &Volume,
    path: &str,
    looked_up: &mut Vec<u64>,
) -> Result<(u64, Kind), FsError> {
    let mut ino = ROOT_INO;
    let mut kind = Kind::Directory;
    if path.is_empty() {
        return Ok((ino, kind));
    }
    for name in path.split('/') {
        let attr = block_on(volume.core().lookup(ino, name))?;
        ino = attr.ino;
        kind = attr.kind;
        looked_up.push(ino);
    }
    Ok((ino, kind))
}

/// Looks `path` up and runs `then` on the result; the kernel then forgets
/// every inode looked up.
fn walk<T>(volume: &Volume, path: &str, then: impl FnOnce(Result<(u64, Kind), FsError>) -> T) -> T {
    let mut looked_up = Vec::new();
    let result = walk_into(volume, path, &mut looked_up);
    let out = then(result);
    for ino in looked_up {
        volume.core().forget(ino, 1);
    }
    out
}

fn file(path: &str, bytes: &[u8]) -> FileSpec {
    FileSpec::new(path, 0o644, 0, 0, Content::bytes(bytes)).unwrap()
}

fn run(ops: Vec<Op>) {
    let volume = Volume::new(VolumeSpec {
        id: VolumeId::new("model"),
        dir_uid: 0,
        dir_gid: 0,
        files: vec![],
    })
    .unwrap();
    let mut model = Model::default();
    // Held inodes: (inode, bytes when looked up).
    let mut held: Vec<(u64, Vec<u8>)> = Vec::new();
    for op in ops {
        match op {
            Op::Add(p, b) => {
                let result = volume.add(file(&p, &b));
                assert_eq!(result.is_ok(), model.can_add(&p), "add {p}: {result:?}");
                if result.is_ok() {
                    model.files.insert(p, b);
                }
            }
            Op::Remove(p) => {
                let result = volume.remove(&p);
                assert_eq!(
                    result.is_ok(),
                    model.files.remove(&p).is_some(),
                    "remove {p}"
                );
            }
            Op::Replace(p, b) => {
                let result = volume.replace(&p, Arc::new(SecretBytes::from_slice(&b)));
                match model.files.get_mut(&p) {
                    Some(v) => {
                        assert!(result.is_ok(), "replace {p}: {result:?}");
                        *v = b;
                    }
                    None => assert!(matches!(result, Err(VolumeError::Tree(_)))),
                }
            }
            Op::Lookup(p) => walk(&volume, &p, |found| match (found, model.files.get(&p)) {
                (Ok((ino, Kind::File)), Some(v)) => {
                    let attr = block_on(volume.core().getattr(ino)).unwrap();
                    assert_eq!(attr.size, v.len() as u64, "size of {p}");
                }
                (Ok((_, Kind::Directory)), None) => assert!(model.is_dir(&p), "{p}"),
                (Err(_), None) => assert!(!model.is_dir(&p), "{p} should exist"),
                (got, want) => panic!("lookup {p}: got {got:?}, model {want:?}"),
            }),
            Op::Readdir(p) => {
                let listed = walk(&volume, &p, |found| {
                    found.and_then(|(ino, _)| volume.core().readdir(ino, 0))
                });
                if model.is_dir(&p) {
                    let names: Vec<String> = listed
                        .unwrap()
                        .into_iter()
                        .skip(2)
                        .map(|e| e.name)
                        .collect();
                    assert_eq!(names, model.children(&p), "listing of {p:?}");
                } else {
                    assert!(listed.is_err(), "{p} is not a directory");
                }
            }
            Op::Read(p, offset, size) => {
                let got = walk(&volume, &p, |found| {
                    found
                        .and_then(|(ino, _)| block_on(volume.core().read(ino, offset, size)))
                        .map(|data| data.as_slice().to_vec())
                });
                match model.files.get(&p) {
                    Some(v) => {
                        let start = (offset as usize).min(v.len());
                        let end = (start + size as usize).min(v.len());
                        assert_eq!(got.unwrap().as_slice(), &v[start..end], "read {p}");
                    }
                    None => assert!(got.is_err()),
                }
            }
            Op::StatThenRead(p) => {
                if let Some(v) = model.files.get(&p) {
                    walk(&volume, &p, |found| {
                        let (ino, _) = found.unwrap();
                        let attr = block_on(volume.core().getattr(ino)).unwrap();
                        let data = block_on(volume.core().read(ino, 0, 4096)).unwrap();
                        assert_eq!(attr.size as usize, data.as_slice().len());
                        assert_eq!(data.as_slice(), v.as_slice(), "reported read of {p}");
                    });
                }
            }
            Op::Hold(p) => {
                let mut looked_up = Vec::new();
                let found = walk_into(&volume, &p, &mut looked_up);
                let kept = match (found, model.files.get(&p)) {
                    (Ok((ino, Kind::File)), Some(v)) => {
                        held.push((ino, v.clone()));
                        Some(ino)
                    }
                    _ => None,
                };
                for ino in looked_up {
                    if Some(ino) != kept {
                        volume.core().forget(ino, 1);
                    }
                }
            }
            Op::ReadHeld(n) => {
                if !held.is_empty() {
                    let (ino, v) = &held[n % held.len()];
                    let attr = block_on(volume.core().getattr(*ino)).unwrap();
                    assert_eq!(attr.size, v.len() as u64, "size of held {ino:x}");
                    let data = block_on(volume.core().read(*ino, 0, 4096)).unwrap();
                    assert_eq!(
                        data.as_slice(),
                        v.as_slice(),
                        "held {ino:x} keeps its version"
                    );
                }
            }
            Op::Forget(n) => {
                if !held.is_empty() {
                    let (ino, _) = held.remove(n % held.len());
                    volume.core().forget(ino, 1);
                }
            }
        }
    }
    // Once the kernel forgot them, older versions are gone: only the
    // current version of each file answers.
    let current: Vec<u64> = model
        .files
        .keys()
        .map(|p| walk(&volume, p, |found| found.unwrap().0))
        .collect();
    let released: Vec<u64> = held.drain(..).map(|(ino, _)| ino).collect();
    for ino in &released {
        volume.core().forget(*ino, 1);
    }
    for ino in released {
        if !current.contains(&ino) {
            assert_eq!(
                block_on(volume.core().getattr(ino)).err(),
                Some(FsError::NotFound),
                "forgotten {ino:x} dropped"
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn the_core_behaves_like_the_model(ops in prop::collection::vec(op(), 1..60)) {
        run(ops);
    }
}

/// Concurrent reads of the core during replaces see whole values only.
#[test]
fn reads_during_replaces_return_whole_values() {
    let value = |i: usize| vec![(i % 251) as u8; 1 + (i * 37) % 5000];
    let volume = Volume::new(VolumeSpec {
        id: VolumeId::new("swap"),
        dir_uid: 0,
        dir_gid: 0,
        files: vec![file("s", &value(0))],
    })
    .unwrap();
    let mut looked_up = Vec::new();
    let (ino, _) = walk_into(&volume, "s", &mut looked_up).unwrap();
    let reader = {
        let volume = volume.clone();
        std::thread::spawn(move || {
            for _ in 0..20_000 {
                let data = block_on(volume.core().read(ino, 0, 8192)).unwrap();
                let bytes = data.as_slice();
                assert!(!bytes.is_empty());
                let i = bytes[0];
                assert!(bytes.iter().all(|b| *b == i), "mixed read");
            }
        })
    };
    for i in 1..5_000 {
        volume
            .replace("s", Arc::new(SecretBytes::new(value(i))))
            .unwrap();
    }
    reader.join().unwrap();
}

#[test]
fn regression_add_under_a_removed_directory() {
    run(vec![
        Op::Add("a/b".into(), vec![1]),
        Op::Remove("a/b".into()),
        Op::Add("a".into(), vec![2]),
        Op::Lookup("a".into()),
        Op::Readdir(String::new()),
    ]);
}
