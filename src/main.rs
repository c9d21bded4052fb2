//! The `secretfs` binary: parse the command line, set up logging, run.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // Large allocations (every FUSE session's 16 MiB request buffer) must
    // come from fresh mmap'd pages, which stay unbacked until used. From the
    // heap, glibc clears them and they count against RSS: 3–6 MiB per
    // mounted volume measured (docs/BENCHMARKS.md). A fixed threshold also
    // stops glibc from raising it after frees.
    // SAFETY: mallopt is called first thing, before any other thread exists
    // and before any allocation it could affect.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
    }
    let cli = secretfs::Cli::parse();
    if let Err(err) = secretfs::cmd::logging::init(&cli.log) {
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
