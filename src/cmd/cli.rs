//! The command line.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// secretfs: vault secrets as files in Kubernetes pods, served by FUSE.
#[derive(Debug, Parser)]
#[command(name = "secretfs", version, propagate_version = true, about, long_about = None)]
pub struct Cli {
    #[command(flatten)]
    pub log: LogArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the CSI node plugin (what the DaemonSet runs).
    Node(Box<NodeArgs>),
    /// Mount one SecretProviderClass at DIR outside Kubernetes, in the
    /// foreground until Ctrl-C (credentials from the environment).
    Mount(Box<MountArgs>),
    /// What a running node plugin serves: volumes, pods, files with their
    /// objects and versions, last refresh and error (never a value).
    Status(AdminArgs),
    /// Refresh volumes of a running node plugin now (all, or one target);
    /// skips the interval, not the vault's rate limits.
    Refresh(RefreshArgs),
    /// Run the seed example end to end on this machine: Key Vault emulator,
    /// CSI node plugin, a kubelet stand-in; no cloud, no cluster (needs root
    /// and /dev/fuse).
    Demo(DemoArgs),
    /// Serve the built-in Azure provider over the upstream provider protocol
    /// (`v1alpha1.CSIDriverProvider` on a unix socket), in place of the
    /// upstream Azure provider DaemonSet behind the upstream driver.
    Provider(Box<ProviderArgs>),
    /// Hold the /dev/fuse connections of the node plugin's volumes (and
    /// their state, in locked memory) so the volumes survive a restart or
    /// upgrade of the node plugin.
    Keeper(KeeperArgs),
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
    /// Write logs as JSON lines (`--log-format-json` or
    /// `--log-format-json=true|false`, as upstream's Go flag).
    #[arg(long = "log-format-json", global = true, default_value = "false", num_args = 0..=1,
          require_equals = true, default_missing_value = "true", value_parser = go_bool,
          action = clap::ArgAction::Set)]
    pub json: bool,
}

#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    /// Leave the volume mounted until Ctrl-C so you can explore it.
    #[arg(long)]
    pub keep: bool,
    /// Directory playing /var/lib/kubelet (default: a new temporary one).
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

