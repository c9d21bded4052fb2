//! `kv-bench`: measure how many authorised secret GETs per second the
//! emulator serves, with N keep-alive HTTPS connections for a fixed time.
//!
//! Without `--admin` it starts an emulator in process (on its own runtime);
//! with `--admin`/`--https`/`--ca` it drives a running `kv-emulator`.
//! Prints one JSON line: `{"requests":…,"errors":…,"seconds":…,"rps":…}`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use bytes::Bytes;
use clap::Parser;
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName};
use secretfs_e2e::{Emulator, EmulatorConfig, Seed};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// Load generator for the Key Vault emulator.
#[derive(Debug, Parser)]
#[command(name = "kv-bench")]
struct Args {
    /// Concurrent keep-alive connections.
    #[arg(long, default_value_t = 16)]
    connections: usize,
    /// Seconds to run.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Vault and secret to GET.
    #[arg(long, default_value = "kv-demo")]
    vault: String,
    #[arg(long, default_value = "sql-password")]
    secret: String,
    /// Identity whose token is used (name or client id).
    #[arg(long, default_value = "app-sp")]
    identity: String,
    /// Admin URL of a running kv-emulator (e.g. http://127.0.0.1:4000/admin).
    #[arg(long, requires_all = ["https", "ca"])]
    admin: Option<String>,
    /// HTTPS address of a running kv-emulator.
    #[arg(long)]
    https: Option<SocketAddr>,
    /// CA PEM of a running kv-emulator.
    #[arg(long)]
    ca: Option<PathBuf>,
    /// Client worker threads.
    #[arg(long, default_value_t = 1)]
    client_threads: usize,
    /// Emulator worker threads (in-process mode).
    #[arg(long, default_value_t = 2)]
    server_threads: usize,
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kv-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

struct Target {
    https: SocketAddr,
    ca_pem: String,
    token: String,
    _server: Option<(tokio::runtime::Runtime, secretfs_e2e::EmulatorHandle)>,
}

fn run() -> anyhow::Result<()> {
    let args = Args::parse();
    let client_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.client_threads.max(1))
        .enable_all()
        .build()?;
    let target = match &args.admin {
        Some(admin) => {
            let https = args.https.context("--https")?;
            let ca_pem = std::fs::read_to_string(args.ca.as_ref().context("--ca")?)?;
            let token = client_rt.block_on(admin_token(admin, &args.identity))?;
            Target {
                https,
                ca_pem,
                token,
                _server: None,
            }
        }
        None => {
            let server_rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(args.server_threads.max(1))
                .enable_all()
                .build()?;
            let handle =
                server_rt.block_on(Emulator::start(EmulatorConfig::with_seed(Seed::demo())))?;
            let token = handle.access_token(&args.identity, "https://vault.azure.net", 3599)?;
            Target {
                https: handle.https_addr(),
                ca_pem: handle.ca_pem().to_string(),
                token,
                _server: Some((server_rt, handle)),
            }
        }
    };
    let result = client_rt.block_on(load(&args, &target))?;
    println!("{result}");
    Ok(())
}

async fn admin_token(admin: &str, identity: &str) -> anyhow::Result<String> {
    let url: http::Uri = format!("{}/access-token", admin.trim_end_matches('/')).parse()?;
    let authority = url.authority().context("admin URL has no host")?.clone();
    let tcp = TcpStream::connect(authority.as_str()).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
    tokio::spawn(conn);
    let body = serde_json::json!({"identity": identity}).to_string();
    let req = http::Request::post(url.path())
        .header("host", authority.as_str())
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))?;
    let resp = sender.send_request(req).await?;
    let bytes = resp.into_body().collect().await?.to_bytes();
    let v: serde_json::Value = serde_json::from_slice(&bytes)?;
    Ok(v["accessToken"]
        .as_str()
        .context("no accessToken in admin answer")?
        .to_string())
}

async fn load(args: &Args, target: &Target) -> anyhow::Result<serde_json::Value> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(target.ca_pem.as_bytes()) {
        roots.add(cert?)?;
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = TlsConnector::from(Arc::new(config));
    let host = format!("{}.vault.azure.net", args.vault);
    let path = format!("/secrets/{}/?api-version=7.4", args.secret);
    let ok = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let auth = format!("Bearer {}", target.token);
    let host_header = format!("{host}:{}", target.https.port());

    let mut tasks = Vec::new();
    for _ in 0..args.connections.max(1) {
        let tcp = TcpStream::connect(target.https).await?;
        tcp.set_nodelay(true)?;
        let tls = connector
            .connect(ServerName::try_from(host.clone())?, tcp)
            .await?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
        tokio::spawn(conn);
        let (ok, errors, stop) = (ok.clone(), errors.clone(), stop.clone());
        let (path, auth, host_header) = (path.clone(), auth.clone(), host_header.clone());
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let req = http::Request::get(path.as_str())
                    .header("host", host_header.as_str())
                    .header("authorization", auth.as_str())
                    .body(Empty::<Bytes>::new());
                let Ok(req) = req else { break };
                match sender.send_request(req).await {
                    Ok(resp) => {
                        let status = resp.status();
                        let drained = resp.into_body().collect().await.is_ok();
                        if status == http::StatusCode::OK && drained {
                            ok.fetch_add(1, Ordering::Relaxed);
                        } else {
                            errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Err(_) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                }
            }
        }));
    }
    // Warm-up excluded: measure from here.
    let start = Instant::now();
    let before = ok.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(args.duration)).await;
    let done = ok.load(Ordering::Relaxed) - before;
    let elapsed = start.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
    }
    let errors = errors.load(Ordering::Relaxed);
    if done == 0 {
        bail!("no request succeeded ({errors} errors)");
    }
    Ok(serde_json::json!({
        "requests": done,
        "errors": errors,
        "seconds": (elapsed * 100.0).round() / 100.0,
        "rps": (done as f64 / elapsed).round(),
        "connections": args.connections,
    }))
}
