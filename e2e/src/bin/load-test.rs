//! `load-test`: the real `secretfs node` under load. The test itself is
//! the library's `load` module (`e2e/src/load/`), which also runs in CI as
//! `tests/integration/load_smoke.rs`; this binary parses the parameters,
//! runs it and prints the report. Needs root and /dev/fuse;
//! `scripts/load-test.sh` runs it with the full parameters on a release
//! build.

use std::path::Path;
use std::process::ExitCode;

use clap::Parser;
use secretfs_e2e::load::{Config, run};

fn main() -> ExitCode {
    let config = Config::parse();
    if !rustix::process::geteuid().is_root() || !Path::new("/dev/fuse").exists() {
        eprintln!("load-test needs root and /dev/fuse (it mounts FUSE volumes)");
        return ExitCode::from(2);
    }
    match run(&config) {
        Ok(report) => {
            println!("{report}");
            if report.failures().is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("load-test: {e:#}");
            ExitCode::FAILURE
        }
    }
}
