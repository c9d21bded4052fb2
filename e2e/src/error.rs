//! The error type of the emulator's library boundary (start-up, seeding, admin).

use thiserror::Error;

/// What can go wrong while starting or driving the emulator.
#[derive(Debug, Error)]
pub enum EmulatorError {
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("TLS configuration error: {0}")]
    Tls(#[from] rustls::Error),
    #[error("certificate generation error: {0}")]
    Certificate(#[from] rcgen::Error),
    #[error("cannot parse seed YAML: {0}")]
    SeedYaml(#[from] serde_yaml::Error),
    #[error("invalid seed: {0}")]
    Seed(String),
    #[error("PKCS#12 encoding failed: {0}")]
    Pkcs12(String),
    #[error("{kind} '{name}' not found in vault '{vault}'")]
    ObjectNotFound {
        vault: String,
        kind: &'static str,
        name: String,
    },
    #[error("version '{version}' of {kind} '{name}' not found in vault '{vault}'")]
    VersionNotFound {
        vault: String,
        kind: &'static str,
        name: String,
        version: String,
    },
    #[error("vault '{0}' not found")]
    VaultNotFound(String),
    #[error("identity '{0}' not found")]
    IdentityNotFound(String),
    #[error("invalid request: {0}")]
    Invalid(String),
}
