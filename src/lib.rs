//! secretfs: a Kubernetes Secrets Store CSI node driver whose volumes are
//! FUSE file systems. The binary (`src/main.rs`) only parses the command
//! line and calls [`run`].

pub mod cache;
pub mod cli;
#[cfg(feature = "demo")]
pub mod demo;
pub mod duration;
pub mod endpoints;
pub mod hygiene;
pub mod logging;
pub mod metrics;
pub mod names;
pub mod node;
pub mod provider;
pub mod provider_server;
pub mod rotation;
pub mod spc;
pub mod sync;
pub mod volume;

pub use cli::{Cli, Command};

/// Runs one command to completion.
pub fn run(cli: Cli) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    match cli.command {
        #[cfg(feature = "demo")]
        Command::Demo(args) => demo::run(&args).map_err(Into::into),
        #[cfg(not(feature = "demo"))]
        Command::Demo(_) => Err("this build has no demo: rebuild with the `demo` feature".into()),
        Command::Node(args) => node::run(&args).map_err(Into::into),
        Command::Provider(args) => provider_server::run(&args).map_err(Into::into),
    }
}
