//! The load test's parameters.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

/// Parameters (the defaults are the full load test).
#[derive(Debug, Clone, Parser)]
#[command(
    name = "load-test",
    about = "Load test of the real secretfs node",
    args_override_self = true
)]
pub struct Config {
    /// The `secretfs` binary (e.g. target/release/secretfs).
    #[arg(long, env = "SECRETFS_BIN")]
    pub secretfs: PathBuf,
    /// Volumes (pods) to publish.
    #[arg(long, default_value_t = 250)]
    pub volumes: usize,
    /// Publishes in flight at once (kubelet's parallel pod starts).
    #[arg(long, default_value_t = 16)]
    pub publish_concurrency: usize,
    /// SecretProviderClasses of extra secrets (the demo seed's class is one
    /// more).
    #[arg(long, default_value_t = 6)]
    pub classes: usize,
    /// Objects in each extra class.
    #[arg(long, default_value_t = 4)]
    pub objects_per_class: usize,
    /// Extra secrets in the vault, shared by the classes.
    #[arg(long, default_value_t = 12)]
    pub secrets: usize,
    /// Reads in total (open, one read(2), close).
    #[arg(long, default_value_t = 100_000)]
    pub reads: usize,
    /// Reader threads.
    #[arg(long, default_value_t = 8)]
    pub readers: usize,
    /// Spread the reads over this long (0s: as fast as possible).
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub read_time: Duration,
    /// The node's --rotation-poll-interval.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub rotation_poll_interval: Duration,
    /// How often the rotator writes new versions.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub rotate_every: Duration,
    /// Secrets given a new version at each rotation (round robin over the
    /// extra secrets and the seed secret).
    #[arg(long, default_value_t = 3)]
    pub rotate_per_tick: usize,
    /// Stop rotating after this many rotation ticks (0: until the readers
    /// are done).
    #[arg(long, default_value_t = 0)]
    pub rotation_ticks: usize,
    /// The node's log filter (its log goes to node.log in the work
    /// directory, shown on failure).
    #[arg(long, default_value = "warn")]
    pub node_log: String,
}

/// Parses `250ms`, `5s`, `1m` or a number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, scale) = if let Some(n) = text.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = text.strip_suffix('m') {
        (n, 60.0)
    } else {
        (text, 1.0)
    };
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration (e.g. 500ms, 5s, 1m)"))?;
    if !(value >= 0.0 && value.is_finite()) {
        return Err(format!("{text:?} is not a duration"));
    }
    Ok(Duration::from_secs_f64(value * scale))
}

impl Config {
    /// The CI smoke version: 10 volumes, 2,000 reads, one rotation.
    pub fn smoke(secretfs: PathBuf) -> Self {
        Config {
            secretfs,
            volumes: 10,
            publish_concurrency: 4,
            classes: 2,
            objects_per_class: 3,
            secrets: 4,
            reads: 2_000,
            readers: 4,
            read_time: Duration::from_secs(3),
            rotation_poll_interval: Duration::from_secs(2),
            rotate_every: Duration::from_millis(500),
            rotate_per_tick: 5,
            rotation_ticks: 1,
            node_log: "warn".into(),
        }
    }
}
