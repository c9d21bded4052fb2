//! Typed SecretProviderClass parameters of the Azure provider.
//!
//! Parsing follows the upstream provider (v1.8.2): values are trimmed,
//! `tenantID` is read before the deprecated `tenantId`, booleans parse like
//! Go's `strconv.ParseBool`, and unknown keys (including the 2019-era
//! `resourceGroup` and `subscriptionId`) are ignored. Every problem found is
//! reported at once, each naming the parameter and what it allows.
//!
//! Differences from upstream, on purpose:
//! - `cloudName: AzureGermanCloud` is rejected (see [`super::cloud`]).
//! - `cloudEnvFileName` is read through a loader given in [`ParseOptions`],
//!   never through a process-wide environment variable.
//! - `tenantID` must look like a tenant (GUID or domain, or `adfs`), since it
//!   becomes part of the token endpoint URL.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use super::cloud::{CloudEnvironment, CloudError, CloudName};
use super::objects::{KeyVaultObject, ObjectsError, parse_objects, plan_objects};
use crate::provider::{ErrorKind, FileMode, Plan, PlanError};

/// Parameter keys read by the Azure provider.
pub mod keys {
    /// Vault name.
    pub const KEYVAULT_NAME: &str = "keyvaultName";
    /// Tenant (preferred spelling).
    pub const TENANT_ID: &str = "tenantID";
    /// Tenant (deprecated spelling, read when `tenantID` is empty).
    pub const TENANT_ID_LEGACY: &str = "tenantId";
    /// Cloud name.
    pub const CLOUD_NAME: &str = "cloudName";
    /// Custom cloud JSON file (with `AzureStackCloud`).
    pub const CLOUD_ENV_FILE_NAME: &str = "cloudEnvFileName";
    /// aad-pod-identity mode.
    pub const USE_POD_IDENTITY: &str = "usePodIdentity";
    /// Node (VM/VMSS) managed identity mode.
    pub const USE_VM_MANAGED_IDENTITY: &str = "useVMManagedIdentity";
    /// User-assigned managed identity client id.
    pub const USER_ASSIGNED_IDENTITY_ID: &str = "userAssignedIdentityID";
    /// Workload identity client id.
    pub const CLIENT_ID: &str = "clientID";
    /// AKS identity binding mode.
    pub const USE_AZURE_TOKEN_PROXY: &str = "useAzureTokenProxy";
    /// The objects to mount.
    pub const OBJECTS: &str = "objects";
}

/// The validated Key Vault name (3–24 characters of `[-A-Za-z0-9]`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct VaultName(String);

impl VaultName {
    /// Validates a vault name (already trimmed).
    pub fn parse(name: &str) -> Result<VaultName, ParamError> {
        if name.is_empty() {
            return Err(ParamError::Missing {
                key: keys::KEYVAULT_NAME,
                hint: "the name of the Key Vault (3 to 24 letters, digits and '-')",
            });
        }
        if !(3..=24).contains(&name.len())
            || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err(ParamError::Invalid {
                key: keys::KEYVAULT_NAME,
                value: name.to_owned(),
                allowed: "3 to 24 characters, each a letter, digit or '-'".to_owned(),
            });
        }
        Ok(VaultName(name.to_owned()))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for VaultName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One problem with one parameter.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParamError {
    /// A required parameter is missing or blank.
    #[error("{key} is not provided: set it to {hint}")]
    Missing {
        /// The parameter.
        key: &'static str,
        /// What it should hold.
        hint: &'static str,
    },
    /// A parameter has a value that is not allowed.
    #[error("{key} {value:?} is not valid: {allowed}")]
    Invalid {
        /// The parameter.
        key: &'static str,
        /// The value (parameters are not secret).
        value: String,
        /// What is allowed.
        allowed: String,
    },
    /// More than one identity mode flag is true.
    #[error(
        "only one identity mode can be enabled at a time: usePodIdentity, useVMManagedIdentity, or useAzureTokenProxy (found {0})"
    )]
    ConflictingModes(String),
    /// `cloudName`/`cloudEnvFileName`.
    #[error(transparent)]
    Cloud(#[from] CloudError),
    /// `objects`.
    #[error(transparent)]
    Objects(#[from] ObjectsError),
}

/// All problems found in the parameters, reported together.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
pub struct ParamsError(pub Vec<ParamError>);

impl ParamsError {
    /// Always [`ErrorKind::Invalid`]: the SecretProviderClass must change.
    pub fn kind(&self) -> ErrorKind {
        ErrorKind::Invalid
    }
}

/// Reads a custom cloud file; see [`ParseOptions::load_cloud_env`].
pub type CloudEnvLoader<'a> = &'a dyn Fn(&Path) -> std::io::Result<Vec<u8>>;

/// Settings that come from the provider's configuration, not from the SPC.
#[derive(Clone, Copy)]
pub struct ParseOptions<'a> {
    /// The cloud used when `cloudName` is empty (`--cloud-name`, default
    /// `AzurePublicCloud`).
    pub default_cloud: CloudName,
    /// Reads the `cloudEnvFileName` file. Production passes
    /// [`read_cloud_env_file`]; tests pass an in-memory map.
    pub load_cloud_env: CloudEnvLoader<'a>,
}

