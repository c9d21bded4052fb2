//! The `objects` parameter: a YAML string holding `array:`, a list of YAML
//! strings, each a mapping that describes one Key Vault object.
//!
//! ```yaml
//! objects: |
//!   array:
//!     - |
//!       objectName: sql-password
//!       objectAlias: SECRET_1
//!       objectType: secret
//! ```
//!
//! Every field is trimmed. Values are read as the text written (`0644` stays
//! `0644`, a numeric-looking version keeps its leading zeros), like Go's YAML
//! decoder does for string fields. Unknown fields are ignored as upstream does,
//! and reported as warnings (they are usually typos). Every problem of every
//! object is reported at once; each names the object's index and field and
//! says what is allowed.
//!
//! One volume mounts at most [`MAX_FILES`] files (objects, counting every
//! `objectVersionHistory` slot). Upstream has no such limit, but fetches the
//! objects one after the other inside kubelet's ~2 minute deadline, so no
//! class near it mounts there either; without it a class could make the
//! node plan a billion files (`objectVersionHistory: 1000000000`).

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;

use crate::provider::{ErrorKind, FileMode, Plan, PlanError, PlannedFile, validate_relative_path};

/// The most files the objects of one volume may make.
pub const MAX_FILES: usize = 10_000;

/// `objectType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ObjectType {
    /// A secret (`GetSecret`); also the way to get a certificate's private key.
    Secret,
    /// A key (`GetKey`); only the public key is written.
    Key,
    /// A certificate (`GetCertificate`); only the leaf certificate is written.
    Cert,
}

impl ObjectType {
    /// `secret`, `key` or `cert`, as in object ids.
    pub fn as_str(self) -> &'static str {
        match self {
            ObjectType::Secret => "secret",
            ObjectType::Key => "key",
            ObjectType::Cert => "cert",
        }
    }
}

/// `objectFormat` (secrets backed by a certificate only).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ObjectFormat {
    /// PEM: the private key as PKCS#8, then the chain (the default).
    #[default]
    Pem,
    /// The PFX as stored (base64 text unless `objectEncoding: base64`).
    Pfx,
}

/// `objectEncoding` (secrets only): how the stored string is decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ObjectEncoding {
    /// The string's UTF-8 bytes, unchanged (the default).
    #[default]
    Utf8,
    /// Standard base64 with padding.
    Base64,
    /// Hexadecimal.
    Hex,
}

/// One entry of `objects`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyVaultObject {
    /// Position in `array`, counted from 0 (as in error messages).
    pub index: usize,
    /// `objectName`: the Key Vault object's name.
    pub name: String,
    /// `objectAlias`: the file path in the mount, if set.
    pub alias: Option<String>,
    /// `objectType`.
    pub object_type: ObjectType,
    /// `objectVersion`; `None` for the latest (empty or `latest`).
    pub version: Option<String>,
    /// `objectVersionHistory`; values above 1 mount that many versions.
    pub version_history: u32,
    /// `objectFormat`.
    pub format: ObjectFormat,
    /// `objectEncoding`.
    pub encoding: ObjectEncoding,
    /// `filePermission`; `None` uses the driver's default mode.
    pub file_permission: Option<FileMode>,
    /// `optional: true` (secretfs): a missing object (404) leaves its file
    /// out instead of failing the mount (upstream #567).
    pub optional: bool,
}

impl KeyVaultObject {
    /// The file path: the alias, or else the object name.
    pub fn file_name(&self) -> &str {
        self.alias.as_deref().unwrap_or(&self.name)
    }

    /// The object id, `<type>/<name>` (e.g. `secret/db-pass`).
    pub fn id(&self) -> String {
        format!("{}/{}", self.object_type.as_str(), self.name)
    }

    /// What decides the vault requests and the bytes of the files, without
    /// where the files go or their modes: two classes that name one vault
    /// object under different aliases, positions, modes or `optional` flags
    /// share one cache entry (and one vault request per refresh).
    pub fn fetch_spec(&self) -> KeyVaultObject {
        KeyVaultObject {
            index: 0,
            alias: None,
            file_permission: None,
            optional: false,
            ..self.clone()
        }
    }

