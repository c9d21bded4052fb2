//! `objectVersionHistory: N`: which versions go to `<file>/0 … <file>/N-1`.
//!
//! Upstream (`getLatestNKeyVaultObjects`) lists every version, drops disabled
//! ones, sorts by `created` newest first, starts at `objectVersion` (or the
//! latest) and writes index 0 for the start, 1 for the next older one, and so
//! on. Its loop appends before it checks the count, so with more than N
//! enabled versions it writes **N + 1** files (indices 0..=N). secretfs
//! writes **exactly N**, matching the parameter's documented meaning; with
//! fewer than N enabled versions (from the start on) there are fewer files.
//!
//! Versions with equal `created` times are ordered by version id, descending,
//! so the result is deterministic (upstream's sort is not stable).

use std::cmp::Reverse;

use super::objects::KeyVaultObject;
use crate::provider::{ErrorKind, FileMode, ObjectError, PlannedFile};

/// One version from a versions listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionInfo {
    /// The version id (last segment of the item's `id`).
    pub version: String,
    /// `attributes.enabled`.
    pub enabled: bool,
    /// `attributes.created`, Unix seconds; missing sorts as oldest.
    pub created: Option<i64>,
}

/// Why no version could be selected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HistoryError {
    /// No enabled version at all.
    #[error("has no enabled version (objectVersionHistory needs at least one)")]
    NoEnabledVersion,
    /// The pinned `objectVersion` is not listed.
    #[error("objectVersion {0:?} was not found among the object's versions")]
    PinnedNotFound(String),
    /// The pinned `objectVersion` is disabled.
    #[error("objectVersion {0:?} is disabled: enable it or pin another version")]
    PinnedDisabled(String),
}

impl HistoryError {
    /// The error kind.
    pub fn kind(&self) -> ErrorKind {
        match self {
            HistoryError::NoEnabledVersion | HistoryError::PinnedNotFound(_) => ErrorKind::NotFound,
            HistoryError::PinnedDisabled(_) => ErrorKind::Denied,
        }
    }

    /// The error about object `id`.
    pub fn for_object(&self, id: impl Into<String>) -> ObjectError {
        ObjectError::new(id, self.kind(), self.to_string())
    }
}

/// The version in a Key Vault object id
/// (`https://<vault>.<suffix>[:port]/<secrets|keys|certificates>/<name>/<version>`),
/// as upstream reports it in `ObjectVersion.version`; `None` when the id has
/// no version segment or is not of that shape.
pub fn version_of_id(id: &str) -> Option<&str> {
    let rest = id
        .strip_prefix("https://")
        .or_else(|| id.strip_prefix("http://"))?;
    let (_host, path) = rest.split_once('/')?;
    let path = path.split(['?', '#']).next().unwrap_or_default();
    match path.split('/').collect::<Vec<_>>().as_slice() {
        [kind, name, version]
            if matches!(*kind, "secrets" | "keys" | "certificates")
                && !name.is_empty()
                && !version.is_empty() =>
        {
            Some(version)
        }
        _ => None,
    }
}

/// The versions for slots `0..`, at most `count` of them: the enabled ones,
/// newest first, from `start` (a version id; `None` for the latest).
pub fn select_versions<'a>(
    versions: &'a [VersionInfo],
    start: Option<&str>,
    count: u32,
) -> Result<Vec<&'a VersionInfo>, HistoryError> {
    let mut enabled: Vec<&VersionInfo> = versions.iter().filter(|v| v.enabled).collect();
    enabled.sort_by_key(|v| Reverse((v.created.unwrap_or(i64::MIN), v.version.as_str())));
    let from = match start {
        None => 0,
        Some(pinned) => match enabled
            .iter()
            .position(|v| v.version.eq_ignore_ascii_case(pinned))
        {
            Some(i) => i,
            None if versions
                .iter()
                .any(|v| v.version.eq_ignore_ascii_case(pinned)) =>
            {
                return Err(HistoryError::PinnedDisabled(pinned.to_owned()));
            }
            None => return Err(HistoryError::PinnedNotFound(pinned.to_owned())),
        },
    };
    if enabled.is_empty() {
        return Err(HistoryError::NoEnabledVersion);
    }
    Ok(enabled
        .into_iter()
        .skip(from)
        .take(count as usize)
        .collect())
}

