//! secretfs: a Kubernetes Secrets Store CSI node driver whose volumes are
//! FUSE file systems. The binary (`src/main.rs`) only parses the command
//! line and calls [`run`].
//!
//! The crate by layer; a layer uses only the layers below it
//! (docs/ARCHITECTURE.md, "Crates and layers"):
//!
//! - [`cmd`]: one module per subcommand, and all printing;
//! - [`node`]: the node plugin's machinery: the [`node::driver::Driver`]
//!   (publish, refresh, status, survival across restarts), rotation, sync
//!   to Kubernetes, the keeper, health, the endpoints, audit;
//! - [`provider`]: what a provider is ([`provider::Provider`]), the plan of
//!   files, the registry, external providers over gRPC, and Azure Key Vault
//!   with its cache and rate limiter;
//! - shared by them: [`metrics`], [`spc`] (the SecretProviderClass),
//!   [`names`], [`expiry`], [`duration`];
//! - below all: the `secretfs-secrets` crate (secret values, memory hygiene).

pub mod cmd;
pub mod duration;
pub mod expiry;
// Only for the `cargo fuzz` targets (fuzz/) and
// tests/integration/fuzz_regressions.rs, which enable the feature (the crate
// dev-depends on itself with it); a release build has no such module.
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
pub mod metrics;
pub mod names;
pub mod node;
pub mod provider;
pub mod spc;

pub use cmd::cli::{Cli, Command};
pub use cmd::run;