/// `secretfs node`. Flags shared with the upstream driver keep its names.
#[derive(Debug, Clone, Args)]
pub struct NodeArgs {
    /// CSI endpoint kubelet connects to.
    #[arg(long, default_value = "unix:///csi/csi.sock")]
    pub endpoint: String,
    /// This node's name (the DaemonSet passes spec.nodeName).
    #[arg(long = "nodeid", env = "NODE_NAME")]
    pub node_id: String,
    /// CSI driver name.
    #[arg(long = "drivername", default_value = "secrets-store.csi.k8s.io")]
    pub driver_name: String,
    /// Read SecretProviderClass manifests from this directory instead of the
    /// Kubernetes API (for running without a cluster).
    #[arg(long, value_name = "DIR")]
    pub spc_dir: Option<PathBuf>,
    /// How reads are served: `page-cache` (warm reads never leave the
    /// kernel; an open reads one whole version) or `atomic` (every read is a
    /// round trip to the driver; descriptors held open follow rotations).
    /// See docs/SEMANTICS.md.
    #[arg(long, value_enum, default_value = "page-cache")]
    pub read_mode: ReadModeArg,
    /// Local admin socket for `secretfs status` and `secretfs refresh`
    /// (mode 0600; empty to disable).
    #[arg(long, default_value = crate::node::admin::DEFAULT_SOCKET)]
    pub admin_socket: String,
    /// Directory (on the host, surviving the container) of one record per
    /// published volume, without secrets: at start the node takes those
    /// volumes over or repairs them. Empty: volumes are not recorded.
    #[arg(long, default_value = "")]
    pub state_dir: String,
    /// Socket of `secretfs keeper`, which holds the volumes' FUSE
    /// connections (and their secrets, in locked memory) while the node
    /// plugin restarts. Needs --state-dir. Empty: volumes die with the
    /// process (their pods see ENOTCONN until they restart).
    #[arg(long, default_value = "")]
    pub keeper_socket: String,
    /// Address of /metrics, /healthz and /readyz (`:8095` for every
    /// address; empty to disable).
    #[arg(long, default_value = ":8095")]
    pub metrics_addr: Option<String>,
    /// Write the Kubernetes Secrets of `secretObjects` (the pod statuses
    /// are always written). Needs RBAC on secrets (chart: syncSecret.enabled).
    #[arg(long, default_value = "true", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", value_parser = go_bool, action = clap::ArgAction::Set)]
    pub sync_secrets: bool,
    /// How often each volume's pod status and Secrets are applied again
    /// although nothing changed (Go duration), at its next refresh: a
    /// deleted Secret or status object comes back, and owners are read
    /// again.
    #[arg(long, default_value = "5m", value_parser = crate::duration::parse)]
    pub sync_recheck_interval: std::time::Duration,
    /// Refresh mounted volumes from the vault (upstream's flag; on by
    /// default here: rotation is in place and costs one vault request per
    /// distinct object per interval).
    #[arg(long, default_value = "true", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", value_parser = go_bool, action = clap::ArgAction::Set)]
    pub enable_secret_rotation: bool,
    /// How often each volume is refreshed (Go duration: 30s, 2m, 1h).
    #[arg(long, default_value = "2m", value_parser = crate::duration::parse)]
    pub rotation_poll_interval: std::time::Duration,
    /// Warn each pod (Warning event SecretExpiringSoon) of a mounted object
    /// that expires within this (Go duration; Key Vault's exp or the
    /// certificate's notAfter, whichever is earlier). `0s`: warn only of
    /// objects that have expired (SecretExpired) or are not valid yet
    /// (SecretNotYetValid).
    #[arg(long, default_value = "168h", value_parser = expiry_warning)]
    pub expiry_warning: std::time::Duration,
    /// List a file as mounted but unused (`secretfs status`, metric
    /// secretfs_unread_files) when no container read it for longer than
    /// this since it was mounted or rotated (Go duration).
    #[arg(long, default_value = "24h", value_parser = crate::duration::parse)]
    pub unread_threshold: std::time::Duration,
    /// Where audit lines go for classes annotated `secretfs.io/audit:
    /// reads` (one JSON line per first open of a file version by a process):
    /// `-` for standard output (the driver's logs go to standard error), or
    /// a file, appended to (created 0600). Attribution to pods needs the
    /// host PID namespace (hostPID: true; Helm value audit.enabled).
    #[arg(long, value_name = "PATH|-", default_value = "-")]
    pub audit_log: String,
    /// Directory of external provider sockets (`<name>.sock`), tried first.
    #[arg(long, value_name = "DIR", default_value = crate::provider::external::DEFAULT_PROVIDER_VOLUME)]
    pub provider_volume: PathBuf,
    /// More directories of provider sockets, comma-separated, tried after
    /// `--provider-volume`.
    #[arg(
        long,
        value_name = "DIRS",
        value_delimiter = ',',
        default_value = crate::provider::external::DEFAULT_ADDITIONAL_PROVIDER_VOLUME_PATHS
    )]
    pub additional_provider_volume_paths: Vec<PathBuf>,
    /// Largest response accepted from an external provider, in bytes.
    #[arg(long, value_name = "BYTES", default_value_t = crate::provider::external::DEFAULT_MAX_RECV_MSG_SIZE)]
    pub max_call_recv_msg_size: usize,
    /// Deadline of one external provider Mount, retries included (Go
    /// duration); keep it below kubelet's ~2 m.
    #[arg(long, default_value = "100s", value_parser = crate::duration::parse)]
    pub provider_timeout: std::time::Duration,
    /// Check external providers every --provider-health-check-interval and
    /// log each that stops answering (upstream's flag; readiness checks
    /// them either way).
    #[arg(long, default_value = "false", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", value_parser = go_bool, action = clap::ArgAction::Set)]
    pub provider_health_check: bool,
    /// Interval of --provider-health-check (Go duration).
    #[arg(long, default_value = "2m", value_parser = crate::duration::parse)]
    pub provider_health_check_interval: std::time::Duration,
    /// Metrics exporter: only `prometheus` (upstream's only backend too).
    #[arg(long, value_name = "BACKEND", default_value = "prometheus", value_parser = metrics_backend)]
    pub metrics_backend: String,
    /// Accepted for upstream's manifests; no effect (pprof is Go's
    /// profiler): a warning is logged.
    #[arg(long, default_value = "false", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", value_parser = go_bool, action = clap::ArgAction::Set)]
    pub enable_pprof: bool,
    /// Accepted with --enable-pprof; no effect.
    #[arg(long, value_name = "PORT", default_value_t = 6065)]
    pub pprof_port: u16,
    /// klog verbosity of upstream's manifests (`-v=5`); accepted, no
    /// effect: a warning names --log instead.
    #[arg(short = 'v', long = "v", value_name = "LEVEL", default_value_t = 0)]
    pub klog_verbosity: u8,
    #[command(flatten)]
    pub azure: AzureArgs,
}

