//! The seed: vaults, objects with versions, identities, access lists and
//! federations, read from YAML (camelCase keys).
//!
//! ```yaml
//! tenant: 9c0d2e7b-1a3f-4b6c-8d5e-7f1a2b3c4d5e
//! identities:
//!   - name: node-identity
//!     kind: managedIdentity          # or servicePrincipal (default)
//!     clientId: 5a1d3e0c-6f0e-4c55-9a57-3c2f1b7d9e21
//! federations:
//!   - subject: system:serviceaccount:default:workload-sa
//!     clientId: <client id of a servicePrincipal identity>
//! vaults:
//!   - name: kv-demo
//!     access:
//!       - identity: node-identity    # name, client id or object id
//!         secrets: [get, list]
//!     secrets:
//!       - name: sql-password
//!         versions:                  # oldest first; the last is the latest
//!           - value: s3cr3t
//! ```

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::EmulatorError;

/// The built-in seed: the acceptance case of `fixtures/seed` (vault
/// `kv-demo`, secret `sql-password`, the node's user-assigned managed identity).
pub const DEMO_SEED_YAML: &str = include_str!("../seeds/demo.yaml");

/// The audience Kubernetes service-account tokens carry for Entra workload identity.
pub const TOKEN_EXCHANGE_AUDIENCE: &str = "api://AzureADTokenExchange";

/// Everything the emulator starts with.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Seed {
    /// The default tenant of identities and vaults.
    pub tenant: String,
    /// Issuer URL put in minted service-account tokens and used as the default
    /// issuer of federations.
    #[serde(default = "default_oidc_issuer")]
    pub oidc_issuer: String,
    #[serde(default)]
    pub identities: Vec<IdentitySeed>,
    #[serde(default)]
    pub federations: Vec<FederationSeed>,
    /// aad-pod-identity (NMI) bindings: pod → identity.
    #[serde(default)]
    pub pod_identities: Vec<PodIdentitySeed>,
    #[serde(default)]
    pub vaults: Vec<VaultSeed>,
}

fn default_oidc_issuer() -> String {
    "https://oidc.emulator.secretfs.invalid/".to_string()
}

impl Seed {
    /// Parse a seed from YAML text.
    pub fn from_yaml(text: &str) -> Result<Self, EmulatorError> {
        Ok(serde_yaml::from_str(text)?)
    }

    /// Read a seed from a YAML file.
    pub fn from_file(path: &std::path::Path) -> Result<Self, EmulatorError> {
        Self::from_yaml(&std::fs::read_to_string(path)?)
    }

    /// The built-in seed (see [`DEMO_SEED_YAML`]).
    pub fn demo() -> Self {
        // The built-in YAML is checked by a unit test; a parse failure here
        // is a build defect, not an input error.
        Self::from_yaml(DEMO_SEED_YAML).expect("built-in demo seed parses")
    }
}

/// Whether an identity is an application (client secret / federation) or a
/// managed identity served by IMDS.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum IdentityKind {
    #[default]
    ServicePrincipal,
    ManagedIdentity,
}

/// One Entra ID principal.
#[derive(Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IdentitySeed {
    /// A label for tests and counters' documentation; unique.
    pub name: String,
    pub client_id: String,
    /// Generated when absent.
    #[serde(default)]
    pub object_id: Option<String>,
    #[serde(default)]
    pub kind: IdentityKind,
    /// The only accepted client secret of a service principal.
    #[serde(default)]
    pub client_secret: Option<String>,
    /// ARM resource id of a managed identity (`msi_res_id`).
    #[serde(default)]
    pub resource_id: Option<String>,
    /// The VM's system-assigned identity (IMDS default when no selector is sent).
    #[serde(default)]
    pub system_assigned: bool,
    /// Defaults to the seed's tenant.
    #[serde(default)]
    pub tenant: Option<String>,
}

impl std::fmt::Debug for IdentitySeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdentitySeed")
            .field("name", &self.name)
            .field("client_id", &self.client_id)
            .field("object_id", &self.object_id)
            .field("kind", &self.kind)
            .field(
                "client_secret",
                &self.client_secret.as_ref().map(|_| "<redacted>"),
            )
            .field("resource_id", &self.resource_id)
            .field("system_assigned", &self.system_assigned)
            .field("tenant", &self.tenant)
            .finish()
    }
}

