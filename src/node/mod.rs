//! The node plugin's machinery, below the `secretfs node` command:
//!
//! - [`driver`]: the [`driver::Driver`], which publishes, refreshes and
//!   unpublishes volumes, reports their status, and keeps them across
//!   restarts (with the [`keeper`]);
//! - [`rotation`]: when each volume refreshes; [`sync`]: the Secrets and
//!   pod status mirrored to Kubernetes;
//! - [`keeper`]: the keeper's server, its wire protocol and the node's
//!   client;
//! - [`health`]: whether the providers answer; [`endpoints`]: `/metrics`,
//!   `/healthz`, `/readyz`; [`admin`]: the admin socket;
//! - [`audit`]: who reads what.

pub mod admin;
pub mod audit;
pub mod driver;
pub mod endpoints;
pub mod health;
pub mod keeper;
pub mod rotation;
pub mod sync;
