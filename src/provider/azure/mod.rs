//! The Azure Key Vault provider.
//!
//! The network half: [`AzureProvider`] ([`provider`]) with its
//! [`AzureProviderConfig`] ([`config`]); the HTTP client and SDK clients
//! ([`clients`]); credentials per identity ([`credentials`], [`imds`] for
//! IMDS and NMI); fetching with retries and user-facing errors ([`fetch`],
//! [`retry`]); the node's shared object cache ([`cache`]: single flight,
//! freshness, a byte budget) and the per-vault rate limiter ([`rate`]).
//!
//! The pure, network-free half:
//! - [`params`]: SecretProviderClass parameters → [`AzureParameters`]
//!   (vault, tenant, cloud, identity flags, [`objects`]), and the [`Plan`]
//!   of files.
//! - [`identity`]: which identity a mount uses ([`IdentityConfig`]) and the
//!   [`IdentityKey`] under which cached values may be shared.
//! - [`content`]: what Key Vault returns → file bytes, exactly as upstream
//!   writes them ([`pfx`], [`jwk`], [`chain`], [`pem`]).
//! - [`history`]: which versions `objectVersionHistory` mounts.
//! - [`file_ref`]: which file a `secretObjects` `objectName` designates
//!   (alias or vault name).
//!
//! Baseline: `Azure/secrets-store-csi-driver-provider-azure` v1.8.2. Every
//! SecretProviderClass that works there is meant to work here, with the same
//! files byte for byte. Deliberate differences:
//! - `objectVersionHistory: N` mounts exactly N versions; upstream mounts
//!   N + 1 when more than N exist ([`history`]).
//! - `cloudName: AzureGermanCloud` fails with an explanation (the cloud closed
//!   in 2021); `cloudEnvFileName` is read through an explicit loader instead of
//!   a process-wide environment variable ([`cloud`]).
//! - Stricter input checks, because the values end up in URLs and paths:
//!   `tenantID`, `clientID`, `userAssignedIdentityID`, `objectName` and
//!   `objectVersion` must use their documented character sets,
//!   `filePermission` must be at most `0777`, and one volume mounts at most
//!   10 000 files (objects, counting `objectVersionHistory` slots).
//! - More lenient where upstream would fail for no good reason:
//!   `objectType`/`objectFormat`/`objectEncoding` are case-insensitive,
//!   `objectVersion: latest` also works without history, unknown object fields
//!   are ignored with a warning, `clientid`/`clientsecret` are trimmed, and a
//!   certificate chain that cannot be ordered (cycle, unparsable certificate)
//!   keeps its stored order with a warning instead of failing the mount. PFX
//!   files with AES/SHA-256 protection are accepted (upstream's Go decoder only
//!   knows the legacy SHA-1/3DES/RC2 ones).
//! - Not reproduced: Go's retry of a PFX MAC with a zero-length ("NULL")
//!   password after the empty one fails; identity binding
//!   (`useAzureTokenProxy`) is rejected as not supported yet.
//!
//! [`Plan`]: crate::provider::Plan

pub mod azure_cli;
pub mod cache;
pub mod chain;
pub mod clients;
pub mod cloud;
pub mod config;
pub mod content;
pub mod credentials;
pub mod fetch;
pub mod file_ref;
pub mod history;
pub mod identity;
pub mod imds;
pub mod jwk;
pub mod objects;
pub mod params;
pub mod pem;
pub mod pfx;
pub mod provider;
pub mod rate;
pub mod retry;
pub mod validity;

#[cfg(test)]
mod identity_tests;
#[cfg(test)]
mod objects_tests;
#[cfg(test)]
mod params_tests;

pub use cloud::{CloudEnvironment, CloudError, CloudName};
pub use config::{
    AzureProviderConfig, ConfigError, DEFAULT_API_VERSION, DEFAULT_IMDS_URL, DEFAULT_NMI_URL,
    HostOverride, RetryConfig,
};
pub use content::{
    Content, ContentError, Fetched, FetchedSecret, cert_content, decode_value, key_content,
    object_content, secret_content,
};
pub use file_ref::{FileRefError, resolve_file_reference};
pub use history::{HistoryError, VersionInfo, history_files, select_versions, version_of_id};
pub use identity::{
    IdentityConfig, IdentityError, IdentityInputs, IdentityKey, IdentityKeySalt, PodInfo,
    ResolvedIdentity, azure_cli_identity, resolve_identity,
};
pub use jwk::JsonWebKey;
pub use objects::{
    KeyVaultObject, ObjectEncoding, ObjectFieldError, ObjectFormat, ObjectType, ObjectsError,
    parse_objects,
};
pub use params::{AzureParameters, ParamError, ParamsError, ParseOptions, VaultName};
pub use provider::AzureProvider;
