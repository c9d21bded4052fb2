//! Logging: `tracing` to stderr, filtered by `--log`/`SECRETFS_LOG`,
//! optionally as JSON.

use tracing_subscriber::EnvFilter;

use crate::cmd::cli::LogArgs;

/// Installs the global subscriber.
pub fn init(args: &LogArgs) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let filter = EnvFilter::try_new(&args.filter)
        .map_err(|e| format!("invalid log filter {:?}: {e}", args.filter))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if args.json {
        builder.json().try_init()
    } else {
        builder.try_init()
    }
}
