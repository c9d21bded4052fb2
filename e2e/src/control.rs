//! In-process control of a running emulator: write, disable or delete
//! versions, change access lists, inject faults, read counters, mint tokens.
//! The admin HTTP API is a thin layer over this.

use std::sync::Arc;

use crate::counters::{CounterFilter, CounterRow};
use crate::directory::Directory;
use crate::error::EmulatorError;
use crate::faults::{ActiveFault, FaultSpec};
use crate::secrets_seen::{SecretKind, SeenSecret, store_secrets};
use crate::seed::{
    AccessSeed, CertificateImport, CertificateVersionSeed, KeyImport, KeyVersionSeed,
};
use crate::state::Shared;
use crate::store::{NewSecretVersion, ObjectKind};
use crate::tokens::ServiceAccountTokenRequest;

/// A cheap, cloneable handle on the emulator's state.
#[derive(Debug, Clone)]
pub struct Control {
    pub(crate) shared: Arc<Shared>,
}

impl Control {
    /// Write `value` as the new latest version of secret `name`; returns the version id.
    pub fn set_secret(
        &self,
        vault: &str,
        name: &str,
        value: &str,
    ) -> Result<String, EmulatorError> {
        self.add_secret_version(
            vault,
            name,
            NewSecretVersion {
                value: value.to_string(),
                ..Default::default()
            },
        )
    }

    /// Write a new secret version with attributes; returns the version id.
    pub fn add_secret_version(
        &self,
        vault: &str,
        name: &str,
        new: NewSecretVersion,
    ) -> Result<String, EmulatorError> {
        self.shared.store_mut().add_secret_version(vault, name, new)
    }

    /// Write a new key version; returns the version id.
    pub fn add_key_version(
        &self,
        vault: &str,
        name: &str,
        seed: &KeyVersionSeed,
    ) -> Result<String, EmulatorError> {
        self.shared.store_mut().add_key_version(vault, name, seed)
    }

    /// Issue a new certificate version (with backing key and secret). With
    /// `None`, renew it like its latest version.
    pub fn add_certificate_version(
        &self,
        vault: &str,
        name: &str,
        seed: Option<&CertificateVersionSeed>,
    ) -> Result<String, EmulatorError> {
        let seed = match seed {
            Some(s) => s.clone(),
            None => self
                .shared
                .store()
                .certificate_template(vault, name)
                .unwrap_or_default(),
        };
        self.shared
            .store_mut()
            .add_certificate_version(vault, name, &seed)
    }

    /// Import a certificate version from a PFX or PEM bundle (see
    /// [`CertificateImport`]): its backing secret serves the given value
    /// byte for byte. Returns the version id.
    pub fn import_certificate(
        &self,
        vault: &str,
        name: &str,
        import: &CertificateImport,
    ) -> Result<String, EmulatorError> {
        self.shared
            .store_mut()
            .import_certificate(vault, name, import)
    }

    /// Import a key version from a public JSON Web Key; returns the version id.
    pub fn import_key(
        &self,
        vault: &str,
        name: &str,
        import: &KeyImport,
    ) -> Result<String, EmulatorError> {
        self.shared.store_mut().import_key(vault, name, import)
    }

    /// Enable or disable a version (`None` = latest); returns the version id.
    pub fn set_enabled(
        &self,
        vault: &str,
        kind: ObjectKind,
        name: &str,
        version: Option<&str>,
        enabled: bool,
    ) -> Result<String, EmulatorError> {
        self.shared
            .store_mut()
            .set_enabled(vault, kind, name, version, enabled)
    }

    /// Delete a version, or the whole object when `version` is `None`.
    pub fn delete(
        &self,
        vault: &str,
        kind: ObjectKind,
        name: &str,
        version: Option<&str>,
    ) -> Result<(), EmulatorError> {
        let mut store = self.shared.store_mut();
        self.shared.seen.record_store(&store);
        store.delete(vault, kind, name, version)
    }

    /// Replace a vault's access list.
    pub fn set_access(&self, vault: &str, access: &[AccessSeed]) -> Result<(), EmulatorError> {
        self.shared
            .store_mut()
            .set_access(vault, access, &self.shared.directory)
    }

    /// Install a fault; identity names and object ids in its scope are
    /// resolved to client ids. Returns the fault id.
    pub fn add_fault(&self, mut spec: FaultSpec) -> u64 {
        if let Some(id) = &spec.scope.identity
            && let Some(found) = self.shared.directory.find(id)
        {
            spec.scope.identity = Some(found.client_id.clone());
        }
        self.shared.faults.add(spec)
    }