impl fmt::Debug for ParseOptions<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ParseOptions")
            .field("default_cloud", &self.default_cloud)
            .finish_non_exhaustive()
    }
}

/// Reads `path` from the node's file system.
pub fn read_cloud_env_file(path: &Path) -> std::io::Result<Vec<u8>> {
    std::fs::read(path)
}

impl Default for ParseOptions<'static> {
    fn default() -> Self {
        ParseOptions {
            default_cloud: CloudName::Public,
            load_cloud_env: &read_cloud_env_file,
        }
    }
}

/// Parses a boolean like Go's `strconv.ParseBool`; empty means `false`.
pub fn parse_go_bool(key: &'static str, value: &str) -> Result<bool, ParamError> {
    match value {
        "" | "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        _ => Err(ParamError::Invalid {
            key,
            value: value.to_owned(),
            allowed:
                "use true or false (also accepted: 1, t, T, TRUE, True, 0, f, F, FALSE, False)"
                    .to_owned(),
        }),
    }
}

/// A tenant: a GUID or a domain name, or `adfs` for Azure Stack AD FS.
fn valid_tenant(t: &str) -> bool {
    (1..=256).contains(&t.len())
        && t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
}

/// A client id: a GUID in practice; we allow what can appear in a URL query
/// and an identity key without escaping.
fn valid_client_id(t: &str) -> bool {
    (1..=256).contains(&t.len())
        && t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b'_')
}

/// The Azure provider's parameters, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AzureParameters {
    /// `keyvaultName`.
    pub vault_name: VaultName,
    /// `tenantID` (or the deprecated `tenantId`); `adfs` selects AD FS.
    pub tenant_id: String,
    /// The cloud's endpoints (`cloudName`, `cloudEnvFileName`).
    pub cloud: CloudEnvironment,
    /// `usePodIdentity`.
    pub use_pod_identity: bool,
    /// `useVMManagedIdentity`.
    pub use_vm_managed_identity: bool,
    /// `useAzureTokenProxy`.
    pub use_azure_token_proxy: bool,
    /// `userAssignedIdentityID`; `None` selects the system-assigned identity.
    pub user_assigned_identity_id: Option<String>,
    /// `clientID` (workload identity).
    pub client_id: Option<String>,
    /// `objects`.
    pub objects: Vec<KeyVaultObject>,
    /// Non-fatal findings (unknown object fields), for logs and events.
    pub warnings: Vec<String>,
}