/// The files of an object with `objectVersionHistory` > 1, each with the
/// version it shows: slot `i` is `<file>/<i>` with id `<type>/<name>/<i>`.
/// Errors name the object.
pub fn history_files<'a>(
    object: &KeyVaultObject,
    versions: &'a [VersionInfo],
    default_mode: FileMode,
) -> Result<Vec<(PlannedFile, &'a VersionInfo)>, ObjectError> {
    let selected = select_versions(versions, object.version.as_deref(), object.version_history)
        .map_err(|e| e.for_object(object.id()))?;
    Ok(object
        .planned_files(default_mode)
        .into_iter()
        .zip(selected)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(version: &str, enabled: bool, created: i64) -> VersionInfo {
        VersionInfo {
            version: version.into(),
            enabled,
            created: Some(created),
        }
    }

    fn ids(sel: &[&VersionInfo]) -> Vec<String> {
        sel.iter().map(|v| v.version.clone()).collect()
    }

    /// Ten versions v0 (oldest) … v9 (newest), listed in a shuffled order.
    fn ten() -> Vec<VersionInfo> {
        [3, 9, 0, 7, 1, 8, 2, 6, 4, 5]
            .into_iter()
            .map(|i| v(&format!("v{i}"), true, 1_700_000_000 + i64::from(i) * 60))
            .collect()
    }

    #[test]
    fn more_versions_than_n_gives_exactly_n_newest_first() {
        let versions = ten();
        let sel = select_versions(&versions, None, 5).unwrap();
        // Upstream's loop would return 6 here (indices 0..=5).
        assert_eq!(ids(&sel), ["v9", "v8", "v7", "v6", "v5"]);
    }

    #[test]
    fn disabled_versions_are_skipped() {
        let mut versions = ten();
        for x in &mut versions {
            if x.version == "v8" || x.version == "v6" {
                x.enabled = false;
            }
        }
        let sel = select_versions(&versions, None, 4).unwrap();
        assert_eq!(ids(&sel), ["v9", "v7", "v5", "v4"]);
    }

    #[test]
    fn pinned_start_and_latest() {
        let versions = ten();
        let sel = select_versions(&versions, Some("V6"), 3).unwrap();
        assert_eq!(ids(&sel), ["v6", "v5", "v4"]);
        // Near the oldest end there are fewer than N.
        let sel = select_versions(&versions, Some("v1"), 5).unwrap();
        assert_eq!(ids(&sel), ["v1", "v0"]);
    }

    #[test]
    fn fewer_versions_than_n() {
        let versions = vec![v("a", true, 10), v("b", false, 20), v("c", true, 30)];
        let sel = select_versions(&versions, None, 5).unwrap();
        assert_eq!(ids(&sel), ["c", "a"]);
    }

    #[test]
    fn equal_times_and_missing_times_are_deterministic() {
        let versions = vec![
            v("aa", true, 5),
            VersionInfo {
                version: "zz".into(),
                enabled: true,
                created: None,
            },
            v("bb", true, 5),
        ];
        let sel = select_versions(&versions, None, 3).unwrap();
        assert_eq!(ids(&sel), ["bb", "aa", "zz"]);
    }

    #[test]
    fn history_files_pair_slots_with_versions() {
        let parsed = crate::provider::azure::parse_objects(
            "array:\n  - |\n    objectName: db\n    objectAlias: creds\n    objectType: secret\n    objectVersion: v7\n    objectVersionHistory: 3\n    filePermission: \"0400\"\n",
        )
        .unwrap();
        let object = &parsed.objects[0];
        let versions = ten();
        let files = history_files(object, &versions, FileMode::DEFAULT).unwrap();
        let got: Vec<(&str, &str, &str, u32)> = files
            .iter()
            .map(|(f, v)| {
                (
                    f.path.as_str(),
                    f.object_id.as_str(),
                    v.version.as_str(),
                    f.mode.bits(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("creds/0", "secret/db/0", "v7", 0o400),
                ("creds/1", "secret/db/1", "v6", 0o400),
                ("creds/2", "secret/db/2", "v5", 0o400),
            ]
        );
        // The pinned version is not listed: the error names the object.
        let files = history_files(object, &versions[..3], FileMode::DEFAULT).unwrap_err();
        assert_eq!(files.object, "secret/db");
        assert_eq!(files.kind, ErrorKind::NotFound);
        // Fewer versions than slots: fewer files.
        let two = [v("v7", true, 2), v("v1", true, 1)];
        assert_eq!(
            history_files(object, &two, FileMode::DEFAULT)
                .unwrap()
                .len(),
            2
        );
    }

    #[test]
    fn version_is_the_last_segment_of_an_object_id() {
        for (id, want) in [
            (
                "https://kv.vault.azure.net/secrets/db/c55925c29c6743dcb9bb4bf091be03b0",
                Some("c55925c29c6743dcb9bb4bf091be03b0"),
            ),
            (
                "https://kv.vault.azure.net:443/keys/k1/0123abcd",
                Some("0123abcd"),
            ),
            (
                "https://127.0.0.1:8443/certificates/tls/v1?api-version=7.4",
                Some("v1"),
            ),
            ("https://kv.vault.azure.net/secrets/db", None),
            ("https://kv.vault.azure.net/secrets/db/", None),
            ("https://kv.vault.azure.net/other/db/v", None),
            ("kv.vault.azure.net/secrets/db/v", None),
            ("", None),
        ] {
            assert_eq!(version_of_id(id), want, "{id}");
        }
    }

    #[test]
    fn errors_have_kinds_and_name_the_object() {
        let versions = vec![v("a", true, 1), v("b", false, 2)];
        let e = select_versions(&versions, Some("b"), 2).unwrap_err();
        assert_eq!(e, HistoryError::PinnedDisabled("b".into()));
        assert_eq!(e.kind(), ErrorKind::Denied);
        let e = select_versions(&versions, Some("nope"), 2).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NotFound);
        let oe = e.for_object("secret/db");
        assert_eq!(
            oe.to_string(),
            "secret/db: objectVersion \"nope\" was not found among the object's versions"
        );
        let e = select_versions(&[v("x", false, 1)], None, 2).unwrap_err();
        assert_eq!(e, HistoryError::NoEnabledVersion);
        assert_eq!(e.kind(), ErrorKind::NotFound);
        assert_eq!(
            select_versions(&[], None, 2).unwrap_err(),
            HistoryError::NoEnabledVersion
        );
    }
}
