//! One driver's run: its emulator, node plugin, namespace and kubelet
//! stand-in ([`Run`]), kubelet's periodic republish ([`Republisher`]), and
//! the rows measured in turn ([`run_driver`]).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use k8s_openapi::api::core::v1::Pod;

use super::config::{Config, INTERVAL, REPUBLISH_MAX, REPUBLISH_MIN, VOLUME};
use super::model::{Rng, classes, pod_of, seed};
use super::report::Results;
use super::rows::{publish_row, read_row, rss_row};
use super::steady::steady_row;
use crate::kubelet::{Kubelet, PublishExtras};
use crate::peers::{Cluster, NodeOptions, NodePlugin, Peer, PluginPaths, Sandbox};
use crate::{CounterFilter, EmulatorHandle, Route};

/// pod uid → (pod, class, next republish).
type Schedule = HashMap<String, (Pod, String, Instant)>;

/// Kubelet's periodic republish of every mounted volume (`requiresRepublish`).
#[derive(Clone)]
pub(super) struct Republisher {
    entries: Arc<Mutex<Schedule>>,
    /// Republishes sent, per class.
    sent: Arc<Mutex<BTreeMap<String, u64>>>,
}

impl Republisher {
    fn start(kubelet: Kubelet) -> Republisher {
        let r = Republisher {
            entries: Arc::default(),
            sent: Arc::default(),
        };
        let me = r.clone();
        tokio::spawn(async move {
            let mut rng = Rng::new();
            loop {
                tokio::time::sleep(Duration::from_millis(200)).await;
                let now = Instant::now();
                let due: Vec<(Pod, String)> = {
                    let mut entries = me.entries.lock().unwrap();
                    entries
                        .values_mut()
                        .filter(|(_, _, at)| *at <= now)
                        .map(|(pod, class, at)| {
                            *at = now + rng.between(REPUBLISH_MIN, REPUBLISH_MAX);
                            (pod.clone(), class.clone())
                        })
                        .collect()
                };
                for (pod, class) in due {
                    *me.sent.lock().unwrap().entry(class).or_default() += 1;
                    let kubelet = kubelet.clone();
                    tokio::spawn(async move {
                        let _ = kubelet
                            .publish(&pod, VOLUME, &PublishExtras::default())
                            .await;
                    });
                }
            }
        });
        r
    }

    pub(super) fn add(&self, pod: &Pod, class: &str) {
        let mut rng = Rng::new();
        let first = Instant::now() + rng.between(REPUBLISH_MIN, REPUBLISH_MAX);
        self.entries.lock().unwrap().insert(
            pod.metadata.uid.clone().unwrap_or_default(),
            (pod.clone(), class.to_owned(), first),
        );
    }

    fn remove(&self, pod: &Pod) {
        self.entries
            .lock()
            .unwrap()
            .remove(pod.metadata.uid.as_deref().unwrap_or_default());
    }

    pub(super) fn sent(&self, class: &str) -> u64 {
        self.sent.lock().unwrap().get(class).copied().unwrap_or(0)
    }
}

pub(super) struct Run {
    pub(super) peer: Peer,
    pub(super) config: Config,
    pub(super) emulator: EmulatorHandle,
    pub(super) plugin: NodePlugin,
    pub(super) kubelet: Kubelet,
    pub(super) cluster: Cluster,
    pub(super) namespace: String,
    pub(super) node: String,
    pub(super) work: PathBuf,
    pub(super) republisher: Republisher,
    pub(super) seq: AtomicUsize,
}

impl Run {
    async fn start(peer: Peer, config: &Config, sandbox: &Sandbox) -> anyhow::Result<Run> {
        let tag = match peer {
            Peer::Secretfs => "secretfs",
            _ => "upstream",
        };
        let suffix = format!(
            "{:06x}",
            (std::process::id() as u64 ^ Rng::new().next()) & 0xffffff
        );
        let work = std::env::temp_dir().join(format!("peer-bench-{tag}-{suffix}"));
        std::fs::create_dir_all(&work)?;
        let ca = work.join("emulator-ca.pem");
        let emulator = sandbox.emulator(seed()?, &ca).await?;
        let cluster = Cluster::connect(&config.kubeconfig).await?;
        let node = format!("bench-{tag}-{suffix}");
        let namespace = format!("bench-{tag}-{suffix}");
        cluster.ensure_node(&node).await?;
        cluster.namespace(&namespace).await?;
        for class in classes() {
            cluster.apply(&namespace, &class).await?;
        }
        let paths = PluginPaths {
            peers_bin: config.peers_bin.clone(),
            secretfs: config.secretfs.clone(),
            kubeconfig: config.kubeconfig.clone(),
            ca,
            dir: work.join("node"),
        };
        let options = NodeOptions {
            node: node.clone(),
            rotation: Some(INTERVAL),
            sync_secrets: false,
            metrics_port: 8095,
            provider_cache_max_age: None,
        };
        let plugin = NodePlugin::start(peer, &paths, &options).await?;
        let kubelet = Kubelet::connect(&plugin.csi_socket, &work.join("kubelet")).await?;
        let republisher = Republisher::start(kubelet.clone());
        Ok(Run {
            peer,
            config: config.clone(),
            emulator,
            plugin,
            kubelet,
            cluster,
            namespace,
            node,
            work,
            republisher,
            seq: AtomicUsize::new(0),
        })
    }

