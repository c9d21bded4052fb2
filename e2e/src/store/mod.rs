//! Vault contents: secrets, keys and certificates with their versions, and
//! each vault's access list. Every mutation goes through [`Store`].

mod model;

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

pub use model::*;

use crate::directory::Directory;
use crate::error::EmulatorError;
use crate::pki::{CertificateMaterial, KeySpec, public_jwk};
use crate::seed::{
    AccessSeed, CertificateVersionSeed, KeyVersionSeed, Seed, VersionAttributesSeed,
};
use crate::util::{is_version_id, new_version_id, unix_now};

/// A new secret version written by a test.
#[derive(Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NewSecretVersion {
    pub value: String,
    #[serde(default)]
    pub content_type: Option<String>,
    #[serde(flatten)]
    pub attributes: VersionAttributesSeed,
}

impl std::fmt::Debug for NewSecretVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewSecretVersion")
            .field("value", &"<redacted>")
            .field("content_type", &self.content_type)
            .field("attributes", &self.attributes)
            .finish()
    }
}

/// All vaults, keyed by lowercase name.
#[derive(Debug, Clone, Default)]
pub struct Store {
    pub vaults: BTreeMap<String, Vault>,
}

fn pick_version(requested: &Option<String>) -> Result<String, EmulatorError> {
    match requested {
        Some(v) if is_version_id(v) => Ok(v.clone()),
        Some(v) => Err(EmulatorError::Invalid(format!(
            "version '{v}' is not 32 lowercase hex characters"
        ))),
        None => Ok(new_version_id()),
    }
}

fn check_name(kind: ObjectKind, name: &str) -> Result<(), EmulatorError> {
    if name.is_empty()
        || name.len() > 127
        || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    {
        return Err(EmulatorError::Invalid(format!(
            "{} name '{name}' must match ^[0-9a-zA-Z-]+$",
            kind.noun()
        )));
    }
    Ok(())
}

impl Store {
    /// Build the store from a seed, generating key material.
    pub fn from_seed(seed: &Seed, directory: &Directory) -> Result<Self, EmulatorError> {
        let now = unix_now();
        let mut store = Store::default();
        for v in &seed.vaults {
            let ok = (3..=24).contains(&v.name.len())
                && v.name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-');
            if !ok {
                return Err(EmulatorError::Seed(format!(
                    "vault name '{}' must be 3-24 characters of [-A-Za-z0-9]",
                    v.name
                )));
            }
            let vault = Vault {
                name: v.name.to_ascii_lowercase(),
                tenant: v.tenant.clone().unwrap_or_else(|| seed.tenant.clone()),
                location: v.location.clone(),
                permission_model: v.permission_model,
                access: resolve_access(&v.access, directory)?,
                secrets: BTreeMap::new(),
                keys: BTreeMap::new(),
                certificates: BTreeMap::new(),
            };
            let key = vault.name.clone();
            if store.vaults.insert(key.clone(), vault).is_some() {
                return Err(EmulatorError::Seed(format!(
                    "vault '{}' is declared twice",
                    v.name
                )));
            }
            for s in &v.secrets {
                let n = s.versions.len() as i64;
                for (i, sv) in s.versions.iter().enumerate() {
                    let created = sv.attributes.created.unwrap_or(now - (n - 1 - i as i64));
                    let new = NewSecretVersion {
                        value: sv.value.clone(),
                        content_type: sv.content_type.clone(),
                        attributes: sv.attributes.clone(),
                    };
                    store.add_secret_version_at(&key, &s.name, new, created)?;
                }
            }
            for k in &v.keys {
                let n = k.versions.len() as i64;
                for (i, kv) in k.versions.iter().enumerate() {
                    let created = kv.attributes.created.unwrap_or(now - (n - 1 - i as i64));
                    store.add_key_version_at(&key, &k.name, kv, created)?;
                }
            }
            for c in &v.certificates {
                let n = c.versions.len() as i64;
                for (i, cv) in c.versions.iter().enumerate() {
                    let created = cv.attributes.created.unwrap_or(now - (n - 1 - i as i64));
                    store.add_certificate_version_at(&key, &c.name, cv, created)?;
                }
            }
        }
        Ok(store)
    }

    /// The vault named `name` (case-insensitive).
    pub fn vault(&self, name: &str) -> Option<&Vault> {
        self.vaults.get(&name.to_ascii_lowercase())
    }

