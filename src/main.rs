//! The `secretfs` binary: parse the command line, set up logging, run.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = secretfs::Cli::parse();
    if let Err(err) = secretfs::logging::init(&cli.log) {
        eprintln!("secretfs: {err:#}");
        return ExitCode::from(2);
    }
    match secretfs::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!(
                "secretfs: {}",
                anyhow::anyhow!(err)
                    .chain()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(": ")
            );
            ExitCode::FAILURE
        }
    }
}
