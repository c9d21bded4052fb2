//! Reading objects: one version, the versions of an object, all objects.

use http::StatusCode;
use serde_json::{Value, json};

use crate::http::Incoming;
use crate::state::Shared;
use crate::store::{CONTENT_TYPE_PEM, CONTENT_TYPE_PFX, ObjectKind, Vault, find_version};

use super::bundles;
use super::errors::KvError;
use super::paging;

fn not_found(kind: ObjectKind, name: &str, version: Option<&str>, shared: &Shared) -> KvError {
    let (noun, code) = match kind {
        ObjectKind::Secret => ("secret", "SecretNotFound"),
        ObjectKind::Key => ("key", "KeyNotFound"),
        ObjectKind::Certificate => ("certificate", "CertificateNotFound"),
    };
    let (id, code) = match version {
        Some(v) if !v.is_empty() => (
            format!("{name}/{v}"),
            if kind == ObjectKind::Secret {
                shared.settings.secret_version_not_found_code.as_str()
            } else {
                code
            },
        ),
        _ => (name.to_string(), code),
    };
    KvError::new(
        StatusCode::NOT_FOUND,
        code,
        format!(
            "A {noun} with (name/id) {id} was not found in this key vault. If you recently deleted this {noun} you may be able to recover it using the correct recovery command. For help resolving this issue, please see https://go.microsoft.com/fwlink/?linkid=2125182"
        ),
    )
}

fn disabled(kind: ObjectKind) -> KvError {
    let (noun, inner) = match kind {
        ObjectKind::Secret => ("secret", "SecretDisabled"),
        ObjectKind::Key => ("key", "KeyDisabled"),
        ObjectKind::Certificate => ("certificate", "CertificateDisabled"),
    };
    KvError::new(
        StatusCode::FORBIDDEN,
        "Forbidden",
        format!("Operation get is not allowed on a disabled {noun}."),
    )
    .inner(inner)
}

pub(super) fn get_object(
    vault: &Vault,
    base: &str,
    kind: ObjectKind,
    name: &str,
    version: Option<&str>,
    req: &Incoming,
    shared: &Shared,
) -> Result<Value, KvError> {
    let nf = || not_found(kind, name, version, shared);
    match kind {
        ObjectKind::Secret => {
            let s =
                find_version(vault.secrets.get(name).ok_or_else(nf)?, version).ok_or_else(nf)?;
            if !s.attributes.enabled {
                return Err(disabled(kind));
            }
            let stored_ct = s.content_type.as_deref();
            match (req.query_ci("outContentType"), &s.certificate) {
                (None, _) => Ok(bundles::secret_bundle(base, name, s, &s.value, stored_ct)),
                (Some(CONTENT_TYPE_PEM), Some(cert)) => {
                    // The key only if the certificate's policy lets it out.
                    let exportable = vault
                        .certificates
                        .get(name)
                        .and_then(|versions| versions.iter().find(|c| c.version == s.version))
                        .is_none_or(|c| c.exportable);
                    let pem = if exportable {
                        cert.pem_bundle()
                    } else {
                        cert.pem_certificate_only()
                    };
                    Ok(bundles::secret_bundle(
                        base,
                        name,
                        s,
                        &pem,
                        Some(CONTENT_TYPE_PEM),
                    ))
                }
                (Some(CONTENT_TYPE_PFX), Some(_)) if stored_ct == Some(CONTENT_TYPE_PFX) => {
                    Ok(bundles::secret_bundle(base, name, s, &s.value, stored_ct))
                }
                (Some(other), _) => Err(KvError::new(
                    StatusCode::BAD_REQUEST,
                    "BadParameter",
                    format!(
                        "Conversion to '{other}' is not supported for this secret. Only certificate-backed PFX secrets can be converted to application/x-pem-file."
                    ),
                )),
            }
        }
        ObjectKind::Key => {
            let k = find_version(vault.keys.get(name).ok_or_else(nf)?, version).ok_or_else(nf)?;
            if !k.attributes.enabled {
                return Err(disabled(kind));
            }
            Ok(bundles::key_bundle(base, name, k))
        }
        ObjectKind::Certificate => {
            let c = find_version(vault.certificates.get(name).ok_or_else(nf)?, version)
                .ok_or_else(nf)?;
            Ok(bundles::certificate_bundle(base, name, c))
        }
    }
}

/// `GET /certificates/{name}/policy`: the policy of the latest version.
pub(super) fn certificate_policy(
    vault: &Vault,
    base: &str,
    name: &str,
    shared: &Shared,
) -> Result<Value, KvError> {
    let nf = || not_found(ObjectKind::Certificate, name, None, shared);
    let latest = find_version(vault.certificates.get(name).ok_or_else(nf)?, None).ok_or_else(nf)?;
    Ok(bundles::policy(base, name, latest))
}

pub(super) fn list_versions(
    vault: &Vault,
    base: &str,
    kind: ObjectKind,
    name: &str,
    req: &Incoming,
    shared: &Shared,
) -> Result<Value, KvError> {
    let p = paging::page_request(req)?;
    let nf = || not_found(kind, name, None, shared);
    let items: Vec<Value> = match kind {
        ObjectKind::Secret => vault
            .secrets
            .get(name)
            .ok_or_else(nf)?
            .iter()
            .map(|s| bundles::secret_item(base, name, s))
            .collect(),
        ObjectKind::Key => vault
            .keys
            .get(name)
            .ok_or_else(nf)?
            .iter()
            .map(|k| bundles::key_item(base, name, k))
            .collect(),
        ObjectKind::Certificate => vault
            .certificates
            .get(name)
            .ok_or_else(nf)?
            .iter()
            .map(|c| bundles::certificate_item(base, name, c))
            .collect(),
    };
    let path = format!("/{}/{name}/versions", kind.collection());
    Ok(paging::page(
        req,
        &path,
        items,
        p,
        &shared.settings.next_link_api_version,
    ))
}

/// `GET /{collection}`: the current version of every object, with ids
/// without a version.
pub(super) fn list_objects(
    vault: &Vault,
    base: &str,
    kind: ObjectKind,
    req: &Incoming,
    shared: &Shared,
) -> Result<Value, KvError> {
    let p = paging::page_request(req)?;
    let coll = kind.collection();
    let unversioned = |mut item: Value, field: &str, name: &str| {
        item[field] = json!(format!("{base}/{coll}/{name}"));
        item
    };
    let items: Vec<Value> = match kind {
        ObjectKind::Secret => vault
            .secrets
            .iter()
            .filter_map(|(n, v)| {
                v.last()
                    .map(|s| unversioned(bundles::secret_item(base, n, s), "id", n))
            })
            .collect(),
        ObjectKind::Key => vault
            .keys
            .iter()
            .filter_map(|(n, v)| {
                v.last()
                    .map(|k| unversioned(bundles::key_item(base, n, k), "kid", n))
            })
            .collect(),
        ObjectKind::Certificate => vault
            .certificates
            .iter()
            .filter_map(|(n, v)| {
                v.last()
                    .map(|c| unversioned(bundles::certificate_item(base, n, c), "id", n))
            })
            .collect(),
    };
    Ok(paging::page(
        req,
        &format!("/{coll}"),
        items,
        p,
        &shared.settings.next_link_api_version,
    ))
}