    fn vault_mut(&mut self, name: &str) -> Result<&mut Vault, EmulatorError> {
        self.vaults
            .get_mut(&name.to_ascii_lowercase())
            .ok_or_else(|| EmulatorError::VaultNotFound(name.to_string()))
    }

    /// Append a new secret version (now the latest); returns its version id.
    pub fn add_secret_version(
        &mut self,
        vault: &str,
        name: &str,
        new: NewSecretVersion,
    ) -> Result<String, EmulatorError> {
        let created = new.attributes.created.unwrap_or_else(unix_now);
        self.add_secret_version_at(vault, name, new, created)
    }

    fn add_secret_version_at(
        &mut self,
        vault: &str,
        name: &str,
        new: NewSecretVersion,
        created: i64,
    ) -> Result<String, EmulatorError> {
        check_name(ObjectKind::Secret, name)?;
        let v = self.vault_mut(vault)?;
        let versions = v.secrets.entry(name.to_string()).or_default();
        if versions.first().is_some_and(|s| s.certificate.is_some()) {
            return Err(EmulatorError::Invalid(format!(
                "secret '{name}' backs a certificate; write a certificate version instead"
            )));
        }
        let version = pick_version(&new.attributes.version)?;
        if versions.iter().any(|s| s.version == version) {
            return Err(EmulatorError::Invalid(format!(
                "version {version} already exists"
            )));
        }
        versions.push(SecretVersion {
            version: version.clone(),
            value: new.value,
            content_type: new.content_type,
            tags: new.attributes.tags.clone(),
            attributes: Attributes::from_seed(&new.attributes, created),
            certificate: None,
        });
        Ok(version)
    }

    /// Append a new key version; returns its version id.
    pub fn add_key_version(
        &mut self,
        vault: &str,
        name: &str,
        seed: &KeyVersionSeed,
    ) -> Result<String, EmulatorError> {
        let created = seed.attributes.created.unwrap_or_else(unix_now);
        self.add_key_version_at(vault, name, seed, created)
    }

    fn add_key_version_at(
        &mut self,
        vault: &str,
        name: &str,
        seed: &KeyVersionSeed,
        created: i64,
    ) -> Result<String, EmulatorError> {
        check_name(ObjectKind::Key, name)?;
        let key = match &seed.pem {
            Some(pem) => rcgen::KeyPair::from_pem(pem)?,
            None => KeySpec::from_seed(seed.kty, seed.key_size, seed.crv.as_deref())?.generate()?,
        };
        let jwk = public_jwk(&key)?;
        let version = pick_version(&seed.attributes.version)?;
        let v = self.vault_mut(vault)?;
        let versions = v.keys.entry(name.to_string()).or_default();
        if versions.first().is_some_and(|k| k.managed) {
            return Err(EmulatorError::Invalid(format!(
                "key '{name}' backs a certificate"
            )));
        }
        versions.push(KeyVersion {
            version: version.clone(),
            jwk,
            tags: seed.attributes.tags.clone(),
            attributes: Attributes::from_seed(&seed.attributes, created),
            managed: false,
        });
        Ok(version)
    }

    /// Issue a new certificate version, with its backing key and secret of
    /// the same name and version; returns the version id.
    pub fn add_certificate_version(
        &mut self,
        vault: &str,
        name: &str,
        seed: &CertificateVersionSeed,
    ) -> Result<String, EmulatorError> {
        let created = seed.attributes.created.unwrap_or_else(unix_now);
        self.add_certificate_version_at(vault, name, seed, created)
    }

