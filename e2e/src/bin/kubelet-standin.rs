//! `kubelet-standin`: the NodePublishVolume / NodeUnpublishVolume calls
//! kubelet makes for a pod's inline `csi` volumes, sent to a CSI driver's
//! socket from the command line (the library's [`Kubelet`]). The
//! real-cluster tests use it to drive a second `secretfs node` with another
//! node name against the same API server, for a pod object that exists in
//! that API server (its uid is the API server's):
//!
//! ```text
//! kubectl get pod web -o yaml > pod.yaml
//! kubelet-standin --socket /run/node-b/csi.sock --root /var/lib/node-b publish pod.yaml
//! kubelet-standin --socket /run/node-b/csi.sock --root /var/lib/node-b unpublish pod.yaml
//! ```
//!
//! It prints each target path it published. Without `--volume`, every csi
//! volume of the pod. No service-account tokens are sent (the pod's class
//! must not need them).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, ValueEnum};
use secretfs_e2e::kubelet::{Kubelet, PublishExtras, parse_pod};

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Action {
    Publish,
    Unpublish,
}

/// Send kubelet's CSI calls for a pod's inline csi volumes.
#[derive(Debug, Parser)]
#[command(name = "kubelet-standin", version)]
struct Args {
    /// The driver's CSI socket.
    #[arg(long)]
    socket: PathBuf,
    /// What plays kubelet's root directory (/var/lib/kubelet): target paths
    /// are `<root>/pods/<uid>/volumes/kubernetes.io~csi/<volume>/mount`.
    #[arg(long)]
    root: PathBuf,
    /// Only this volume of the pod.
    #[arg(long)]
    volume: Option<String>,
    action: Action,
    /// The pod as the API server returns it (YAML or JSON, with its uid).
    pod: PathBuf,
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kubelet-standin: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
    let args = Args::parse();
    let text = std::fs::read_to_string(&args.pod)
        .with_context(|| format!("reading {}", args.pod.display()))?;
    let pod = parse_pod(&text)?;
    let volumes: Vec<String> = match &args.volume {
        Some(v) => vec![v.clone()],
        None => pod
            .spec
            .iter()
            .flat_map(|s| s.volumes.iter().flatten())
            .filter(|v| v.csi.is_some())
            .map(|v| v.name.clone())
            .collect(),
    };
    anyhow::ensure!(!volumes.is_empty(), "the pod has no csi volume");
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(async {
            let kubelet = Kubelet::connect(&args.socket, &args.root).await?;
            for volume in &volumes {
                match args.action {
                    Action::Publish => {
                        let target = kubelet
                            .publish(&pod, volume, &PublishExtras::default())
                            .await?;
                        println!("{}", target.display());
                    }
                    Action::Unpublish => kubelet.unpublish(&pod, volume).await?,
                }
            }
            anyhow::Ok(())
        })
}
