//! A plan: the files a volume will show, each tied to one vault object.
//!
//! Paths follow the upstream driver's atomic writer rules (`validatePath` in
//! `pkg/util/fileutil/atomic_writer.go`, plus its `filepath.Clean(p) == p`
//! check), so a SecretProviderClass that upstream accepts is accepted here and
//! one that upstream rejects is rejected with an error naming the path:
//! - not empty and relative;
//! - no `..` element, and not starting with `..` (the writer's own `..data`
//!   names live there);
//! - already clean: no empty, `.` or trailing elements;
//! - each name at most 255 bytes, the path at most 4096 bytes;
//! - no two files with the same path, and no file that is also a directory of
//!   another file (`a` and `a/b`).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use super::ErrorKind;

/// Longest accepted path, in bytes (`maxPathLength` upstream).
pub const MAX_PATH_LEN: usize = 4096;
/// Longest accepted file name (one path element), in bytes.
pub const MAX_FILE_NAME_LEN: usize = 255;

/// Permission bits of a file (at most `0o777`).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FileMode(u32);

impl FileMode {
    /// The driver's default, `0644` (upstream sends `permission: "420"`).
    pub const DEFAULT: FileMode = FileMode(0o644);

    /// `None` when `bits` has anything beyond the permission bits `0o777`.
    pub const fn new(bits: u32) -> Option<FileMode> {
        if bits & !0o777 == 0 {
            Some(FileMode(bits))
        } else {
            None
        }
    }

    /// The permission bits.
    pub const fn bits(self) -> u32 {
        self.0
    }
}

impl Default for FileMode {
    fn default() -> Self {
        FileMode::DEFAULT
    }
}

impl fmt::Debug for FileMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FileMode({:#05o})", self.0)
    }
}

impl fmt::Display for FileMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04o}", self.0)
    }
}

/// One file of a plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedFile {
    /// Path relative to the volume root, validated by [`validate_relative_path`].
    pub path: String,
    /// Permission bits.
    pub mode: FileMode,
    /// The object id, e.g. `secret/db-pass` or `secret/db-pass/1` (with
    /// version history); it names the object in errors and in
    /// `SecretProviderClassPodStatus`.
    pub object_id: String,
    /// Whether the mount fails without this file. Version-history slots past
    /// the first are not required: an object may have fewer versions than asked.
    pub required: bool,
}

/// A path that the atomic writer would refuse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// The path is empty.
    #[error("file path must not be empty")]
    Empty,
    /// The path starts with `/`.
    #[error("file path {path:?} must be relative (it must not start with '/')")]
    Absolute {
        /// The path.
        path: String,
    },
    /// Longer than [`MAX_PATH_LEN`].
    #[error("file path {path:?}… is {len} bytes long; at most 4096 bytes are allowed")]
    TooLong {
        /// The first 64 characters of the path.
        path: String,
        /// Its length in bytes.
        len: usize,
    },
    /// One element is longer than [`MAX_FILE_NAME_LEN`].
    #[error(
        "file name {name:?}… in path {path:?} is {len} bytes long; at most 255 bytes are allowed"
    )]
    NameTooLong {
        /// The path, shortened to 64 characters per element.
        path: String,
        /// The first 64 characters of the element.
        name: String,
        /// Its length in bytes.
        len: usize,
    },
    /// An element is `..`.
    #[error("file path {path:?} must not contain a '..' element")]
    DotDot {
        /// The path.
        path: String,
    },
    /// The first element starts with `..`.
    #[error(
        "file path {path:?} must not start with '..' (the driver keeps its own '..data' entries there)"
    )]
    StartsWithDotDot {
        /// The path.
        path: String,
    },
    /// The path is `.`: the volume root, not a file.
    #[error("file path {path:?} must name a file, not the volume root")]
    Root {
        /// The path.
        path: String,
    },
    /// Not in clean form (empty or `.` elements, trailing `/`).
    #[error("file path {path:?} is not clean: write it as {clean:?}")]
    NotClean {
        /// The path.
        path: String,
        /// Its clean form.
        clean: String,
    },
    /// Holds a NUL byte, which no file name can.
    #[error("file path {path:?} must not contain a NUL character")]
    Nul {
        /// The path.
        path: String,
    },
}

