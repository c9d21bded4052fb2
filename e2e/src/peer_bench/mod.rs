//! `peer-bench`: secretfs and the upstream Secrets Store CSI Driver with the
//! upstream Azure provider, measured the same way in one run
//! (`scripts/peer-bench.sh`, which runs it inside `e2e/peers/sandbox.sh`
//! with a real control plane; docs/BENCHMARKS.md has the figures).
//!
//! Each driver gets the same run, one after the other: a fresh emulator
//! (Key Vault, Entra ID and IMDS at the addresses the SDKs use), its node
//! plugin started with its chart's flags (upstream: the driver's chart with
//! `enableSecretRotation=true`, else nothing is ever refreshed; secretfs:
//! its chart, keeper included), the same SecretProviderClasses and pods in
//! the real kube-apiserver, and the kubelet stand-in publishing them over
//! the CSI socket and republishing every mounted volume every 60–90 s, as
//! kubelet does for a driver with `requiresRepublish`. Rows:
//!
//! - `publish`: NodePublishVolume latency with 25 ms added to every vault
//!   request, the seed class (1 object) and a 10-object class, one publish
//!   at a time (each followed by its unpublish);
//! - `read`: warm open + read + close of a mounted 4 KiB file, against a
//!   file on a tmpfs in the same run;
//! - `rss`: the node plugin's and its provider's (or keeper's) resident
//!   memory, idle and with 110 volumes × 10 objects × 4 KiB (plus, for
//!   upstream, what its tmpfs volumes hold);
//! - `steady` (both drivers at their default 2-minute interval, after every
//!   volume has been mounted for longer than that): vault GETs in a window
//!   of one interval for 1, 10 and 100 pods × 10 objects of one identity;
//!   the time from a vault write to the new bytes in 10 pods' files; the
//!   requests sent to a vault that answers every request with 429 +
//!   `Retry-After: 10` for 60 s, and whether pods started meanwhile (of a
//!   class the node already serves, and of a new class) start, and when.
//!
//! Needs a sandbox with a real control plane and the peers built
//! (`e2e/peers/build.sh`). The `peer-bench` binary
//! (`src/bin/peer-bench.rs`, run by `scripts/peer-bench.sh`) parses a
//! [`Config`], runs both drivers ([`run()`]) and prints the [`table`].
//!
//! - `config.rs`: the parameters and the run's fixed figures; `report.rs`:
//!   what a run measured ([`Results`]) and how it prints;
//! - `model.rs`: the seed (vaults, secrets, values), classes, pods, and the
//!   PRNG for kubelet's jitter;
//! - `run.rs`: one driver's run, kubelet's republishes, the rows in turn;
//! - `rows.rs`: the publish, read and rss rows; `steady.rs`: the steady row.

mod config;
mod model;
mod report;
mod rows;
mod run;
mod steady;

use std::collections::BTreeMap;

use anyhow::bail;

pub use config::Config;
pub use report::{Results, table};

use crate::peers::{Peer, Sandbox};

/// Runs the drivers in `config.drivers`, one after the other; their results
/// by name ("secretfs", "upstream").
pub async fn run(config: &Config) -> anyhow::Result<BTreeMap<&'static str, Results>> {
    let sandbox = Sandbox::require()?;
    let mut results = BTreeMap::new();
    for driver in &config.drivers {
        let peer = match driver.as_str() {
            "upstream" => Peer::Upstream,
            "secretfs" => Peer::Secretfs,
            other => bail!("--drivers: {other:?} is neither upstream nor secretfs"),
        };
        let name = if peer == Peer::Secretfs {
            "secretfs"
        } else {
            "upstream"
        };
        results.insert(name, run::run_driver(peer, config, &sandbox).await?);
    }
    Ok(results)
}
