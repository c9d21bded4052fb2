//! The command line.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// secretfs: vault secrets as files in Kubernetes pods, served by FUSE.
#[derive(Debug, Parser)]
#[command(name = "secretfs", version, about, long_about = None)]
pub struct Cli {
    #[command(flatten)]
    pub log: LogArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show a secretfs volume on this machine, with no cloud and no cluster
    /// (needs root and /dev/fuse).
    Demo(DemoArgs),
}

/// Logging options, shared by every command.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Logging")]
pub struct LogArgs {
    /// Log filter, e.g. `info` or `secretfs=debug` (also SECRETFS_LOG).
    #[arg(
        long = "log",
        env = "SECRETFS_LOG",
        default_value = "warn",
        global = true
    )]
    pub filter: String,
    /// Write logs as JSON lines.
    #[arg(long = "log-format-json", global = true)]
    pub json: bool,
}

#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    /// Leave the volume mounted until Ctrl-C so you can explore it.
    #[arg(long)]
    pub keep: bool,
    /// Where to mount (default: a new temporary directory).
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}
