//! The Entra ID directory of the emulator: identities, federations and
//! pod-identity bindings, resolved from the seed.

use crate::error::EmulatorError;
use crate::seed::{IdentityKind, PodIdentitySeed, Seed, TOKEN_EXCHANGE_AUDIENCE};
use crate::util::new_guid;

/// One principal that can obtain tokens.
#[derive(Clone)]
pub struct Identity {
    pub name: String,
    pub client_id: String,
    pub object_id: String,
    pub kind: IdentityKind,
    pub client_secret: Option<String>,
    pub resource_id: Option<String>,
    pub system_assigned: bool,
    pub tenant: String,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("name", &self.name)
            .field("client_id", &self.client_id)
            .field("object_id", &self.object_id)
            .field("kind", &self.kind)
            .field("tenant", &self.tenant)
            .finish_non_exhaustive()
    }
}

/// A federated identity credential.
#[derive(Debug, Clone)]
pub struct Federation {
    pub issuer: String,
    pub subject: String,
    pub audience: String,
    pub client_id: String,
}

/// Identities, federations and pod bindings.
#[derive(Debug, Clone)]
pub struct Directory {
    pub tenant: String,
    pub oidc_issuer: String,
    pub identities: Vec<Identity>,
    pub federations: Vec<Federation>,
    pub pod_identities: Vec<PodIdentitySeed>,
}

impl Directory {
    /// Resolve the directory part of a seed.
    pub fn from_seed(seed: &Seed) -> Result<Self, EmulatorError> {
        let mut identities: Vec<Identity> = Vec::new();
        for i in &seed.identities {
            if identities
                .iter()
                .any(|o| o.name == i.name || o.client_id.eq_ignore_ascii_case(&i.client_id))
            {
                return Err(EmulatorError::Seed(format!(
                    "identity '{}' ({}) is declared twice",
                    i.name, i.client_id
                )));
            }
            identities.push(Identity {
                name: i.name.clone(),
                client_id: i.client_id.to_ascii_lowercase(),
                object_id: i
                    .object_id
                    .clone()
                    .unwrap_or_else(new_guid)
                    .to_ascii_lowercase(),
                kind: i.kind,
                client_secret: i.client_secret.clone(),
                resource_id: i.resource_id.clone(),
                system_assigned: i.system_assigned,
                tenant: i.tenant.clone().unwrap_or_else(|| seed.tenant.clone()),
            });
        }
        let mut federations = Vec::new();
        for f in &seed.federations {
            if !identities
                .iter()
                .any(|i| i.client_id.eq_ignore_ascii_case(&f.client_id))
            {
                return Err(EmulatorError::Seed(format!(
                    "federation for '{}' names unknown client id {}",
                    f.subject, f.client_id
                )));
            }
            federations.push(Federation {
                issuer: f.issuer.clone().unwrap_or_else(|| seed.oidc_issuer.clone()),
                subject: f.subject.clone(),
                audience: f
                    .audience
                    .clone()
                    .unwrap_or_else(|| TOKEN_EXCHANGE_AUDIENCE.to_string()),
                client_id: f.client_id.to_ascii_lowercase(),
            });
        }
        Ok(Self {
            tenant: seed.tenant.clone(),
            oidc_issuer: seed.oidc_issuer.clone(),
            identities,
            federations,
            pod_identities: seed.pod_identities.clone(),
        })
    }

    /// Find an identity by name, client id, object id or resource id.
    pub fn find(&self, key: &str) -> Option<&Identity> {
        self.identities.iter().find(|i| {
            i.name == key
                || i.client_id.eq_ignore_ascii_case(key)
                || i.object_id.eq_ignore_ascii_case(key)
                || i.resource_id
                    .as_deref()
                    .is_some_and(|r| r.eq_ignore_ascii_case(key))
        })
    }

    /// Find an identity by client id only.
    pub fn by_client_id(&self, client_id: &str) -> Option<&Identity> {
        self.identities
            .iter()
            .find(|i| i.client_id.eq_ignore_ascii_case(client_id))
    }

    /// Is `tenant` a tenant of this directory?
    pub fn has_tenant(&self, tenant: &str) -> bool {
        self.tenant.eq_ignore_ascii_case(tenant)
            || self
                .identities
                .iter()
                .any(|i| i.tenant.eq_ignore_ascii_case(tenant))
    }
}
