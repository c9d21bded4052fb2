//! `secretObjects[].data[].objectName` → a mounted file.
//!
//! Upstream's sync looks the name up only as a file path, so with an
//! `objectAlias` the vault object's name fails with `file matching objectName
//! … not found in the pod` (Azure provider issue #270, driver #1313). Here a
//! reference is resolved against the file paths first (the alias, or
//! `<file>/<i>` with version history), then against the vault object names;
//! an error names the paths that exist.

use super::objects::KeyVaultObject;
use crate::provider::FileMode;

/// A reference that names no mounted file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FileRefError {
    /// Neither a path nor an object name.
    #[error("objectName {reference:?} matches no mounted file; the files are: {available}")]
    NotFound {
        /// The reference.
        reference: String,
        /// The mounted paths, comma-separated.
        available: String,
    },
    /// An object name used by several objects (e.g. a secret and a cert).
    #[error(
        "objectName {reference:?} names several objects; use one of their file paths: {candidates}"
    )]
    Ambiguous {
        /// The reference.
        reference: String,
        /// The matching objects' paths, comma-separated.
        candidates: String,
    },
}

/// The file path that `reference` designates among `objects`' files.
pub fn resolve_file_reference(
    objects: &[KeyVaultObject],
    reference: &str,
) -> Result<String, FileRefError> {
    let reference = reference.trim();
    let paths: Vec<String> = objects
        .iter()
        .flat_map(|o| o.planned_files(FileMode::DEFAULT))
        .map(|f| f.path)
        .collect();
    if paths.iter().any(|p| p == reference) {
        return Ok(reference.to_owned());
    }
    // By vault object name: its file, or with history its newest version.
    let by_name: Vec<String> = objects
        .iter()
        .filter(|o| o.name == reference)
        .map(|o| {
            if o.uses_history() {
                format!("{}/0", o.file_name())
            } else {
                o.file_name().to_owned()
            }
        })
        .collect();
    match by_name.as_slice() {
        [one] => Ok(one.clone()),
        [] => Err(FileRefError::NotFound {
            reference: reference.to_owned(),
            available: paths.join(", "),
        }),
        many => Err(FileRefError::Ambiguous {
            reference: reference.to_owned(),
            candidates: many.join(", "),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::azure::parse_objects;

    fn objects() -> Vec<KeyVaultObject> {
        parse_objects(
            "array:\n  - |\n    objectName: sql-password\n    objectAlias: SECRET_1\n    objectType: secret\n  - |\n    objectName: db\n    objectAlias: creds\n    objectType: secret\n    objectVersionHistory: 2\n  - |\n    objectName: tls\n    objectType: secret\n    objectAlias: tls.pem\n  - |\n    objectName: tls\n    objectType: cert\n",
        )
        .unwrap()
        .objects
    }

    #[test]
    fn alias_path_first_then_vault_name() {
        let o = objects();
        assert_eq!(resolve_file_reference(&o, "SECRET_1").unwrap(), "SECRET_1");
        assert_eq!(
            resolve_file_reference(&o, "sql-password").unwrap(),
            "SECRET_1"
        );
        assert_eq!(resolve_file_reference(&o, "creds/1").unwrap(), "creds/1");
        assert_eq!(resolve_file_reference(&o, "db").unwrap(), "creds/0");
        // `tls` is the cert's file path, so it wins over the ambiguous name.
        assert_eq!(resolve_file_reference(&o, "tls").unwrap(), "tls");
        assert_eq!(resolve_file_reference(&o, "tls.pem").unwrap(), "tls.pem");
    }

    #[test]
    fn errors_name_the_available_paths() {
        let o = objects();
        assert_eq!(
            resolve_file_reference(&o, "nope").unwrap_err().to_string(),
            "objectName \"nope\" matches no mounted file; the files are: SECRET_1, creds/0, creds/1, tls.pem, tls"
        );
        let o2 = parse_objects(
            "array:\n  - |\n    objectName: x\n    objectType: secret\n    objectAlias: a\n  - |\n    objectName: x\n    objectType: cert\n    objectAlias: b\n",
        )
        .unwrap()
        .objects;
        assert_eq!(
            resolve_file_reference(&o2, "x").unwrap_err(),
            FileRefError::Ambiguous {
                reference: "x".into(),
                candidates: "a, b".into()
            }
        );
    }
}