/// A federated identity credential: a Kubernetes service-account token with
/// this issuer and subject may be exchanged for a token of `client_id`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FederationSeed {
    /// Defaults to the seed's `oidcIssuer`.
    #[serde(default)]
    pub issuer: Option<String>,
    /// `system:serviceaccount:<namespace>:<name>`.
    pub subject: String,
    pub client_id: String,
    /// Defaults to `api://AzureADTokenExchange`.
    #[serde(default)]
    pub audience: Option<String>,
}

/// An aad-pod-identity binding served by the NMI endpoint.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PodIdentitySeed {
    pub namespace: String,
    /// Any pod of the namespace when absent.
    #[serde(default)]
    pub pod_name: Option<String>,
    pub client_id: String,
}

/// How a vault authorises data-plane calls; decides the 403 inner code.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum PermissionModel {
    /// Vault access policies: denial is `AccessDenied`.
    #[default]
    AccessPolicy,
    /// Azure RBAC: denial is `ForbiddenByRbac`.
    Rbac,
}

/// A data-plane permission of an access-list entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Permission {
    Get,
    List,
    /// Every read permission.
    All,
}

/// One access-list entry of a vault.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AccessSeed {
    /// Identity name, client id or object id.
    pub identity: String,
    #[serde(default)]
    pub secrets: Vec<Permission>,
    #[serde(default)]
    pub keys: Vec<Permission>,
    #[serde(default)]
    pub certificates: Vec<Permission>,
}

/// One vault.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VaultSeed {
    /// 3–24 characters of `[-A-Za-z0-9]`; the first DNS label of the vault host.
    pub name: String,
    #[serde(default)]
    pub tenant: Option<String>,
    /// Reported in `x-ms-keyvault-region` and in denial messages.
    #[serde(default = "default_location")]
    pub location: String,
    #[serde(default)]
    pub permission_model: PermissionModel,
    #[serde(default)]
    pub access: Vec<AccessSeed>,
    #[serde(default)]
    pub secrets: Vec<SecretSeed>,
    #[serde(default)]
    pub keys: Vec<KeySeed>,
    #[serde(default)]
    pub certificates: Vec<CertificateSeed>,
}

fn default_location() -> String {
    "eastus".to_string()
}

fn yes() -> bool {
    true
}

/// Attributes every seeded version may set.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VersionAttributesSeed {
    /// 32 hex characters; generated when absent.
    #[serde(default)]
    pub version: Option<String>,
    #[serde(default = "yes")]
    pub enabled: bool,
    #[serde(default)]
    pub nbf: Option<i64>,
    #[serde(default)]
    pub exp: Option<i64>,
    /// Unix seconds; defaults to start time minus the distance from the latest.
    #[serde(default)]
    pub created: Option<i64>,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
}

impl Default for VersionAttributesSeed {
    fn default() -> Self {
        Self {
            version: None,
            enabled: true,
            nbf: None,
            exp: None,
            created: None,
            tags: BTreeMap::new(),
        }
    }
}

/// A secret and its versions, oldest first.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecretSeed {
    pub name: String,
    pub versions: Vec<SecretVersionSeed>,
}

/// One secret version.
#[derive(Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SecretVersionSeed {
    pub value: String,
    #[serde(default)]
    pub content_type: Option<String>,
    #[serde(flatten)]
    pub attributes: VersionAttributesSeed,
}

impl std::fmt::Debug for SecretVersionSeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretVersionSeed")
            .field("value", &"<redacted>")
            .field("content_type", &self.content_type)
            .field("attributes", &self.attributes)
            .finish()
    }
}

/// Key algorithm family.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum KeyType {
    #[default]
    #[serde(rename = "RSA")]
    Rsa,
    #[serde(rename = "EC")]
    Ec,
}

/// A key and its versions, oldest first.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KeySeed {
    pub name: String,
    pub versions: Vec<KeyVersionSeed>,
}

/// One key version: generated, or from a PEM private key.
#[derive(Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyVersionSeed {
    #[serde(default)]
    pub kty: KeyType,
    /// RSA: 2048 (default), 3072 or 4096.
    #[serde(default)]
    pub key_size: Option<u32>,
    /// EC: `P-256` (default) or `P-384`.
    #[serde(default)]
    pub crv: Option<String>,
    /// A PKCS#8, PKCS#1 or SEC1 private key in PEM; overrides generation.
    #[serde(default)]
    pub pem: Option<String>,
    #[serde(flatten)]
    pub attributes: VersionAttributesSeed,
}