impl AzureParameters {
    /// Parses SecretProviderClass parameters. Keys other than the ones in
    /// [`keys`] are ignored.
    pub fn parse(
        params: &BTreeMap<String, String>,
        options: &ParseOptions<'_>,
    ) -> Result<AzureParameters, ParamsError> {
        let get = |k: &str| params.get(k).map(|v| v.trim()).unwrap_or("");
        let mut errors = Vec::new();

        let vault_name = VaultName::parse(get(keys::KEYVAULT_NAME))
            .map_err(|e| errors.push(e))
            .ok();

        let tenant = match get(keys::TENANT_ID) {
            "" => get(keys::TENANT_ID_LEGACY),
            t => t,
        };
        let tenant_id = if tenant.is_empty() {
            errors.push(ParamError::Missing {
                key: keys::TENANT_ID,
                hint: "the Entra ID tenant of the vault (a GUID or domain; tenantId is also read)",
            });
            None
        } else if !valid_tenant(tenant) {
            errors.push(ParamError::Invalid {
                key: keys::TENANT_ID,
                value: tenant.to_owned(),
                allowed:
                    "use the tenant's GUID or domain name (letters, digits, '.' and '-'), or adfs"
                        .to_owned(),
            });
            None
        } else {
            Some(tenant.to_owned())
        };

        let cloud = match parse_cloud(
            get(keys::CLOUD_NAME),
            get(keys::CLOUD_ENV_FILE_NAME),
            options,
        ) {
            Ok(c) => Some(c),
            Err(e) => {
                errors.push(e.into());
                None
            }
        };

        let mut flag = |key: &'static str| {
            parse_go_bool(key, get(key))
                .map_err(|e| errors.push(e))
                .unwrap_or(false)
        };
        let use_pod_identity = flag(keys::USE_POD_IDENTITY);
        let use_vm_managed_identity = flag(keys::USE_VM_MANAGED_IDENTITY);
        let use_azure_token_proxy = flag(keys::USE_AZURE_TOKEN_PROXY);
        let enabled: Vec<&str> = [
            (use_pod_identity, keys::USE_POD_IDENTITY),
            (use_vm_managed_identity, keys::USE_VM_MANAGED_IDENTITY),
            (use_azure_token_proxy, keys::USE_AZURE_TOKEN_PROXY),
        ]
        .into_iter()
        .filter_map(|(on, k)| on.then_some(k))
        .collect();
        if enabled.len() > 1 {
            errors.push(ParamError::ConflictingModes(enabled.join(" and ")));
        }

        let mut client_id_param = |key: &'static str| {
            let v = get(key);
            if v.is_empty() {
                None
            } else if valid_client_id(v) {
                Some(v.to_owned())
            } else {
                errors.push(ParamError::Invalid {
                    key,
                    value: v.to_owned(),
                    allowed: "use the identity's client id (a GUID)".to_owned(),
                });
                None
            }
        };
        let user_assigned_identity_id = client_id_param(keys::USER_ASSIGNED_IDENTITY_ID);
        let client_id = client_id_param(keys::CLIENT_ID);

        let objects = match parse_objects(get(keys::OBJECTS)) {
            Ok(o) => Some(o),
            Err(e) => {
                errors.push(e.into());
                None
            }
        };

        match (vault_name, tenant_id, cloud, objects) {
            (Some(vault_name), Some(tenant_id), Some(cloud), Some(objects))
                if errors.is_empty() =>
            {
                Ok(AzureParameters {
                    vault_name,
                    tenant_id,
                    cloud,
                    use_pod_identity,
                    use_vm_managed_identity,
                    use_azure_token_proxy,
                    user_assigned_identity_id,
                    client_id,
                    objects: objects.objects,
                    warnings: objects.warnings,
                })
            }
            _ => Err(ParamsError(errors)),
        }
    }

    /// `https://<vault>.<cloud suffix>/`.
    pub fn vault_url(&self) -> String {
        self.cloud.vault_url(self.vault_name.as_str())
    }

    /// The files these objects make, with `default_mode` for objects without
    /// `filePermission`.
    pub fn plan(&self, default_mode: FileMode) -> Result<Plan, PlanError> {
        plan_objects(&self.objects, default_mode)
    }
}

fn parse_cloud(
    name: &str,
    env_file: &str,
    options: &ParseOptions<'_>,
) -> Result<CloudEnvironment, CloudError> {
    let cloud = CloudName::parse(name)?.unwrap_or(options.default_cloud);
    if let Some(env) = cloud.builtin() {
        // Upstream only reads cloudEnvFileName for AzureStackCloud; ignore it otherwise.
        return Ok(env);
    }
    if env_file.is_empty() {
        return Err(CloudError::MissingEnvFile);
    }
    let bytes = (options.load_cloud_env)(Path::new(env_file)).map_err(|e| CloudError::Read {
        path: env_file.to_owned(),
        reason: e.to_string(),
    })?;
    CloudEnvironment::from_json(env_file, &bytes)
}