/// A Go boolean flag's value (`strconv.ParseBool`): upstream's manifests
/// write `--flag=true`, `--flag=false` or just `--flag`.
pub fn go_bool(value: &str) -> Result<bool, String> {
    match value {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
        other => Err(format!("{other:?} is not a boolean: write true or false")),
    }
}

/// `--expiry-warning`: a Go duration, or zero (`0`, `0s`) for no early
/// warning.
fn expiry_warning(value: &str) -> Result<std::time::Duration, String> {
    match value.trim() {
        "0" | "0s" | "0m" | "0h" => Ok(std::time::Duration::ZERO),
        text => crate::duration::parse(text),
    }
}

/// `--metrics-backend`: upstream's default is `Prometheus`, its only one.
fn metrics_backend(value: &str) -> Result<String, String> {
    if value.eq_ignore_ascii_case("prometheus") {
        Ok("prometheus".to_owned())
    } else {
        Err(format!(
            "{value:?} is not served: the only metrics backend is prometheus (on --metrics-addr); \
             remove the flag or set --metrics-backend=prometheus"
        ))
    }
}

/// `secretfs provider`: the Azure provider as a provider process.
#[derive(Debug, Clone, Args)]
pub struct ProviderArgs {
    /// The provider socket the driver dials (`<provider-volume>/azure.sock`).
    #[arg(
        long,
        default_value = "unix:///var/run/secrets-store-csi-providers/azure.sock"
    )]
    pub endpoint: String,
    /// This node's name (the DaemonSet passes spec.nodeName); part of the
    /// cache key of node identities.
    #[arg(long = "nodeid", env = "NODE_NAME", default_value = "")]
    pub node_id: String,
    /// How old a cached vault object may be when a Mount is answered (Go
    /// duration): mounts and rotation checks of the same identity, vault and
    /// object within it share one vault request. `0s` asks the vault on every
    /// Mount. Keep it below the driver's --rotation-poll-interval.
    #[arg(long, default_value = "100s", value_parser = crate::cmd::provider::parse_max_age)]
    pub cache_max_age: std::time::Duration,
    #[command(flatten)]
    pub azure: AzureArgs,
}

/// `--read-mode` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ReadModeArg {
    PageCache,
    Atomic,
}

/// Options of the built-in Azure Key Vault provider.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Azure provider")]
pub struct AzureArgs {
    /// Cloud used when a SecretProviderClass leaves `cloudName` empty.
    #[arg(long = "azure-cloud-name", default_value = "AzurePublicCloud")]
    pub cloud_name: String,
    /// Byte budget of the node's shared cache of vault objects (least
    /// recently used objects are evicted and wiped past it).
    #[arg(long = "cache-max-bytes", default_value_t = 64 * 1024 * 1024)]
    pub cache_max_bytes: usize,
    /// Vault requests this process may make per vault: `<requests>/<period>`
    /// (a token bucket; a 429 with `Retry-After` pauses it for that long).
    #[arg(long = "vault-rate-limit", value_name = "N/PERIOD", default_value = "1000/10s", value_parser = crate::provider::azure::rate::parse_rate_limit)]
    pub vault_rate_limit: crate::provider::azure::rate::RateLimit,
    /// Extra CA certificates (PEM) to trust for Key Vault and Entra ID.
    #[arg(long = "azure-ca-file", value_name = "PEM")]
    pub ca_file: Option<PathBuf>,
    /// Resolve a host name (or `*.suffix`) to an address, e.g.
    /// `*.vault.azure.net=127.0.0.1:8443` (repeatable; for private
    /// endpoints and emulators).
    #[arg(long = "azure-resolve", value_name = "HOST=ADDR")]
    pub resolve: Vec<String>,
    /// Port of the Key Vault endpoints (default: the URL's, 443).
    #[arg(long = "azure-vault-port", value_name = "PORT")]
    pub vault_port: Option<u16>,
    /// Entra ID authority host, e.g. `https://login.microsoftonline.com`.
    #[arg(long = "azure-authority-host", value_name = "URL")]
    pub authority_host: Option<String>,
    /// IMDS base URL (managed identity).
    #[arg(
        long = "azure-imds-endpoint",
        value_name = "URL",
        default_value = "http://169.254.169.254"
    )]
    pub imds_endpoint: String,
    /// aad-pod-identity NMI base URL (deprecated pod identity).
    #[arg(
        long = "azure-nmi-endpoint",
        value_name = "URL",
        default_value = "http://localhost:2579"
    )]
    pub nmi_endpoint: String,
}

