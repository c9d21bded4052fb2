//! secretfs: a Kubernetes Secrets Store CSI node driver whose volumes are
//! FUSE file systems. The binary (`src/main.rs`) only parses the command
//! line and calls [`run`].

pub mod cli;
pub mod demo;
pub mod logging;
pub mod node;
pub mod provider;
pub mod spc;
pub mod volume;

pub use cli::{Cli, Command};

/// Runs one command to completion.
pub fn run(cli: Cli) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    match cli.command {
        Command::Demo(args) => demo::run(&args).map_err(Into::into),
        Command::Node(args) => node::run(&args).map_err(Into::into),
    }
}