    /// Remove a fault; false if unknown.
    pub fn remove_fault(&self, id: u64) -> bool {
        self.shared.faults.remove(id)
    }

    /// Remove all faults.
    pub fn clear_faults(&self) {
        self.shared.faults.clear()
    }

    /// Installed faults with their remaining counts and hits.
    pub fn faults(&self) -> Vec<ActiveFault> {
        self.shared.faults.list()
    }

    /// Number of requests selected by `filter` (an identity may be given by
    /// name, client id or object id; `""` selects unauthenticated requests).
    pub fn count(&self, filter: &CounterFilter) -> u64 {
        self.shared.counters.count(&self.resolve(filter))
    }

    /// Counter rows selected by `filter`.
    pub fn counters(&self, filter: &CounterFilter) -> Vec<CounterRow> {
        self.shared.counters.rows(&self.resolve(filter))
    }

    fn resolve(&self, filter: &CounterFilter) -> CounterFilter {
        let mut f = filter.clone();
        if let Some(id) = &f.identity
            && !id.is_empty()
            && let Some(found) = self.shared.directory.find(id)
        {
            f.identity = Some(found.client_id.clone());
        }
        f
    }

    /// The most Key Vault data-plane requests served at the same time
    /// (401 challenges and injected latency included) since the emulator
    /// started or the counters were last reset.
    pub fn peak_in_flight(&self) -> u64 {
        self.shared.counters.peak_in_flight()
    }

    /// Zero every counter (the in-flight peak restarts from now).
    pub fn reset_counters(&self) {
        self.shared.counters.reset()
    }

    /// Mint a valid service-account token of `namespace/service_account`
    /// from the seed's OIDC issuer, audience `api://AzureADTokenExchange`.
    pub fn service_account_token(
        &self,
        namespace: &str,
        service_account: &str,
    ) -> Result<String, EmulatorError> {
        self.mint_service_account_token(&ServiceAccountTokenRequest {
            issuer: String::new(),
            namespace: namespace.to_string(),
            service_account: service_account.to_string(),
            audience: None,
            expires_in: None,
        })
    }

    /// Mint a service-account token with every field chosen (an empty
    /// issuer means the seed's OIDC issuer).
    pub fn mint_service_account_token(
        &self,
        req: &ServiceAccountTokenRequest,
    ) -> Result<String, EmulatorError> {
        let mut req = req.clone();
        if req.issuer.is_empty() {
            req.issuer = self.shared.directory.oidc_issuer.clone();
        }
        let token = self.shared.tokens.mint_service_account_token(&req)?;
        self.shared
            .seen
            .record(SecretKind::ServiceAccountToken, &token);
        Ok(token)
    }

    /// Mint an access token for an identity (name, client id or object id)
    /// directly, bypassing Entra; `lifetime_secs` may be negative.
    pub fn access_token(
        &self,
        identity: &str,
        resource: &str,
        lifetime_secs: i64,
    ) -> Result<String, EmulatorError> {
        let id = self
            .shared
            .directory
            .find(identity)
            .ok_or_else(|| EmulatorError::IdentityNotFound(identity.to_string()))?;
        let token = self
            .shared
            .tokens
            .issue_with(id, resource, lifetime_secs)?
            .access_token;
        self.shared.seen.record(SecretKind::AccessToken, &token);
        Ok(token)
    }

    /// The directory (identities, federations) the emulator was seeded with.
    pub fn directory(&self) -> &Directory {
        &self.shared.directory
    }

    /// JWKS of the OIDC issuer that signs service-account tokens.
    pub fn oidc_jwks(&self) -> serde_json::Value {
        self.shared.tokens.oidc_jwks()
    }

    /// Every secret this emulator knows of: secret values of every version
    /// (deleted ones included) and certificate private keys, the client
    /// secrets of its directory, the access tokens it issued, the
    /// service-account tokens it minted, and the client secrets and
    /// assertions its token endpoints received. None may appear in a log.
    pub fn secrets_seen(&self) -> Vec<SeenSecret> {
        let mut all = self.shared.seen.list();
        all.extend(store_secrets(&self.shared.store()));
        for identity in &self.shared.directory.identities {
            if let Some(secret) = &identity.client_secret {
                all.push(SeenSecret::new(SecretKind::ClientSecret, secret));
            }
        }
        all.sort();
        all.dedup();
        all
    }
}