/// Options of the admin commands.
#[derive(Debug, Clone, Args)]
pub struct AdminArgs {
    /// The node plugin's admin socket.
    #[arg(long, default_value = crate::node::admin::DEFAULT_SOCKET)]
    pub admin_socket: PathBuf,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// `secretfs keeper`.
#[derive(Debug, Clone, Args)]
pub struct KeeperArgs {
    /// The socket the node plugin hands its volumes to (mode 0600; its
    /// directory is created with mode 0700 if missing).
    #[arg(long, default_value = crate::node::keeper::DEFAULT_SOCKET)]
    pub socket: PathBuf,
}

/// `secretfs refresh`.
#[derive(Debug, Clone, Args)]
pub struct RefreshArgs {
    #[command(flatten)]
    pub admin: AdminArgs,
    /// The target path of one volume (default: every volume).
    pub target: Option<PathBuf>,
}

/// `secretfs mount`.
#[derive(Debug, Clone, Args)]
pub struct MountArgs {
    /// The SecretProviderClass manifest (YAML).
    #[arg(long, value_name = "FILE")]
    pub spc: PathBuf,
    /// The class's namespace, when the file holds several.
    #[arg(long)]
    pub namespace: Option<String>,
    /// How often the files are refreshed (Go duration).
    #[arg(long, default_value = "2m", value_parser = crate::duration::parse)]
    pub rotation_poll_interval: std::time::Duration,
    /// Where to mount (an existing directory).
    pub dir: PathBuf,
    #[command(flatten)]
    pub azure: AzureArgs,
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::time::Duration;

    use clap::Parser;
    use clap::error::ErrorKind;

    use super::*;
    use crate::provider::external::ExternalConfig;

    fn node(args: &[&str]) -> Result<NodeArgs, clap::Error> {
        let cli = Cli::try_parse_from(["secretfs", "node"].iter().chain(args))?;
        match cli.command {
            Command::Node(node) => Ok(*node),
            other => panic!("parsed {other:?}"),
        }
    }

    #[test]
    fn expiry_warning_takes_a_duration_or_zero_and_names_itself_when_wrong() {
        let at = |v: &str| node(&["--nodeid=n", &format!("--expiry-warning={v}")]);
        assert_eq!(
            at("72h").unwrap().expiry_warning,
            Duration::from_secs(72 * 3600)
        );
        assert_eq!(at("0s").unwrap().expiry_warning, Duration::ZERO);
        assert_eq!(at("0").unwrap().expiry_warning, Duration::ZERO);
        let err = at("7d").unwrap_err().to_string();
        assert!(
            err.contains("--expiry-warning") && err.contains("7d"),
            "{err}"
        );
    }

    #[test]
    fn node_defaults_are_upstreams() {
        // `--nodeid` has no default (upstream's manifests always pass it):
        // without it or NODE_NAME, the error names both.
        if std::env::var_os("NODE_NAME").is_none() {
            let err = node(&[]).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::MissingRequiredArgument, "{err}");
            assert!(err.to_string().contains("--nodeid"), "{err}");
        }
        let args = node(&["--nodeid=node-1"]).unwrap();
        assert_eq!(args.endpoint, "unix:///csi/csi.sock");
        assert_eq!(args.node_id, "node-1");
        assert_eq!(args.driver_name, "secrets-store.csi.k8s.io");
        assert_eq!(
            args.provider_volume,
            PathBuf::from("/var/run/secrets-store-csi-providers")
        );
        assert_eq!(
            args.additional_provider_volume_paths,
            [PathBuf::from("/etc/kubernetes/secrets-store-csi-providers")]
        );
        assert_eq!(args.max_call_recv_msg_size, 4 * 1024 * 1024);
        assert_eq!(args.provider_timeout, Duration::from_secs(100));
        assert_eq!(args.rotation_poll_interval, Duration::from_secs(120));
        assert_eq!(args.expiry_warning, Duration::from_secs(7 * 24 * 3600));
        assert_eq!(args.unread_threshold, Duration::from_secs(24 * 3600));
        assert!(args.enable_secret_rotation);
        assert!(args.sync_secrets);
        assert_eq!(args.metrics_addr.as_deref(), Some(":8095"));
        assert_eq!(args.metrics_backend, "prometheus");
        assert!(!args.provider_health_check);
        assert_eq!(
            args.provider_health_check_interval,
            Duration::from_secs(120)
        );
        assert!(!args.enable_pprof);
        assert_eq!(args.pprof_port, 6065);
        assert_eq!(args.klog_verbosity, 0);
        assert!(crate::cmd::node::ignored_flags(&args).is_empty());
        // What reaches the external providers: both directories, in order.
        let config = crate::cmd::node::external_config(&args);
        assert_eq!(
            config.dirs,
            [
                PathBuf::from("/var/run/secrets-store-csi-providers"),
                PathBuf::from("/etc/kubernetes/secrets-store-csi-providers"),
            ]
        );
        assert_eq!(config.max_recv_msg_size, 4_194_304);
        assert_eq!(config.timeout, Duration::from_secs(100));
        assert_eq!(config, ExternalConfig::default());
    }

