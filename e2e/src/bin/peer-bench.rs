//! `peer-bench`: secretfs and the upstream Secrets Store CSI Driver with the
//! upstream Azure provider, measured the same way in one run. The bench
//! itself is the library's `peer_bench` module (`e2e/src/peer_bench/`,
//! which describes the rows); this binary parses the parameters, runs it,
//! writes the JSON and prints the table. `scripts/peer-bench.sh` runs it
//! inside `e2e/peers/sandbox.sh` with a real control plane;
//! docs/BENCHMARKS.md has the figures.

use clap::Parser;
use secretfs_e2e::peer_bench::{Config, run, table};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    let results = run(&config).await?;
    if let Some(path) = &config.json {
        std::fs::write(path, serde_json::to_string_pretty(&results)?)?;
    }
    println!("\n| figure | secretfs | upstream | upstream ÷ secretfs |\n|---|---|---|---|");
    print!("{}", table(&results));
    Ok(())
}
