//! Vault providers: turn SecretProviderClass parameters into a [`Plan`] of
//! files, and what a vault returns into file bytes.
//!
//! This module holds the pieces every provider shares:
//! - [`ErrorKind`] and [`ObjectError`]/[`ObjectErrors`]: failures carry a kind
//!   (metrics label, gRPC code) and name the object they are about; several
//!   failing objects are reported together.
//! - [`Plan`]: the validated list of files a volume will show, checked with the
//!   upstream atomic writer's path rules.
//!
//! Tokens, client secrets and file contents are held in `secretfs_secrets`'s
//! `SecretString` and `SecretBytes` (zeroizing, redacted in `Debug`).
//!
//! - [`Provider`] (in `api.rs`): what the volume manager asks of a provider.
//! - [`registry`]: built-in providers by name, else an [`external`] provider
//!   process on `<provider-volume>/<name>.sock` (the upstream protocol).

mod api;
pub mod azure;
mod error;
pub mod external;
mod plan;
pub mod registry;

pub use api::{
    MountError, MountRequest, MountResponse, MountedFile, ObjectVersion, PodRef, Provider,
    last_version_per_id,
};
pub use error::{ErrorKind, ObjectError, ObjectErrors};
pub use plan::{
    FileMode, MAX_FILE_NAME_LEN, MAX_PATH_LEN, PathError, Plan, PlanError, PlannedFile,
    validate_relative_path,
};
pub use registry::{LookupError, ProviderRegistry};
