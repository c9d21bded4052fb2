//! The Azure Key Vault provider over HTTPS against the emulator
//! (`secretfs-e2e`): every identity mode, every object type and format,
//! version history, reuse of tokens, clients and challenges, retries,
//! deadlines, errors naming every failing object, and redaction.
//!
//! The provider keeps the real host names (`kv-conformance.vault.azure.net`,
//! `login.microsoftonline.com`) and only redirects their resolution to the
//! emulator, so TLS and the SDK's challenge-resource check stay on.

#[path = "azure_provider/clouds.rs"]
mod clouds;
#[path = "azure_provider/common.rs"]
pub mod common;
#[path = "azure_provider/concurrency.rs"]
mod concurrency;
#[path = "azure_provider/errors.rs"]
mod errors;
#[path = "azure_provider/formats.rs"]
mod formats;
#[path = "azure_provider/history.rs"]
mod history;
#[path = "azure_provider/identities.rs"]
mod identities;
#[path = "azure_provider/retries.rs"]
mod retries;
#[path = "azure_provider/reuse.rs"]
mod reuse;
#[path = "azure_provider/storm.rs"]
mod storm;
#[path = "azure_provider/wire_fixtures.rs"]
mod wire_fixtures;