impl std::fmt::Debug for KeyVersionSeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyVersionSeed")
            .field("kty", &self.kty)
            .field("key_size", &self.key_size)
            .field("crv", &self.crv)
            .field("pem", &self.pem.as_ref().map(|_| "<redacted>"))
            .field("attributes", &self.attributes)
            .finish()
    }
}

/// A certificate and its versions, oldest first. Each version also creates
/// the backing key and secret with the same name and version.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CertificateSeed {
    pub name: String,
    pub versions: Vec<CertificateVersionSeed>,
}

/// One certificate version (self-signed, issuer `Self`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CertificateVersionSeed {
    /// Defaults to `CN=<certificate name>`.
    #[serde(default)]
    pub subject: Option<String>,
    #[serde(default)]
    pub dns_names: Vec<String>,
    /// `application/x-pkcs12` (default) or `application/x-pem-file`.
    #[serde(default)]
    pub content_type: Option<String>,
    #[serde(default)]
    pub kty: KeyType,
    #[serde(default)]
    pub key_size: Option<u32>,
    #[serde(default)]
    pub crv: Option<String>,
    /// Defaults to 12.
    #[serde(default)]
    pub validity_months: Option<u32>,
    /// The lifetime in days instead (at least 1): a certificate that
    /// expires soon.
    #[serde(default)]
    pub validity_days: Option<u32>,
    /// When false, the backing secret holds the certificate only, no
    /// private key, as Key Vault serves a non-exportable certificate's.
    #[serde(default)]
    pub exportable: Option<bool>,
    #[serde(flatten)]
    pub attributes: VersionAttributesSeed,
}

/// A certificate to import ([`crate::Control::import_certificate`]). The backing secret serves `value` byte for
/// byte: the base64 PFX (`application/x-pkcs12`, empty password) or the PEM
/// text (`application/x-pem-file`: a PKCS#8 `PRIVATE KEY` and certificates).
/// The certificate (`cer`) is the one whose public key matches the private
/// key; the other certificates (a chain, in any order) stay in the value.
#[derive(Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CertificateImport {
    pub value: String,
    /// `application/x-pkcs12` (default) or `application/x-pem-file`.
    #[serde(default)]
    pub content_type: Option<String>,
    #[serde(flatten)]
    pub attributes: VersionAttributesSeed,
}

impl std::fmt::Debug for CertificateImport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateImport")
            .field("value", &"<redacted>")
            .field("content_type", &self.content_type)
            .field("attributes", &self.attributes)
            .finish()
    }
}

/// A key to import ([`crate::Control::import_key`]) from a public JSON Web Key (RSA `n`/`e`, or EC
/// `crv` P-256, P-384 or P-521 with `x`/`y`), as Key Vault returns it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyImport {
    pub jwk: serde_json::Value,
    #[serde(flatten)]
    pub attributes: VersionAttributesSeed,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_seed_is_the_acceptance_case() {
        let seed = Seed::demo();
        assert_eq!(seed.tenant, "9c0d2e7b-1a3f-4b6c-8d5e-7f1a2b3c4d5e");
        let vault = seed.vaults.iter().find(|v| v.name == "kv-demo").unwrap();
        assert!(vault.secrets.iter().any(|s| s.name == "sql-password"));
        assert!(
            seed.identities
                .iter()
                .any(|i| i.client_id == "5a1d3e0c-6f0e-4c55-9a57-3c2f1b7d9e21"
                    && i.kind == IdentityKind::ManagedIdentity)
        );
    }

    #[test]
    fn conformance_seed_parses() {
        let seed = Seed::from_yaml(include_str!("../seeds/conformance.yaml")).unwrap();
        assert!(seed.vaults.len() >= 2);
    }

    #[test]
    fn unknown_fields_are_rejected() {
        let err = Seed::from_yaml("tenant: t\nvault: []\n").unwrap_err();
        assert!(err.to_string().contains("unknown field"), "{err}");
    }

    #[test]
    fn debug_redacts_secret_values() {
        let v = SecretVersionSeed {
            value: "hunter2".into(),
            content_type: None,
            attributes: VersionAttributesSeed::default(),
        };
        assert!(!format!("{v:?}").contains("hunter2"));
    }
}