    fn add_certificate_version_at(
        &mut self,
        vault: &str,
        name: &str,
        seed: &CertificateVersionSeed,
        created: i64,
    ) -> Result<String, EmulatorError> {
        check_name(ObjectKind::Certificate, name)?;
        let spec = KeySpec::from_seed(seed.kty, seed.key_size, seed.crv.as_deref())?;
        let content_type = seed
            .content_type
            .clone()
            .unwrap_or_else(|| CONTENT_TYPE_PFX.to_string());
        if content_type != CONTENT_TYPE_PFX && content_type != CONTENT_TYPE_PEM {
            return Err(EmulatorError::Invalid(format!(
                "certificate content type must be {CONTENT_TYPE_PFX} or {CONTENT_TYPE_PEM}"
            )));
        }
        let subject = seed.subject.clone().unwrap_or_else(|| format!("CN={name}"));
        let validity_months = seed.validity_months.unwrap_or(12);
        let material = Arc::new(match seed.validity_days {
            Some(days) => {
                CertificateMaterial::self_signed_for_days(&subject, &seed.dns_names, spec, days)?
            }
            None => {
                CertificateMaterial::self_signed(&subject, &seed.dns_names, spec, validity_months)?
            }
        });
        // The policy's lifetime in whole months, at least 1.
        let validity_months = match seed.validity_days {
            Some(days) => days.div_ceil(30).max(1),
            None => validity_months,
        };
        let exportable = seed.exportable.unwrap_or(true);
        // A non-exportable certificate's secret holds no private key, as in
        // Key Vault: the certificate only.
        let value = match (content_type == CONTENT_TYPE_PFX, exportable) {
            (true, true) => crate::util::b64_std(&material.pfx()?),
            (true, false) => crate::util::b64_std(&material.pfx_certificate_only()?),
            (false, true) => material.pem_bundle(),
            (false, false) => material.pem_certificate_only(),
        };
        let version = pick_version(&seed.attributes.version)?;
        let mut attributes = Attributes::from_seed(&seed.attributes, created);
        attributes.nbf = Some(seed.attributes.nbf.unwrap_or(material.not_before));
        attributes.exp = Some(seed.attributes.exp.unwrap_or(material.not_after));
        let v = self.vault_mut(vault)?;
        if v.secrets
            .get(name)
            .is_some_and(|s| s.first().is_some_and(|x| x.certificate.is_none()))
        {
            return Err(EmulatorError::Invalid(format!(
                "a plain secret named '{name}' exists; a certificate cannot share its name"
            )));
        }
        if v.keys
            .get(name)
            .is_some_and(|k| k.first().is_some_and(|x| !x.managed))
        {
            return Err(EmulatorError::Invalid(format!(
                "a plain key named '{name}' exists; a certificate cannot share its name"
            )));
        }
        v.certificates
            .entry(name.to_string())
            .or_default()
            .push(CertificateVersion {
                version: version.clone(),
                material: material.clone(),
                tags: seed.attributes.tags.clone(),
                attributes: attributes.clone(),
                content_type: content_type.clone(),
                exportable,
                spec,
                validity_months,
                dns_names: seed.dns_names.clone(),
            });
        v.keys
            .entry(name.to_string())
            .or_default()
            .push(KeyVersion {
                version: version.clone(),
                jwk: material.jwk.clone(),
                tags: seed.attributes.tags.clone(),
                attributes: attributes.clone(),
                managed: true,
            });
        v.secrets
            .entry(name.to_string())
            .or_default()
            .push(SecretVersion {
                version: version.clone(),
                value,
                content_type: Some(content_type),
                tags: seed.attributes.tags.clone(),
                attributes,
                certificate: Some(material),
            });
        Ok(version)
    }

    /// Enable or disable one version (`None` = the latest). A certificate's
    /// backing key and secret follow it.
    pub fn set_enabled(
        &mut self,
        vault: &str,
        kind: ObjectKind,
        name: &str,
        version: Option<&str>,
        enabled: bool,
    ) -> Result<String, EmulatorError> {
        let vault_name = vault.to_string();
        let v = self.vault_mut(vault)?;
        let now = unix_now();
        let resolved = match kind {
            ObjectKind::Secret => set_in(
                &mut v.secrets,
                &vault_name,
                kind,
                name,
                version,
                enabled,
                now,
            )?,
            ObjectKind::Key => set_in(&mut v.keys, &vault_name, kind, name, version, enabled, now)?,
            ObjectKind::Certificate => {
                let r = set_in(
                    &mut v.certificates,
                    &vault_name,
                    kind,
                    name,
                    version,
                    enabled,
                    now,
                )?;
                let _ = set_in(
                    &mut v.secrets,
                    &vault_name,
                    ObjectKind::Secret,
                    name,
                    Some(&r),
                    enabled,
                    now,
                );
                let _ = set_in(
                    &mut v.keys,
                    &vault_name,
                    ObjectKind::Key,
                    name,
                    Some(&r),
                    enabled,
                    now,
                );
                r
            }
        };
        Ok(resolved)
    }