    /// Where a file fetched for [`fetch_spec`](Self::fetch_spec) goes for
    /// this object: its path under this object's file name, `None` if the
    /// path is not one of the spec's.
    pub fn place_path(&self, fetched_path: &str) -> Option<String> {
        if fetched_path == self.name {
            Some(self.file_name().to_owned())
        } else {
            fetched_path
                .strip_prefix(self.name.as_str())
                .and_then(|rest| rest.strip_prefix('/'))
                .map(|rest| format!("{}/{rest}", self.file_name()))
        }
    }

    /// Whether several versions are mounted (`objectVersionHistory` > 1).
    pub fn uses_history(&self) -> bool {
        self.version_history > 1
    }

    /// The id of version slot `i` with history, `<type>/<name>/<i>`.
    pub fn history_id(&self, i: u32) -> String {
        format!("{}/{}", self.id(), i)
    }

    /// The files this object contributes to a plan: one, or with history
    /// `<file>/0 … <file>/N-1` (exactly N; see [`super::history`]).
    pub fn planned_files(&self, default_mode: FileMode) -> Vec<PlannedFile> {
        let mode = self.file_permission.unwrap_or(default_mode);
        if self.uses_history() {
            (0..self.version_history)
                .map(|i| PlannedFile {
                    path: format!("{}/{i}", self.file_name()),
                    mode,
                    object_id: self.history_id(i),
                    required: i == 0,
                })
                .collect()
        } else {
            vec![PlannedFile {
                path: self.file_name().to_owned(),
                mode,
                object_id: self.id(),
                required: true,
            }]
        }
    }
}

/// Builds the plan of all objects' files.
pub fn plan_objects(objects: &[KeyVaultObject], default_mode: FileMode) -> Result<Plan, PlanError> {
    Plan::new(
        objects
            .iter()
            .flat_map(|o| o.planned_files(default_mode))
            .collect(),
    )
}

/// One problem with one object of `objects`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectFieldError {
    /// The object's index in `array`.
    pub index: usize,
    /// The field, e.g. `objectType`; `None` when the entry as a whole is wrong.
    pub field: Option<&'static str>,
    /// What is wrong and what is allowed.
    pub message: String,
}

impl fmt::Display for ObjectFieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.field {
            Some(field) => write!(f, "objects array[{}] {field}: {}", self.index, self.message),
            None => write!(f, "objects array[{}]: {}", self.index, self.message),
        }
    }
}

/// Why `objects` cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ObjectsError {
    /// `objects` is missing or blank.
    #[error("objects is not set: list the Key Vault objects to mount under `array:`")]
    NotSet,
    /// `objects` is not YAML.
    #[error("objects is not valid YAML: {0}")]
    Yaml(String),
    /// `objects` has no `array:` list.
    #[error(
        "objects must be a YAML mapping with the key `array` holding a list of strings, one per object (`array:` then `- |` and the object's fields)"
    )]
    NoArray,
    /// `array` is empty.
    #[error("objects array is empty: list at least one object")]
    Empty,
    /// More objects than [`MAX_FILES`].
    #[error(
        "objects array lists {0} objects: one volume mounts at most {MAX_FILES}; split them over several SecretProviderClasses"
    )]
    TooManyObjects(usize),
    /// More files than [`MAX_FILES`], counting version-history slots.
    #[error(
        "objects make {0} files (one per object, objectVersionHistory per object with history): one volume mounts at most {MAX_FILES}; lower objectVersionHistory or split the objects over several SecretProviderClasses"
    )]
    TooManyFiles(usize),
    /// One or more objects are invalid.
    #[error("{}", join_errors(.0))]
    Objects(Vec<ObjectFieldError>),
}

impl std::error::Error for ObjectFieldError {}

impl ObjectsError {
    /// Always [`ErrorKind::Invalid`].
    pub fn kind(&self) -> ErrorKind {
        ErrorKind::Invalid
    }
}

