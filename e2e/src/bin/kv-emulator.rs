//! `kv-emulator`: run the Key Vault + Entra ID + IMDS emulator.
//!
//! On start it prints one line of JSON to stdout, e.g.
//! `{"admin":"http://127.0.0.1:40001/admin","caPath":"/tmp/…/ca.pem","https":"127.0.0.1:443","imds":"http://127.0.0.1:40002",…}`
//! and serves until SIGINT or SIGTERM.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use secretfs_e2e::{Emulator, EmulatorConfig, Seed, TrustedIssuer};

/// Azure Key Vault + Entra ID + IMDS emulator for secretfs tests.
#[derive(Debug, Parser)]
#[command(name = "kv-emulator", version)]
struct Args {
    /// HTTPS listener (Key Vault and Entra ID). Use 127.0.0.1:443 (root) so
    /// clients can use real host names with default settings.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Plain-HTTP listener for IMDS and NMI.
    #[arg(long, default_value = "127.0.0.1:0")]
    imds_listen: SocketAddr,
    /// Plain-HTTP listener for the admin API.
    #[arg(long, default_value = "127.0.0.1:0")]
    admin_listen: SocketAddr,
    /// Seed YAML (vaults, objects, identities, access lists, federations).
    /// Default: the built-in demo seed (vault kv-demo, secret sql-password).
    #[arg(long)]
    seed: Option<PathBuf>,
    /// Where to write the CA PEM (default: a new file under the temp dir).
    #[arg(long)]
    ca_path: Option<PathBuf>,
    /// Authority named in the 401 challenge.
    #[arg(long, default_value = "https://login.windows.net")]
    challenge_authority: String,
    /// Vault served to hosts that name none (IPs, localhost).
    #[arg(long)]
    default_vault: Option<String>,
    /// Access-token lifetime in seconds.
    #[arg(long, default_value_t = 3599)]
    token_lifetime: u64,
    /// Accept service-account tokens of another OIDC issuer as client
    /// assertions: `ISSUER=JWKS_FILE`, e.g. a Kubernetes API server's
    /// `--service-account-issuer` and the document it serves at
    /// `/openid/v1/jwks`. Repeatable. Federations in the seed name the
    /// issuer.
    #[arg(long = "trust-issuer", value_name = "ISSUER=JWKS_FILE", value_parser = parse_trusted)]
    trust_issuer: Vec<(String, PathBuf)>,
    /// Worker threads of the runtime.
    #[arg(long, default_value_t = 2)]
    threads: usize,
}

fn parse_trusted(arg: &str) -> Result<(String, PathBuf), String> {
    match arg.split_once('=') {
        Some((issuer, file)) if !issuer.is_empty() && !file.is_empty() => {
            Ok((issuer.to_string(), PathBuf::from(file)))
        }
        _ => Err(format!(
            "expected ISSUER=JWKS_FILE (e.g. https://kubernetes.default.svc=jwks.json), got '{arg}'"
        )),
    }
}

fn main() -> ExitCode {
    match run() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("kv-emulator: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<ExitCode> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("KV_EMULATOR_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let seed = match &args.seed {
        Some(p) => Seed::from_file(p).with_context(|| format!("reading seed {}", p.display()))?,
        None => Seed::demo(),
    };
    let mut trusted_issuers = Vec::new();
    for (issuer, file) in &args.trust_issuer {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("--trust-issuer {issuer}: reading {}", file.display()))?;
        let jwks: serde_json::Value = serde_json::from_str(&text)
            .with_context(|| format!("--trust-issuer {issuer}: {} is not JSON", file.display()))?;
        trusted_issuers.push(TrustedIssuer::from_jwks(issuer.clone(), &jwks)?);
    }
    let config = EmulatorConfig {
        seed,
        https_listen: args.listen,
        imds_listen: args.imds_listen,
        admin_listen: args.admin_listen,
        ca_path: args.ca_path.clone(),
        challenge_authority: args.challenge_authority.clone(),
        default_vault: args.default_vault.clone(),
        token_lifetime: Duration::from_secs(args.token_lifetime),
        trusted_issuers,
        ..EmulatorConfig::default()
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let handle = Emulator::start(config)
            .await
            .context("starting the emulator")?;
        let mut out = std::io::stdout().lock();
        writeln!(out, "{}", handle.info())?;
        out.flush()?;
        drop(out);
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        drop(handle);
        Ok(ExitCode::SUCCESS)
    })
}