    pub(super) async fn new_pod(&self, class: &str) -> anyhow::Result<Pod> {
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        self.cluster
            .create_pod(
                &self.namespace,
                &pod_of(class),
                &format!("{class}-{n:04}"),
                &self.node,
            )
            .await
    }

    pub(super) async fn publish(&self, pod: &Pod) -> anyhow::Result<Duration> {
        let start = Instant::now();
        self.kubelet
            .publish(pod, VOLUME, &PublishExtras::default())
            .await
            .with_context(|| format!("{}: publish", self.peer.label()))?;
        Ok(start.elapsed())
    }

    /// Publishes and keeps the volume republished like kubelet does.
    pub(super) async fn mount(&self, class: &str) -> anyhow::Result<Pod> {
        let pod = self.new_pod(class).await?;
        self.publish(&pod).await?;
        self.republisher.add(&pod, class);
        Ok(pod)
    }

    pub(super) async fn unmount(&self, pod: &Pod) -> anyhow::Result<()> {
        self.republisher.remove(pod);
        self.kubelet.unpublish(pod, VOLUME).await?;
        let name = pod.metadata.name.clone().unwrap_or_default();
        let _ = self.cluster.delete_pod(&self.namespace, &name).await;
        Ok(())
    }

    pub(super) fn target(&self, pod: &Pod) -> PathBuf {
        self.kubelet.target_path(pod, VOLUME)
    }

    pub(super) fn count(&self, filter: &CounterFilter) -> u64 {
        self.emulator.control().count(filter)
    }

    pub(super) fn log(&self, what: &str) {
        eprintln!(
            "peer-bench: {} {}: {what}",
            chrono_now(),
            match self.peer {
                Peer::Secretfs => "secretfs",
                _ => "upstream",
            }
        );
    }
}

fn chrono_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    format!(
        "{:02}:{:02}:{:02}",
        secs / 3600 % 24,
        secs / 60 % 60,
        secs % 60
    )
}

impl Run {
    pub(super) fn plugin_alive(&self) -> anyhow::Result<()> {
        // check_alive needs &mut; the daemons are only read here.
        for d in &self.plugin.daemons {
            if !Path::new(&format!("/proc/{}", d.pid())).exists() {
                bail!("{} is gone; end of its log:\n{}", d.name, d.log_tail(40));
            }
        }
        Ok(())
    }
}

pub(super) async fn run_driver(
    peer: Peer,
    config: &Config,
    sandbox: &Sandbox,
) -> anyhow::Result<Results> {
    let mut run = Run::start(peer, config, sandbox).await?;
    run.log("started");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let idle = run.plugin.rss_kib();
    let mut results = Results::default();
    let rows = &config.rows;
    if rows.iter().any(|r| r == "publish") {
        run.log("publish: seed class");
        results.publish_seed = Some(publish_row(&run, "azure-kvname", "kv-demo").await?);
        run.log("publish: 10 objects");
        results.publish_ten = Some(publish_row(&run, "kv-ten", "kv-ten").await?);
    }
    if rows.iter().any(|r| r == "read") {
        run.log("read");
        results.read = Some(read_row(&run).await?);
    }
    if rows.iter().any(|r| r == "rss") {
        run.log("rss: 110 volumes");
        results.memory = Some(rss_row(&run, idle).await?);
    }
    if rows.iter().any(|r| r == "steady") {
        steady_row(&run, &mut results).await?;
    }
    run.plugin.check_alive()?;
    results.run_pods = run.seq.load(Ordering::Relaxed);
    results.run_tokens = run.count(&CounterFilter::route(Route::ImdsToken));
    run.log("done");
    let _ = std::fs::remove_dir_all(&run.work);
    Ok(results)
}
