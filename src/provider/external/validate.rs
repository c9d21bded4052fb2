//! An external provider's answer, checked before anything is shown: paths
//! by the atomic writer's rules, no duplicates, modes, object versions, the
//! provider's `error.code` as the metric's `error_type`; and the validity of
//! files that are PEM certificates.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};

use secretfs_csi::error_types;
use secretfs_csi::proto::provider as pb;
use secretfs_secrets::SecretBytes;

use super::SYNC_SIZE_HINT;

use crate::provider::{
    ErrorKind, FileMode, MountError, MountResponse, MountedFile, ObjectVersion,
    validate_relative_path,
};

/// Checks a provider's response and turns it into the volume's files (see
/// the module docs for the rules). Nothing of a refused response is kept.
pub fn check_response(
    name: &str,
    socket: &Path,
    response: pb::MountResponse,
) -> Result<MountResponse, MountError> {
    let who = format!("provider {name:?} (socket {})", socket.display());
    let invalid = |message: String| MountError::External {
        kind: ErrorKind::Invalid,
        error_type: error_types::INVALID_PROVIDER_RESPONSE,
        message,
    };
    if let Some(code) = response.error.as_ref().map(|e| e.code.as_str())
        && !code.is_empty()
    {
        let label = error_type_label(code);
        // Only a plain code is repeated: anything else may be a whole
        // message (a token in it, or megabytes of it).
        let shown = if plain_code(code) {
            format!("error code {code:?}")
        } else {
            format!(
                "an error code that is not a plain code ({} bytes, not shown)",
                code.len()
            )
        };
        return Err(MountError::Provider {
            error_type: label,
            message: format!("{who} failed with {shown}: see the provider's logs for the reason"),
        });
    }
    if response.object_version.is_empty() {
        return Err(invalid(format!(
            "{who} returned no object versions (missing object versions): the protocol requires one per \
             mounted object; fix or upgrade the provider"
        )));
    }
    if response.files.is_empty() {
        return Err(invalid(format!(
            "{who} returned object versions but no files: providers that write into the target path \
             themselves (before upstream issue #551) cannot serve a secretfs volume; upgrade the provider"
        )));
    }
    let mut paths: BTreeSet<&str> = BTreeSet::new();
    for file in &response.files {
        validate_relative_path(&file.path)
            .map_err(|e| invalid(format!("{who} returned an unsafe file: {e}")))?;
        if !paths.insert(file.path.as_str()) {
            return Err(invalid(format!(
                "{who} returned file {:?} twice: each path may appear once; fix the provider's objects \
                 (aliases) in the SecretProviderClass",
                file.path
            )));
        }
        if !(0..=0o777).contains(&file.mode) {
            return Err(invalid(format!(
                "{who} returned file {:?} with mode {}: a mode must be 0..=511 (0o777)",
                file.path, file.mode
            )));
        }
    }
    // A path cannot be both a file and a directory (`a` and `a/b`).
    for path in &paths {
        let mut prefix = String::new();
        let parts: Vec<&str> = path.split('/').collect();
        for part in &parts[..parts.len().saturating_sub(1)] {
            if !prefix.is_empty() {
                prefix.push('/');
            }
            prefix.push_str(part);
            if paths.contains(prefix.as_str()) {
                return Err(invalid(format!(
                    "{who} returned file {prefix:?} and file {path:?} below it: a path cannot be both a \
                     file and a directory"
                )));
            }
        }
    }

    let mut versions: Vec<ObjectVersion> = response
        .object_version
        .into_iter()
        .map(|v| ObjectVersion {
            id: v.id,
            version: v.version,
        })
        .collect();
    versions.sort();
    let mut out = MountResponse {
        versions,
        ..MountResponse::default()
    };
    let mut total = 0usize;
    for file in response.files {
        total += file.contents.len();
        // Checked above: 0..=0o777.
        let mode = u32::try_from(file.mode)
            .ok()
            .and_then(FileMode::new)
            .unwrap_or_default();
        out.files.push(MountedFile {
            object_id: file.path.clone(),
            path: file.path,
            mode,
            contents: Arc::new(SecretBytes::new(file.contents)),
        });
    }
    out.validity = certificate_validity(&out.files, &out.versions);
    if total > SYNC_SIZE_HINT {
        out.warnings.push(format!(
            "{who} returned {total} bytes of files (over 1 MiB): syncing them into a Kubernetes Secret may fail"
        ));
    }
    Ok(out)
}

/// The validity of each file that holds PEM certificates (the protocol
/// carries no attributes: a certificate's `notAfter`/`notBefore` are all
/// that is known), by path. Its version is the provider's version of the
/// object of the file ([`object_version`]; none if unknown). Only
/// timestamps come out; no content is logged or kept.
pub(super) fn certificate_validity(
    files: &[MountedFile],
    versions: &[ObjectVersion],
) -> BTreeMap<String, crate::expiry::Validity> {
    files
        .iter()
        .filter_map(|file| {
            let certificate =
                crate::provider::azure::validity::pem_file_validity(file.contents.expose())?;
            let version = object_version(versions, &file.path)
                .map(|v| v.version.clone())
                .unwrap_or_default();
            Some((
                file.path.clone(),
                crate::expiry::Validity {
                    version,
                    certificate: Some(certificate),
                    ..Default::default()
                },
            ))
        })
        .collect()
}

/// The object version of the file at `path`: the one with that id, else
/// the only one whose id ends in `/<path>` (`secret/<path>`, as providers
/// commonly name them), else the only object's.
pub(super) fn object_version<'a>(
    versions: &'a [ObjectVersion],
    path: &str,
) -> Option<&'a ObjectVersion> {
    if let Some(exact) = versions.iter().find(|v| v.id == path) {
        return Some(exact);
    }
    let suffix = format!("/{path}");
    let mut ending = versions.iter().filter(|v| v.id.ends_with(&suffix));
    match (ending.next(), ending.next()) {
        (Some(one), None) => Some(one),
        (Some(_), Some(_)) => None,
        (None, _) => match versions {
            [only] => Some(only),
            _ => None,
        },
    }
}

/// A short code of letters, digits, `_`, `-` and `.` (`AccessDenied`).
pub(super) fn plain_code(code: &str) -> bool {
    !code.is_empty()
        && code.len() <= 64
        && code
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
}

/// The metric label for a provider's `error.code`: the code itself when it
/// is short and plain, interned (at most 64 distinct codes per process;
/// more become `ProviderErrorOther`, so a misbehaving provider cannot grow
/// the label set without bound).
pub fn error_type_label(code: &str) -> &'static str {
    const MAX_CODES: usize = 64;
    static CODES: OnceLock<Mutex<BTreeSet<&'static str>>> = OnceLock::new();
    if !plain_code(code) {
        return error_types::PROVIDER_ERROR_OTHER;
    }
    let mut codes = CODES
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if let Some(known) = codes.get(code) {
        return known;
    }
    if codes.len() >= MAX_CODES {
        return error_types::PROVIDER_ERROR_OTHER;
    }
    let leaked: &'static str = Box::leak(code.to_owned().into_boxed_str());
    codes.insert(leaked);
    leaked
}
