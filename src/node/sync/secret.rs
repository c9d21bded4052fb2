//! Building a synced Secret's data from a volume's files (pure).

use std::collections::BTreeMap;
use std::sync::Arc;

use secretfs_secrets::SecretBytes;

use super::tls;
use crate::provider::MountedFile;
use crate::spc::SecretObject;

/// Why a Secret could not be built. Messages name the Secret, the
/// objectName and what is available, never a value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    #[error(
        "secretObjects {secret}: objectName {object:?} matches no mounted file; available: {available} \
         (use an objectAlias or a vault object name)"
    )]
    UnknownObject {
        secret: String,
        object: String,
        available: String,
    },
    #[error(
        "secretObjects {secret}: objectName {object:?} matches several files ({matches}); use the file path (alias)"
    )]
    Ambiguous {
        secret: String,
        object: String,
        matches: String,
    },
    #[error("secretObjects {secret}: secretName is empty")]
    NoName { secret: String },
    #[error(
        "secretObjects {secret}: type is empty; set it (Opaque, kubernetes.io/tls, kubernetes.io/dockerconfigjson, …)"
    )]
    NoType { secret: String },
    #[error("secretObjects {secret}: data[{index}].key is empty")]
    NoKey { secret: String, index: usize },
    #[error(
        "secretObjects {secret}: for type kubernetes.io/tls, data keys must be tls.crt or tls.key, not {key:?}"
    )]
    TlsKey { secret: String, key: String },
    #[error("secretObjects {secret}: {object}: {message}")]
    Tls {
        secret: String,
        object: String,
        message: String,
    },
}

/// The file that `reference` designates: a file path (alias) first, then a
/// vault object name (the file of object id `<type>/<name>`, or `…/0` of a
/// version history). Upstream only knows paths (Azure issue #270).
pub fn resolve<'a>(
    files: &'a [MountedFile],
    secret: &str,
    reference: &str,
) -> Result<&'a MountedFile, SecretError> {
    let reference = reference.trim();
    if let Some(file) = files.iter().find(|f| f.path == reference) {
        return Ok(file);
    }
    let name_of = |id: &str| -> Option<(String, Option<String>)> {
        let mut parts = id.splitn(3, '/');
        let (_type, name, index) = (parts.next()?, parts.next()?, parts.next());
        Some((name.to_owned(), index.map(str::to_owned)))
    };
    let matches: Vec<&MountedFile> = files
        .iter()
        .filter(|f| {
            name_of(&f.object_id).is_some_and(|(name, index)| {
                name == reference && index.as_deref().is_none_or(|i| i == "0")
            })
        })
        .collect();
    match matches.as_slice() {
        [one] => Ok(one),
        [] => Err(SecretError::UnknownObject {
            secret: secret.to_owned(),
            object: reference.to_owned(),
            available: files
                .iter()
                .map(|f| f.path.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        }),
        many => Err(SecretError::Ambiguous {
            secret: secret.to_owned(),
            object: reference.to_owned(),
            matches: many
                .iter()
                .map(|f| f.path.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        }),
    }
}

/// The Secret's `type` and `data` for one `secretObjects` entry.
pub fn build(
    object: &SecretObject,
    files: &[MountedFile],
) -> Result<BTreeMap<String, Arc<SecretBytes>>, SecretError> {
    let secret = object.secret_name.clone();
    if secret.is_empty() {
        return Err(SecretError::NoName {
            secret: "(unnamed)".into(),
        });
    }
    if object.secret_type.is_empty() {
        return Err(SecretError::NoType { secret });
    }
    let is_tls = object.secret_type == "kubernetes.io/tls";
    let mut data = BTreeMap::new();
    for (index, item) in object.data.iter().enumerate() {
        if item.key.is_empty() {
            return Err(SecretError::NoKey { secret, index });
        }
        let file = resolve(files, &secret, &item.object_name)?;
        let value = if is_tls {
            let tls_error = |message: String| SecretError::Tls {
                secret: secret.clone(),
                object: item.object_name.clone(),
                message,
            };
            let pair = tls::split(file.contents.expose()).map_err(tls_error)?;
            match item.key.as_str() {
                "tls.crt" => pair.certificates,
                "tls.key" => pair
                    .key
                    .ok_or_else(|| tls_error("no private key in the file".into()))?,
                other => {
                    return Err(SecretError::TlsKey {
                        secret,
                        key: other.to_owned(),
                    });
                }
            }
        } else {
            file.contents.clone()
        };
        data.insert(item.key.clone(), value);
    }
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::FileMode;
    use crate::spc::SecretObjectData;

    fn file(path: &str, id: &str, bytes: &[u8]) -> MountedFile {
        MountedFile {
            path: path.into(),
            mode: FileMode::DEFAULT,
            contents: Arc::new(SecretBytes::from_slice(bytes)),
            object_id: id.into(),
        }
    }

    fn files() -> Vec<MountedFile> {
        vec![
            file("SECRET_1", "secret/sql-password", b"p@ss"),
            file("hist/0", "secret/hist/0", b"newest"),
            file("hist/1", "secret/hist/1", b"older"),
        ]
    }

    fn object(kind: &str, items: &[(&str, &str)]) -> SecretObject {
        SecretObject {
            secret_name: "sqlserver".into(),
            secret_type: kind.into(),
            data: items
                .iter()
                .map(|(o, k)| SecretObjectData {
                    object_name: (*o).into(),
                    key: (*k).into(),
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn the_alias_and_the_vault_name_both_work() {
        for name in ["SECRET_1", "sql-password", " SECRET_1 "] {
            let data = build(&object("Opaque", &[(name, "dbpassword")]), &files()).unwrap();
            assert_eq!(data["dbpassword"].expose(), b"p@ss", "{name}");
        }
        let data = build(&object("Opaque", &[("hist", "latest")]), &files()).unwrap();
        assert_eq!(
            data["latest"].expose(),
            b"newest",
            "a history's name means its /0"
        );
    }

    #[test]
    fn an_unknown_name_lists_what_is_available() {
        let err = build(&object("Opaque", &[("nope", "k")]), &files()).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("\"nope\"") && text.contains("SECRET_1, hist/0, hist/1"),
            "{text}"
        );
    }

    #[test]
    fn each_missing_field_is_named() {
        let mut o = object("", &[("SECRET_1", "k")]);
        assert!(matches!(
            build(&o, &files()),
            Err(SecretError::NoType { .. })
        ));
        o.secret_type = "Opaque".into();
        o.data[0].key.clear();
        assert!(matches!(
            build(&o, &files()),
            Err(SecretError::NoKey { index: 0, .. })
        ));
        o.secret_name.clear();
        assert!(matches!(
            build(&o, &files()),
            Err(SecretError::NoName { .. })
        ));
    }

    #[test]
    fn tls_secrets_only_take_tls_keys() {
        let err = build(
            &object("kubernetes.io/tls", &[("SECRET_1", "ca.crt")]),
            &files(),
        )
        .unwrap_err();
        assert!(
            matches!(err, SecretError::TlsKey { .. } | SecretError::Tls { .. }),
            "{err}"
        );
    }
}
