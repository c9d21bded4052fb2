//! The Azure Key Vault provider: the pure, network-free half.
//!
//! - [`params`]: SecretProviderClass parameters → [`AzureParameters`]
//!   (vault, tenant, cloud, identity flags, [`objects`]), and the [`Plan`]
//!   of files.
//! - [`identity`]: which identity a mount uses ([`IdentityConfig`]) and the
//!   [`IdentityKey`] under which cached values may be shared.
//! - [`content`]: what Key Vault returns → file bytes, exactly as upstream
//!   writes them ([`pfx`], [`jwk`], [`chain`], [`pem`]).
//! - [`history`]: which versions `objectVersionHistory` mounts.
//!
//! [`Plan`]: crate::provider::Plan

pub mod chain;
pub mod cloud;
pub mod content;
pub mod history;
pub mod identity;
pub mod jwk;
pub mod objects;
pub mod params;
pub mod pem;
pub mod pfx;

#[cfg(test)]
mod identity_tests;
#[cfg(test)]
mod objects_tests;
#[cfg(test)]
mod params_tests;

pub use cloud::{CloudEnvironment, CloudError, CloudName};
pub use content::{
    Content, ContentError, Fetched, FetchedSecret, cert_content, decode_value, key_content,
    object_content, secret_content,
};
pub use history::{HistoryError, VersionInfo, select_versions};
pub use identity::{
    IdentityConfig, IdentityError, IdentityInputs, IdentityKey, IdentityKeySalt, PodInfo,
    ResolvedIdentity, resolve_identity,
};
pub use jwk::JsonWebKey;
pub use objects::{
    KeyVaultObject, ObjectEncoding, ObjectFieldError, ObjectFormat, ObjectType, ObjectsError,
    parse_objects,
};
pub use params::{AzureParameters, ParamError, ParamsError, ParseOptions, VaultName};