/// Why a list of files is not a valid plan.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// One path breaks the path rules.
    #[error("object {object_id}: {error}")]
    Path {
        /// The object whose file it is.
        object_id: String,
        /// What is wrong with the path.
        error: PathError,
    },
    /// Two files share a path.
    #[error(
        "objects {first} and {second} both write file {path:?}; give one of them a different objectAlias"
    )]
    Duplicate {
        /// The path.
        path: String,
        /// The object planned first.
        first: String,
        /// The object planned second.
        second: String,
    },
    /// A file's path is a directory of another file's path.
    #[error(
        "file {file:?} of object {file_object} is also a directory holding {other:?} of object {other_object}; a path cannot be both a file and a directory"
    )]
    FileIsDirectory {
        /// The file whose path is a prefix.
        file: String,
        /// Its object.
        file_object: String,
        /// The file below it.
        other: String,
        /// Its object.
        other_object: String,
    },
}

impl PlanError {
    /// Always [`ErrorKind::Invalid`].
    pub fn kind(&self) -> ErrorKind {
        ErrorKind::Invalid
    }
}

fn shorten(s: &str) -> String {
    s.chars().take(64).collect()
}

/// Go's `path.Clean` for a relative path that holds no `..` element.
fn clean(path: &str) -> String {
    let parts: Vec<&str> = path
        .split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect();
    if parts.is_empty() {
        ".".to_owned()
    } else {
        parts.join("/")
    }
}

/// Checks one path against the atomic writer's rules (see the module docs).
pub fn validate_relative_path(path: &str) -> Result<(), PathError> {
    if path.is_empty() {
        return Err(PathError::Empty);
    }
    if path.starts_with('/') {
        return Err(PathError::Absolute {
            path: shorten(path),
        });
    }
    if path.len() > MAX_PATH_LEN {
        return Err(PathError::TooLong {
            path: shorten(path),
            len: path.len(),
        });
    }
    if path.contains('\0') {
        return Err(PathError::Nul {
            path: path.replace('\0', "\\0"),
        });
    }
    for item in path.split('/') {
        if item == ".." {
            return Err(PathError::DotDot { path: path.into() });
        }
        if item.len() > MAX_FILE_NAME_LEN {
            let short: Vec<String> = path.split('/').map(shorten).collect();
            return Err(PathError::NameTooLong {
                path: short.join("/"),
                name: shorten(item),
                len: item.len(),
            });
        }
    }
    if path.starts_with("..") {
        return Err(PathError::StartsWithDotDot { path: path.into() });
    }
    if path == "." {
        return Err(PathError::Root { path: path.into() });
    }
    let cleaned = clean(path);
    if cleaned != path {
        return Err(PathError::NotClean {
            path: path.into(),
            clean: cleaned,
        });
    }
    Ok(())
}

/// A validated list of files; see the module docs for the rules.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Plan {
    files: Vec<PlannedFile>,
}

impl Plan {
    /// Validates `files`; the first violation found is returned.
    pub fn new(files: Vec<PlannedFile>) -> Result<Plan, PlanError> {
        let mut by_path: BTreeMap<&str, &str> = BTreeMap::new();
        for f in &files {
            validate_relative_path(&f.path).map_err(|error| PlanError::Path {
                object_id: f.object_id.clone(),
                error,
            })?;
            if let Some(first) = by_path.insert(&f.path, &f.object_id) {
                return Err(PlanError::Duplicate {
                    path: f.path.clone(),
                    first: first.to_owned(),
                    second: f.object_id.clone(),
                });
            }
        }
        let paths: BTreeSet<&str> = by_path.keys().copied().collect();
        for f in &files {
            let mut prefix_end = 0;
            while let Some(pos) = f.path[prefix_end..].find('/') {
                let dir = &f.path[..prefix_end + pos];
                if paths.contains(dir) {
                    return Err(PlanError::FileIsDirectory {
                        file: dir.to_owned(),
                        file_object: by_path[dir].to_owned(),
                        other: f.path.clone(),
                        other_object: f.object_id.clone(),
                    });
                }
                prefix_end += pos + 1;
            }
        }
        Ok(Plan { files })
    }

    /// The files, in the order they were planned.
    pub fn files(&self) -> &[PlannedFile] {
        &self.files
    }

    /// The file at `path`, if planned.
    pub fn file(&self, path: &str) -> Option<&PlannedFile> {
        self.files.iter().find(|f| f.path == path)
    }

    /// The number of files.
    pub fn len(&self) -> usize {
        self.files.len()
    }

    /// Whether the plan has no file.
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// Takes the files out.
    pub fn into_files(self) -> Vec<PlannedFile> {
        self.files
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, id: &str) -> PlannedFile {
        PlannedFile {
            path: path.into(),
            mode: FileMode::DEFAULT,
            object_id: id.into(),
            required: true,
        }
    }