fn join_errors(errors: &[ObjectFieldError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

#[derive(Deserialize)]
struct Outer {
    array: Option<Vec<serde_yaml::Value>>,
}

/// The known fields, read as raw text (`Option<String>` takes plain scalars
/// verbatim and maps `~`, `null` and empty values to `None`).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawObject {
    object_name: Option<String>,
    object_alias: Option<String>,
    object_type: Option<String>,
    object_version: Option<String>,
    object_version_history: Option<String>,
    object_format: Option<String>,
    object_encoding: Option<String>,
    file_permission: Option<String>,
    optional: Option<String>,
}

const KNOWN_FIELDS: [&str; 9] = [
    "objectName",
    "objectAlias",
    "objectType",
    "objectVersion",
    "objectVersionHistory",
    "objectFormat",
    "objectEncoding",
    "filePermission",
    "optional",
];

fn trimmed(v: Option<String>) -> Option<String> {
    v.map(|s| s.trim().to_owned()).filter(|s| !s.is_empty())
}

/// Key Vault object names: 1 to 127 letters, digits and `-`.
fn valid_object_name(name: &str) -> bool {
    (1..=127).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// The result of parsing `objects`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedObjects {
    /// The objects, in `array` order.
    pub objects: Vec<KeyVaultObject>,
    /// Non-fatal findings (unknown fields), to log or report as events.
    pub warnings: Vec<String>,
}

/// Parses and validates the `objects` parameter.
pub fn parse_objects(objects: &str) -> Result<ParsedObjects, ObjectsError> {
    if objects.trim().is_empty() {
        return Err(ObjectsError::NotSet);
    }
    let outer: serde_yaml::Value =
        serde_yaml::from_str(objects).map_err(|e| ObjectsError::Yaml(e.to_string()))?;
    if !outer.is_mapping() {
        return Err(ObjectsError::NoArray);
    }
    let outer: Outer = serde_yaml::from_value(outer).map_err(|_| ObjectsError::NoArray)?;
    let items = outer.array.ok_or(ObjectsError::NoArray)?;
    if items.is_empty() {
        return Err(ObjectsError::Empty);
    }
    if items.len() > MAX_FILES {
        return Err(ObjectsError::TooManyObjects(items.len()));
    }
    let mut parsed = ParsedObjects {
        objects: Vec::with_capacity(items.len()),
        warnings: Vec::new(),
    };
    let mut errors = Vec::new();
    for (index, item) in items.into_iter().enumerate() {
        match parse_item(index, item, &mut parsed.warnings) {
            Ok(o) => parsed.objects.push(o),
            Err(mut e) => errors.append(&mut e),
        }
    }
    if !errors.is_empty() {
        return Err(ObjectsError::Objects(errors));
    }
    let files: usize = parsed
        .objects
        .iter()
        .map(|o| o.version_history.max(1) as usize)
        .sum();
    if files > MAX_FILES {
        return Err(ObjectsError::TooManyFiles(files));
    }
    Ok(parsed)
}

fn parse_item(
    index: usize,
    item: serde_yaml::Value,
    warnings: &mut Vec<String>,
) -> Result<KeyVaultObject, Vec<ObjectFieldError>> {
    let whole = |message: String| {
        vec![ObjectFieldError {
            index,
            field: None,
            message,
        }]
    };
    let serde_yaml::Value::String(text) = item else {
        return Err(whole(
            "must be a YAML string holding the object's fields: write `- |` and put the fields on the lines below it".to_owned(),
        ));
    };
    let shape = "must be a YAML mapping of object fields (objectName, objectType, …)";
    let keys: BTreeMap<String, serde_yaml::Value> = match serde_yaml::from_str(&text) {
        Ok(serde_yaml::Value::Mapping(m)) => m
            .into_iter()
            .map(|(k, v)| {
                (
                    k.as_str()
                        .map(str::to_owned)
                        .unwrap_or_else(|| format!("{k:?}")),
                    v,
                )
            })
            .collect(),
        Ok(_) => return Err(whole(shape.to_owned())),
        Err(e) => return Err(whole(format!("is not valid YAML: {e}"))),
    };
    for key in keys.keys() {
        if !KNOWN_FIELDS.contains(&key.as_str()) {
            warnings.push(format!(
                "objects array[{index}]: unknown field {key:?} ignored; known fields are {}",
                KNOWN_FIELDS.join(", ")
            ));
        }
    }
    let raw: RawObject = serde_yaml::from_str(&text).map_err(|e| whole(format!("{e}")))?;

    let mut errors = Vec::new();
    let mut err = |field: &'static str, message: String| {
        errors.push(ObjectFieldError {
            index,
            field: Some(field),
            message,
        })
    };

    let name = trimmed(raw.object_name);
    match &name {
        None => err(
            "objectName",
            "is required: the name of the Key Vault object".into(),
        ),
        Some(n) if !valid_object_name(n) => err(
            "objectName",
            format!("{n:?} is not a Key Vault object name: use 1 to 127 letters, digits and '-'"),
        ),
        Some(_) => {}
    }

    let object_type = match trimmed(raw.object_type).map(|t| t.to_ascii_lowercase()) {
        None => {
            err("objectType", "is required: use secret, key or cert".into());
            None
        }
        Some(t) => match t.as_str() {
            "secret" => Some(ObjectType::Secret),
            "key" => Some(ObjectType::Key),
            "cert" => Some(ObjectType::Cert),
            _ => {
                err(
                    "objectType",
                    format!("{t:?} is not valid: use secret, key or cert"),
                );
                None
            }
        },
    };

    let alias = trimmed(raw.object_alias);
    if let Some(a) = &alias
        && let Err(e) = validate_relative_path(a)
    {
        err("objectAlias", format!("{e}"));
    }

    let version = match trimmed(raw.object_version) {
        None => None,
        Some(v) if v.eq_ignore_ascii_case("latest") => None,
        Some(v) if (1..=64).contains(&v.len()) && v.bytes().all(|b| b.is_ascii_alphanumeric()) => {
            Some(v)
        }
        Some(v) => {
            err(
                "objectVersion",
                format!(
                    "{v:?} is not a version id: use the 32-character id of a version, latest, or leave it empty for the latest"
                ),
            );
            None
        }
    };

    let version_history = match trimmed(raw.object_version_history) {
        None => 0,
        Some(h) => match h.strip_prefix('+').unwrap_or(&h).parse::<u32>() {
            Ok(n) if n as usize <= MAX_FILES => n,
            _ => {
                err(
                    "objectVersionHistory",
                    format!(
                        "{h:?} is not valid: use a whole number, at most {MAX_FILES} (0 or 1 mount one version, N > 1 mounts the N newest versions as <file>/0 … <file>/N-1)"
                    ),
                );
                0
            }
        },
    };

    let format = match trimmed(raw.object_format).map(|f| f.to_ascii_lowercase()) {
        None => ObjectFormat::Pem,
        Some(f) if f == "pem" => ObjectFormat::Pem,
        Some(f) if f == "pfx" => {
            if let Some(t) = object_type
                && t != ObjectType::Secret
            {
                err(
                    "objectFormat",
                    format!(
                        "pfx is only supported with objectType: secret, not {}",
                        t.as_str()
                    ),
                );
            }
            ObjectFormat::Pfx
        }
        Some(f) => {
            err(
                "objectFormat",
                format!("{f:?} is not valid: use pem or pfx"),
            );
            ObjectFormat::Pem
        }
    };

    let encoding = match trimmed(raw.object_encoding) {
        None => ObjectEncoding::Utf8,
        Some(e) => {
            let parsed = match e.to_ascii_lowercase().as_str() {
                "utf-8" => Some(ObjectEncoding::Utf8),
                "base64" => Some(ObjectEncoding::Base64),
                "hex" => Some(ObjectEncoding::Hex),
                _ => None,
            };
            match (parsed, object_type) {
                (_, Some(t)) if t != ObjectType::Secret => {
                    err(
                        "objectEncoding",
                        format!(
                            "is only supported with objectType: secret, not {}",
                            t.as_str()
                        ),
                    );
                    ObjectEncoding::Utf8
                }
                (Some(p), _) => p,
                (None, _) => {
                    err(
                        "objectEncoding",
                        format!("{e:?} is not valid: use utf-8, base64 or hex"),
                    );
                    ObjectEncoding::Utf8
                }
            }
        }
    };

    let file_permission = match trimmed(raw.file_permission) {
        None => None,
        Some(p) => match u32::from_str_radix(&p, 8).ok().and_then(FileMode::new) {
            Some(m) if !p.starts_with('+') => Some(m),
            _ => {
                err(
                    "filePermission",
                    format!(
                        "{p:?} is not valid: use an octal mode from 0000 to 0777, such as \"0644\" or \"0440\""
                    ),
                );
                None
            }
        },
    };

    let optional = match trimmed(raw.optional) {
        None => false,
        Some(v) => match crate::provider::azure::params::parse_go_bool("optional", &v) {
            Ok(b) => b,
            Err(_) => {
                err("optional", format!("{v:?} is not valid: use true or false"));
                false
            }
        },
    };

    match (name, object_type) {
        (Some(name), Some(object_type)) if errors.is_empty() => Ok(KeyVaultObject {
            index,
            name,
            alias,
            object_type,
            version,
            version_history,
            format,
            encoding,
            file_permission,
            optional,
        }),
        _ => Err(errors),
    }
}