    /// Delete one version (`Some`) or the whole object (`None`). Key Vault
    /// itself cannot delete single versions; the emulator can, for tests.
    pub fn delete(
        &mut self,
        vault: &str,
        kind: ObjectKind,
        name: &str,
        version: Option<&str>,
    ) -> Result<(), EmulatorError> {
        let vault_name = vault.to_string();
        let v = self.vault_mut(vault)?;
        match kind {
            ObjectKind::Secret => delete_in(&mut v.secrets, &vault_name, kind, name, version),
            ObjectKind::Key => delete_in(&mut v.keys, &vault_name, kind, name, version),
            ObjectKind::Certificate => {
                delete_in(&mut v.certificates, &vault_name, kind, name, version)?;
                let _ = delete_in(
                    &mut v.secrets,
                    &vault_name,
                    ObjectKind::Secret,
                    name,
                    version,
                );
                let _ = delete_in(&mut v.keys, &vault_name, ObjectKind::Key, name, version);
                Ok(())
            }
        }
    }

    /// Replace a vault's access list.
    pub fn set_access(
        &mut self,
        vault: &str,
        access: &[AccessSeed],
        directory: &Directory,
    ) -> Result<(), EmulatorError> {
        let resolved = resolve_access(access, directory)?;
        self.vault_mut(vault)?.access = resolved;
        Ok(())
    }

    /// The latest certificate version's seed, to issue a renewal like it.
    pub fn certificate_template(&self, vault: &str, name: &str) -> Option<CertificateVersionSeed> {
        let c = self.vault(vault)?.certificates.get(name)?.last()?;
        let (kty, key_size, crv) = match c.spec {
            KeySpec::Rsa { bits } => (crate::seed::KeyType::Rsa, Some(bits), None),
            KeySpec::Ec { curve } => (
                crate::seed::KeyType::Ec,
                None,
                Some(curve.jwk_name().to_string()),
            ),
        };
        Some(CertificateVersionSeed {
            subject: Some(c.material.subject.clone()),
            dns_names: c.dns_names.clone(),
            content_type: Some(c.content_type.clone()),
            kty,
            key_size,
            crv,
            validity_months: Some(c.validity_months),
            validity_days: None,
            exportable: Some(c.exportable),
            attributes: VersionAttributesSeed::default(),
        })
    }
}

fn set_in<T: Versioned>(
    map: &mut BTreeMap<String, Vec<T>>,
    vault: &str,
    kind: ObjectKind,
    name: &str,
    version: Option<&str>,
    enabled: bool,
    now: i64,
) -> Result<String, EmulatorError> {
    let versions = map
        .get_mut(name)
        .ok_or_else(|| EmulatorError::ObjectNotFound {
            vault: vault.to_string(),
            kind: kind.noun(),
            name: name.to_string(),
        })?;
    let item = match version {
        None | Some("") => versions.last_mut(),
        Some(want) => versions
            .iter_mut()
            .find(|x| x.version().eq_ignore_ascii_case(want)),
    }
    .ok_or_else(|| EmulatorError::VersionNotFound {
        vault: vault.to_string(),
        kind: kind.noun(),
        name: name.to_string(),
        version: version.unwrap_or("").to_string(),
    })?;
    let a = item.attributes_mut();
    a.enabled = enabled;
    a.updated = now;
    Ok(item.version().to_string())
}

fn delete_in<T: Versioned>(
    map: &mut BTreeMap<String, Vec<T>>,
    vault: &str,
    kind: ObjectKind,
    name: &str,
    version: Option<&str>,
) -> Result<(), EmulatorError> {
    let not_found = || EmulatorError::ObjectNotFound {
        vault: vault.to_string(),
        kind: kind.noun(),
        name: name.to_string(),
    };
    match version {
        None => map.remove(name).map(|_| ()).ok_or_else(not_found),
        Some(want) => {
            let versions = map.get_mut(name).ok_or_else(not_found)?;
            let before = versions.len();
            versions.retain(|x| !x.version().eq_ignore_ascii_case(want));
            if versions.len() == before {
                return Err(EmulatorError::VersionNotFound {
                    vault: vault.to_string(),
                    kind: kind.noun(),
                    name: name.to_string(),
                    version: want.to_string(),
                });
            }
            if versions.is_empty() {
                map.remove(name);
            }
            Ok(())
        }
    }
}

fn resolve_access(
    access: &[AccessSeed],
    directory: &Directory,
) -> Result<Vec<AccessEntry>, EmulatorError> {
    access
        .iter()
        .map(|a| {
            let id = directory
                .find(&a.identity)
                .ok_or_else(|| EmulatorError::IdentityNotFound(a.identity.clone()))?;
            Ok(AccessEntry {
                client_id: id.client_id.clone(),
                object_id: id.object_id.clone(),
                secrets: Perms::from_seed(&a.secrets),
                keys: Perms::from_seed(&a.keys),
                certificates: Perms::from_seed(&a.certificates),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests;