    #[test]
    fn accepts_upstream_valid_paths() {
        for p in [
            "a",
            "SECRET_1",
            "dir/file",
            "a/b/c.pem",
            "name/0",
            ".hidden",
            "a..b",
            "a/..b",
            "x/y",
        ] {
            assert_eq!(validate_relative_path(p), Ok(()), "{p}");
        }
        assert_eq!(validate_relative_path(&"n".repeat(255)), Ok(()));
    }

    #[test]
    fn each_rule_has_its_own_error_naming_the_path() {
        assert_eq!(validate_relative_path(""), Err(PathError::Empty));
        assert_eq!(
            validate_relative_path("/etc/passwd"),
            Err(PathError::Absolute {
                path: "/etc/passwd".into()
            })
        );
        assert_eq!(
            validate_relative_path("a/../b"),
            Err(PathError::DotDot {
                path: "a/../b".into()
            })
        );
        assert_eq!(
            validate_relative_path(".."),
            Err(PathError::DotDot { path: "..".into() })
        );
        assert_eq!(
            validate_relative_path("..data"),
            Err(PathError::StartsWithDotDot {
                path: "..data".into()
            })
        );
        assert_eq!(
            validate_relative_path("..data/x"),
            Err(PathError::StartsWithDotDot {
                path: "..data/x".into()
            })
        );
        assert_eq!(
            validate_relative_path("."),
            Err(PathError::Root { path: ".".into() })
        );
        for (p, c) in [("a//b", "a/b"), ("./a", "a"), ("a/", "a"), ("a/./b", "a/b")] {
            assert_eq!(
                validate_relative_path(p),
                Err(PathError::NotClean {
                    path: p.into(),
                    clean: c.into()
                })
            );
        }
        assert_eq!(
            validate_relative_path("a\0b"),
            Err(PathError::Nul {
                path: "a\\0b".into()
            })
        );
        let long_name = "n".repeat(256);
        match validate_relative_path(&format!("dir/{long_name}")) {
            Err(e @ PathError::NameTooLong { len: 256, .. }) => {
                assert!(e.to_string().contains("dir/nnnn"), "{e}");
                assert!(e.to_string().contains("at most 255"), "{e}");
            }
            other => panic!("{other:?}"),
        }
        let long_path = vec!["p".repeat(200); 21].join("/");
        assert!(long_path.len() > MAX_PATH_LEN);
        match validate_relative_path(&long_path) {
            Err(e @ PathError::TooLong { .. }) => {
                assert!(e.to_string().contains("4220 bytes"), "{e}")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn plan_rejects_duplicates_and_file_directory_clashes() {
        let err = Plan::new(vec![file("a", "secret/x"), file("a", "key/y")]).unwrap_err();
        assert_eq!(
            err,
            PlanError::Duplicate {
                path: "a".into(),
                first: "secret/x".into(),
                second: "key/y".into()
            }
        );
        assert!(err.to_string().contains("objectAlias"));

        let err =
            Plan::new(vec![file("a/b/c", "secret/x/0"), file("a/b", "secret/y")]).unwrap_err();
        assert_eq!(
            err,
            PlanError::FileIsDirectory {
                file: "a/b".into(),
                file_object: "secret/y".into(),
                other: "a/b/c".into(),
                other_object: "secret/x/0".into()
            }
        );

        let err = Plan::new(vec![file("ok", "secret/a"), file("../x", "secret/b")]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "object secret/b: file path \"../x\" must not contain a '..' element"
        );
    }

    #[test]
    fn plan_keeps_order_and_allows_siblings() {
        let plan = Plan::new(vec![
            file("b/0", "secret/b/0"),
            file("b/1", "secret/b/1"),
            file("a", "secret/a"),
            file("ab/c", "secret/c"),
        ])
        .unwrap();
        let paths: Vec<&str> = plan.files().iter().map(|f| f.path.as_str()).collect();
        assert_eq!(paths, ["b/0", "b/1", "a", "ab/c"]);
        assert_eq!(
            plan.file("a").map(|f| f.object_id.as_str()),
            Some("secret/a")
        );
        assert_eq!(plan.len(), 4);
    }

    #[test]
    fn file_mode_is_permission_bits_only() {
        assert_eq!(FileMode::new(0o755).map(FileMode::bits), Some(0o755));
        assert_eq!(FileMode::new(0o4755), None);
        assert_eq!(FileMode::DEFAULT.to_string(), "0644");
        assert_eq!(format!("{:?}", FileMode::DEFAULT), "FileMode(0o644)");
    }
}