    /// Upstream's DaemonSet arguments (manifest and Helm chart), every flag
    /// of its list, parse and reach the configuration.
    #[test]
    fn upstream_daemonset_args_are_accepted() {
        let args = node(&[
            "--endpoint=unix:///csi/csi.sock",
            "--nodeid=node-2",
            "--drivername=secrets-store.csi.k8s.io",
            "--provider-volume=/var/run/providers",
            "--additional-provider-volume-paths=/etc/a,/etc/b",
            "--metrics-addr=:9095",
            "--metrics-backend=Prometheus",
            "--enable-secret-rotation",
            "--rotation-poll-interval=30s",
            "--provider-health-check=true",
            "--provider-health-check-interval=1m",
            "--max-call-recv-msg-size=1024",
            "--enable-pprof=true",
            "--pprof-port=6060",
            "--log-format-json=true",
            "-v=5",
            "--provider-timeout=20s",
            "--sync-secrets=false",
        ])
        .unwrap();
        assert_eq!(args.metrics_addr.as_deref(), Some(":9095"));
        assert_eq!(args.metrics_backend, "prometheus");
        assert!(args.enable_secret_rotation);
        assert!(!args.sync_secrets);
        assert_eq!(args.rotation_poll_interval, Duration::from_secs(30));
        assert!(args.provider_health_check);
        assert_eq!(args.provider_health_check_interval, Duration::from_secs(60));
        assert_eq!(args.pprof_port, 6060);
        assert_eq!(args.klog_verbosity, 5);
        let config = crate::cmd::node::external_config(&args);
        assert_eq!(
            config.dirs,
            ["/var/run/providers", "/etc/a", "/etc/b"].map(PathBuf::from)
        );
        assert_eq!(config.max_recv_msg_size, 1024);
        assert_eq!(config.timeout, Duration::from_secs(20));
        let warnings = crate::cmd::node::ignored_flags(&args);
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(warnings[0].contains("--enable-pprof") && warnings[0].contains("Go"));
        assert!(warnings[1].contains("-v=5") && warnings[1].contains("--log"));
        // Go booleans: `--flag=false` turns a default-on flag off.
        let off = node(&["--nodeid=n", "--enable-secret-rotation=false"]).unwrap();
        assert!(!off.enable_secret_rotation);
        let json =
            Cli::try_parse_from(["secretfs", "node", "--nodeid=n", "--log-format-json"]).unwrap();
        assert!(json.log.json);
    }

    #[test]
    fn bad_values_name_the_flag_and_the_fix() {
        let err = node(&["--nodeid=n", "--metrics-backend=stackdriver"]).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("--metrics-backend") && text.contains("prometheus"),
            "{text}"
        );
        let err = node(&["--nodeid=n", "--provider-health-check=yes"]).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("--provider-health-check") && text.contains("true or false"),
            "{text}"
        );
    }

    #[test]
    fn version_is_printed_by_the_binary_and_by_node() {
        for args in [
            &["secretfs", "--version"][..],
            &["secretfs", "node", "--version"],
        ] {
            let err = Cli::try_parse_from(args).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::DisplayVersion, "{args:?}");
            assert!(
                err.to_string().contains(env!("CARGO_PKG_VERSION")),
                "{args:?}: {err}"
            );
        }
    }
}
