//! The data model of vault contents: object kinds, versions with their
//! attributes, access-list entries, vaults.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::pki::{CertificateMaterial, KeySpec, PublicJwk};
use crate::seed::{Permission, PermissionModel, VersionAttributesSeed};

/// `application/x-pkcs12`
pub const CONTENT_TYPE_PFX: &str = "application/x-pkcs12";
/// `application/x-pem-file`
pub const CONTENT_TYPE_PEM: &str = "application/x-pem-file";

/// The three object types of the data plane.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ObjectKind {
    Secret,
    Key,
    Certificate,
}

impl ObjectKind {
    /// The path collection: `secrets`, `keys`, `certificates`.
    pub fn collection(self) -> &'static str {
        match self {
            ObjectKind::Secret => "secrets",
            ObjectKind::Key => "keys",
            ObjectKind::Certificate => "certificates",
        }
    }

    /// Parse a path collection.
    pub fn from_collection(s: &str) -> Option<Self> {
        match s {
            "secrets" => Some(ObjectKind::Secret),
            "keys" => Some(ObjectKind::Key),
            "certificates" => Some(ObjectKind::Certificate),
            _ => None,
        }
    }

    pub(crate) fn noun(self) -> &'static str {
        match self {
            ObjectKind::Secret => "secret",
            ObjectKind::Key => "key",
            ObjectKind::Certificate => "certificate",
        }
    }
}

/// Common attributes of a version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attributes {
    pub enabled: bool,
    pub nbf: Option<i64>,
    pub exp: Option<i64>,
    pub created: i64,
    pub updated: i64,
}

impl Attributes {
    pub(crate) fn from_seed(a: &VersionAttributesSeed, created: i64) -> Self {
        Self {
            enabled: a.enabled,
            nbf: a.nbf,
            exp: a.exp,
            created,
            updated: created,
        }
    }
}

/// One version of a secret (including certificate-backing secrets).
#[derive(Clone)]
pub struct SecretVersion {
    pub version: String,
    pub value: String,
    pub content_type: Option<String>,
    pub tags: BTreeMap<String, String>,
    pub attributes: Attributes,
    /// Set on the secret that backs a certificate (`managed: true`, `kid`).
    pub certificate: Option<Arc<CertificateMaterial>>,
}

impl std::fmt::Debug for SecretVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretVersion")
            .field("version", &self.version)
            .field("value", &"<redacted>")
            .field("content_type", &self.content_type)
            .field("attributes", &self.attributes)
            .field("managed", &self.certificate.is_some())
            .finish()
    }
}

/// One version of a key.
#[derive(Debug, Clone)]
pub struct KeyVersion {
    pub version: String,
    pub jwk: PublicJwk,
    pub tags: BTreeMap<String, String>,
    pub attributes: Attributes,
    /// Backs a certificate.
    pub managed: bool,
}

/// One version of a certificate.
#[derive(Debug, Clone)]
pub struct CertificateVersion {
    pub version: String,
    pub material: Arc<CertificateMaterial>,
    pub tags: BTreeMap<String, String>,
    pub attributes: Attributes,
    pub content_type: String,
    pub exportable: bool,
    pub spec: KeySpec,
    pub validity_months: u32,
    pub dns_names: Vec<String>,
}

/// Anything with a version id and attributes.
pub trait Versioned {
    fn version(&self) -> &str;
    fn attributes_mut(&mut self) -> &mut Attributes;
}

macro_rules! versioned {
    ($t:ty) => {
        impl Versioned for $t {
            fn version(&self) -> &str {
                &self.version
            }
            fn attributes_mut(&mut self) -> &mut Attributes {
                &mut self.attributes
            }
        }
    };
}
versioned!(SecretVersion);
versioned!(KeyVersion);
versioned!(CertificateVersion);

/// Read permissions of one object type.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Perms {
    pub get: bool,
    pub list: bool,
}

impl Perms {
    pub(crate) fn from_seed(p: &[Permission]) -> Self {
        let all = p.contains(&Permission::All);
        Self {
            get: all || p.contains(&Permission::Get),
            list: all || p.contains(&Permission::List),
        }
    }
}

/// One access-list entry, resolved to ids.
#[derive(Debug, Clone)]
pub struct AccessEntry {
    pub client_id: String,
    pub object_id: String,
    pub secrets: Perms,
    pub keys: Perms,
    pub certificates: Perms,
}

impl AccessEntry {
    /// Permissions of this entry for `kind`.
    pub fn perms(&self, kind: ObjectKind) -> Perms {
        match kind {
            ObjectKind::Secret => self.secrets,
            ObjectKind::Key => self.keys,
            ObjectKind::Certificate => self.certificates,
        }
    }
}

/// One vault.
#[derive(Debug, Clone)]
pub struct Vault {
    pub name: String,
    pub tenant: String,
    pub location: String,
    pub permission_model: PermissionModel,
    pub access: Vec<AccessEntry>,
    pub secrets: BTreeMap<String, Vec<SecretVersion>>,
    pub keys: BTreeMap<String, Vec<KeyVersion>>,
    pub certificates: BTreeMap<String, Vec<CertificateVersion>>,
}

/// Look up a version: `None` or empty means the latest (last created).
pub fn find_version<'a, T: Versioned>(versions: &'a [T], version: Option<&str>) -> Option<&'a T> {
    match version {
        None | Some("") => versions.last(),
        Some(v) => versions
            .iter()
            .find(|x| x.version().eq_ignore_ascii_case(v)),
    }
}

impl Vault {
    /// May the principal (`client_id`/`object_id`) do `op` on `kind`?
    pub fn allows(&self, client_id: &str, object_id: &str, kind: ObjectKind, list: bool) -> bool {
        self.access.iter().any(|a| {
            (a.client_id.eq_ignore_ascii_case(client_id)
                || a.object_id.eq_ignore_ascii_case(object_id))
                && if list {
                    a.perms(kind).list
                } else {
                    a.perms(kind).get
                }
        })
    }
}
