//! peer-bench's parameters and the run's fixed figures.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

pub(super) const SEED_CLASS: &str =
    include_str!("../../../tests/fixtures/seed/secretproviderclass.yaml");
pub(super) const SEED_POD: &str = include_str!("../../../tests/fixtures/seed/pod.yaml");
pub(super) const VOLUME: &str = "secrets-store-inline";
pub(super) const TENANT: &str = "9c0d2e7b-1a3f-4b6c-8d5e-7f1a2b3c4d5e";
pub(super) const NODE_IDENTITY: &str = "5a1d3e0c-6f0e-4c55-9a57-3c2f1b7d9e21";
/// Objects per class (but the seed's and the rotation class's one).
pub(super) const M: usize = 10;
pub(super) const VALUE_BYTES: usize = 4096;
/// Both charts' default `rotationPollInterval`.
pub(super) const INTERVAL: Duration = Duration::from_secs(120);
/// Kubelet resyncs a pod every 60 s plus up to 50 % jitter.
pub(super) const REPUBLISH_MIN: Duration = Duration::from_secs(60);
pub(super) const REPUBLISH_MAX: Duration = Duration::from_secs(90);
pub(super) const CYCLE_PODS: [usize; 3] = [1, 10, 100];
pub(super) const ROTATE_PODS: usize = 10;
pub(super) const THROTTLE_PODS: usize = 10;
pub(super) const THROTTLE_FOR: Duration = Duration::from_secs(60);
pub(super) const RETRY_AFTER: u32 = 10;

#[derive(Debug, Clone, Parser)]
#[command(
    name = "peer-bench",
    about = "secretfs and the upstream driver side by side"
)]
pub struct Config {
    /// The `secretfs` binary.
    #[arg(long, env = "SECRETFS_BIN")]
    pub secretfs: PathBuf,
    /// The peers' bin directory (e2e/peers/build.sh).
    #[arg(long, env = "SECRETFS_PEERS_BIN")]
    pub peers_bin: PathBuf,
    /// The control plane's admin kubeconfig.
    #[arg(long, env = "SECRETFS_TEST_KUBECONFIG")]
    pub kubeconfig: PathBuf,
    /// Rows to measure (publish, read, rss, steady).
    #[arg(long, value_delimiter = ',', default_value = "publish,read,rss,steady")]
    pub rows: Vec<String>,
    /// Drivers to measure (upstream, secretfs).
    #[arg(long, value_delimiter = ',', default_value = "upstream,secretfs")]
    pub drivers: Vec<String>,
    /// Publishes per class in the publish row (the first is the first mount).
    #[arg(long, default_value_t = 41)]
    pub publishes: usize,
    /// Warm reads per file in the read row.
    #[arg(long, default_value_t = 20_000)]
    pub reads: usize,
    /// Vault writes in the rotation part of the steady row.
    #[arg(long, default_value_t = 3)]
    pub writes: usize,
    /// Where to write the results as JSON.
    #[arg(long)]
    pub json: Option<PathBuf>,
}
