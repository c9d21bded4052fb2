//! secretfs: a Kubernetes Secrets Store CSI node driver whose volumes are
//! FUSE file systems. The binary (`src/main.rs`) only parses the command
//! line and calls [`run`].

pub mod admin;
pub mod audit;
pub mod cli;
#[cfg(feature = "demo")]
pub mod demo;
pub mod duration;
pub mod endpoints;
pub mod expiry;
// Only for the `cargo fuzz` targets (fuzz/) and
// tests/integration/fuzz_regressions.rs, which enable the feature (the crate
// dev-depends on itself with it); a release build has no such module.
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
pub mod health;
pub mod keeper;
pub mod logging;
pub mod metrics;
pub mod names;
pub mod node;
pub mod provider;
pub mod provider_server;
pub mod rotation;
pub mod spc;
pub mod standalone;
pub mod sync;
pub mod volume;

pub use cli::{Cli, Command};

/// `secretfs status` and `secretfs refresh`.
fn admin_command(
    args: &cli::AdminArgs,
    refresh: Option<Option<std::path::PathBuf>>,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        match refresh {
            None => {
                let volumes = admin::volumes(&args.admin_socket).await?;
                if args.json {
                    println!("{}", serde_json::to_string_pretty(&volumes)?);
                } else {
                    if let Some(readiness) = admin::readiness(&args.admin_socket).await? {
                        print!("{}", admin::render_readiness(&readiness));
                    }
                    print!("{}", admin::render_status(&volumes));
                }
            }
            Some(target) => {
                let results = admin::refresh(&args.admin_socket, target.as_deref()).await?;
                for r in &results {
                    match &r.error {
                        None => println!(
                            "{}: {} replaced, {} added, {} removed",
                            r.target, r.replaced, r.added, r.removed
                        ),
                        Some(e) => println!("{}: failed: {e}", r.target),
                    }
                }
                if results.iter().any(|r| r.error.is_some()) {
                    return Err("some refreshes failed".into());
                }
            }
        }
        Ok(())
    })
}

/// Runs one command to completion.
pub fn run(cli: Cli) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    match cli.command {
        #[cfg(feature = "demo")]
        Command::Demo(args) => demo::run(&args).map_err(Into::into),
        #[cfg(not(feature = "demo"))]
        Command::Demo(_) => Err("this build has no demo: rebuild with the `demo` feature".into()),
        Command::Node(args) => node::run(&args).map_err(Into::into),
        Command::Mount(args) => standalone::run(&args).map_err(Into::into),
        Command::Status(args) => admin_command(&args, None),
        Command::Refresh(args) => {
            let target = args.target.clone();
            admin_command(&args.admin, Some(target))
        }
        Command::Provider(args) => provider_server::run(&args).map_err(Into::into),
        Command::Keeper(args) => keeper::run(&args).map_err(Into::into),
    }
}
