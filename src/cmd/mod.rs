//! The subcommands: one module each, and everything they print. A
//! subcommand parses its arguments ([`cli`]), builds what it needs from the
//! layers below (`node`, `provider`) and runs it.

pub mod admin;
pub mod cli;
#[cfg(feature = "demo")]
pub mod demo;
pub mod keeper;
pub mod logging;
pub mod mount;
pub mod node;
pub mod provider;

use cli::{Cli, Command};

/// Runs one command to completion.
pub fn run(cli: Cli) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    match cli.command {
        #[cfg(feature = "demo")]
        Command::Demo(args) => demo::run(&args).map_err(Into::into),
        #[cfg(not(feature = "demo"))]
        Command::Demo(_) => Err("this build has no demo: rebuild with the `demo` feature".into()),
        Command::Node(args) => node::run(&args).map_err(Into::into),
        Command::Mount(args) => mount::run(&args).map_err(Into::into),
        Command::Status(args) => admin::command(&args, None),
        Command::Refresh(args) => {
            let target = args.target.clone();
            admin::command(&args.admin, Some(target))
        }
        Command::Provider(args) => provider::run(&args).map_err(Into::into),
        Command::Keeper(args) => keeper::run(&args).map_err(Into::into),
    }
}
