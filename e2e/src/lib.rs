//! secretfs-e2e: a high-fidelity Azure Key Vault + Entra ID + IMDS emulator
//! for secretfs' provider, end-to-end and benchmark tests.
//!
//! What it serves (see `e2e/README.md` for the full contract):
//! - **HTTPS** (rustls, a CA created at start): the Key Vault data plane,
//!   vault chosen by the `Host` header (`<vault>.vault.azure.net`, `.cn`,
//!   `.usgovcloudapi.net`), and Entra ID (OIDC and instance discovery, JWKS,
//!   v2 and v1 token endpoints with client secrets and jwt-bearer assertions).
//! - **HTTP**: IMDS (`/metadata/identity/oauth2/token`) and NMI (`/host/token/`).
//! - **HTTP admin API** and the same operations in process ([`Control`]).
//!
//! ```no_run
//! # async fn demo() -> Result<(), secretfs_e2e::EmulatorError> {
//! use secretfs_e2e::{Emulator, EmulatorConfig, Seed};
//! let emu = Emulator::start(EmulatorConfig::with_seed(Seed::demo())).await?;
//! // Reach https://kv-demo.vault.azure.net:<port> by resolving the host to
//! // emu.https_addr() in the client and trusting emu.ca_pem().
//! let url = emu.vault_url("kv-demo");
//! let version = emu.set_secret("kv-demo", "sql-password", "rotated")?;
//! # let _ = (url, version); Ok(()) }
//! ```

#![forbid(unsafe_code)]
// Handlers return a ready HTTP response as their error value; boxing it
// would only add noise to every early return.
#![allow(clippy::result_large_err)]

mod admin;
mod control;
mod counters;
mod directory;
mod emulator;
mod entra;
mod error;
pub mod fake_apiserver;
mod faults;
mod http;
mod imds;
mod jwt;
mod keyvault;
pub mod kubelet;
pub mod load;
pub mod peer_bench;
pub mod peers;
mod pki;
pub mod prereq;
mod route;
pub mod secrets_seen;
mod seed;
mod server;
mod state;
mod store;
pub mod test_provider;
mod tls;
mod tokens;
mod util;

pub use control::Control;
pub use counters::{CounterFilter, CounterRow, RequestKey};
pub use directory::{Directory, Federation, Identity};
pub use emulator::{Emulator, EmulatorConfig, EmulatorHandle};
pub use error::EmulatorError;
pub use faults::{ActiveFault, FaultKind, FaultScope, FaultSpec};
pub use pki::{CertificateMaterial, Curve, KeySpec};
pub use route::Route;
pub use seed::*;
pub use store::{NewSecretVersion, ObjectKind};
pub use tokens::{KEYVAULT_APP_ID, ServiceAccountTokenRequest, TrustedIssuer};
