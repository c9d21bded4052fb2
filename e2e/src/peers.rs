//! The upstream peers of secretfs, run for real next to it: the Secrets
//! Store CSI Driver node plugin and the Azure Key Vault provider, built from
//! their Go modules by `e2e/peers/build.sh`, started with the flags their
//! Helm charts pass, and pointed at the Key Vault + Entra ID + IMDS emulator
//! without any setting of theirs changed (see `e2e/peers/README.md`):
//!
//! - inside `e2e/peers/sandbox.sh` (a private network and mount namespace),
//!   the emulator serves Key Vault and Entra ID on `127.0.0.1:443` and IMDS
//!   on `169.254.169.254:80`, the addresses every Azure SDK uses;
//! - [`Sandbox::resolve`] writes the sandbox's own `/etc/hosts`, so
//!   `<vault>.vault.azure.net` and `login.microsoftonline.com` resolve to
//!   the emulator for Go's resolver and for glibc alike;
//! - Go trusts the emulator's CA through `SSL_CERT_FILE`, secretfs through
//!   `--azure-ca-file`.
//!
//! [`Cluster`] makes what the drivers read from the real kube-apiserver:
//! a Node, namespaces, SecretProviderClasses and pods bound to the node.

use std::collections::BTreeMap;
use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use k8s_openapi::api::core::v1::{Namespace, Node, Pod, Secret};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, DynamicObject, GroupVersionKind};
use serde_json::{Value, json};

use crate::{Emulator, EmulatorConfig, EmulatorHandle, Seed};

/// The driver name both drivers register.
pub const DRIVER_NAME: &str = "secrets-store.csi.k8s.io";
/// The host names of Entra ID the emulator answers for (public cloud).
pub const ENTRA_HOSTS: [&str; 3] = [
    "login.microsoftonline.com",
    "login.windows.net",
    "management.azure.com",
];
/// Binary names in the directory `e2e/peers/build.sh` prints.
pub const DRIVER_BIN: &str = "secrets-store-csi-driver";
pub const AZURE_BIN: &str = "secrets-store-csi-driver-provider-azure";

/// Proof that this process runs inside `e2e/peers/sandbox.sh`.
#[derive(Debug)]
pub struct Sandbox(());

impl Sandbox {
    /// Checks the sandbox: the variable it exports, 169.254.169.254 on an
    /// interface, and a private `/etc/hosts`. The error says how to enter it.
    pub fn require() -> anyhow::Result<Sandbox> {
        const HOW: &str = "run it inside e2e/peers/sandbox.sh (a private network and mount \
                           namespace; scripts/peer-bench.sh and scripts/peer-conformance.sh do)";
        if std::env::var_os("SECRETFS_PEERS_SANDBOX").is_none_or(|v| v != "1") {
            bail!("SECRETFS_PEERS_SANDBOX is not 1: {HOW}");
        }
        // The address only exists on loopback inside the sandbox.
        std::net::TcpListener::bind("169.254.169.254:0")
            .with_context(|| format!("169.254.169.254 is not an address here: {HOW}"))?;
        Ok(Sandbox(()))
    }

    /// Makes the sandbox's `/etc/hosts` name `localhost` and every one of
    /// `names` as 127.0.0.1 (the file is the sandbox's own, bound over the
    /// real one by sandbox.sh).
    pub fn resolve<S: AsRef<str>>(&self, names: impl IntoIterator<Item = S>) -> anyhow::Result<()> {
        let mut text = String::from("127.0.0.1\tlocalhost\n::1\tlocalhost\n");
        for name in names {
            text.push_str(&format!("127.0.0.1\t{}\n", name.as_ref()));
        }
        std::fs::write("/etc/hosts", text).context("writing the sandbox's /etc/hosts")
    }

    /// Starts the emulator on the addresses the SDKs use by default
    /// (`127.0.0.1:443` for Key Vault and Entra ID, `169.254.169.254:80` for
    /// IMDS) and resolves every vault of `seed` and the Entra hosts to it.
    /// Its CA is written to `ca_path`.
    pub async fn emulator(&self, seed: Seed, ca_path: &Path) -> anyhow::Result<EmulatorHandle> {
        let mut names: Vec<String> = seed
            .vaults
            .iter()
            .map(|v| format!("{}.vault.azure.net", v.name))
            .collect();
        names.extend(ENTRA_HOSTS.iter().map(|h| h.to_string()));
        self.resolve(&names)?;
        let config = EmulatorConfig {
            https_listen: SocketAddr::from(([127, 0, 0, 1], 443)),
            imds_listen: SocketAddr::from(([169, 254, 169, 254], 80)),
            ca_path: Some(ca_path.to_owned()),
            ..EmulatorConfig::with_seed(seed)
        };
        Emulator::start(config)
            .await
            .context("starting the emulator on 127.0.0.1:443 and 169.254.169.254:80")
    }
}

/// The directory of the peers' binaries (`SECRETFS_PEERS_BIN`, which
/// `e2e/peers/build.sh` prints).
pub fn peers_bin() -> anyhow::Result<PathBuf> {
    let dir = std::env::var_os("SECRETFS_PEERS_BIN")
        .map(PathBuf::from)
        .context(
            "SECRETFS_PEERS_BIN is not set: export SECRETFS_PEERS_BIN=$(e2e/peers/build.sh)",
        )?;
    for name in [DRIVER_BIN, AZURE_BIN] {
        if !dir.join(name).is_file() {
            bail!(
                "{} has no {name}: SECRETFS_PEERS_BIN must be the directory e2e/peers/build.sh prints",
                dir.display()
            );
        }
    }
    Ok(dir)
}

/// A long-running process with its output in a log file; stopped (SIGTERM,
/// then SIGKILL after 10 s) when dropped.
#[derive(Debug)]
pub struct Daemon {
    pub name: String,
    pub log: PathBuf,
    child: Child,
}

impl Daemon {
    /// Starts `command` with stdout and stderr appended to `log`.
    pub fn spawn(name: &str, mut command: Command, log: &Path) -> anyhow::Result<Daemon> {
        let file = File::options()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("opening {}", log.display()))?;
        command
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file);
        let child = command
            .spawn()
            .with_context(|| format!("starting {name} ({:?})", command.get_program()))?;
        Ok(Daemon {
            name: name.to_owned(),
            log: log.to_owned(),
            child,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident memory (`VmRSS`) in KiB.
    pub fn rss_kib(&self) -> u64 {
        status_field(self.pid(), "VmRSS:")
    }

    /// An error if the process has exited, with the end of its log.
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!(
                "{} exited ({status}); end of {}:\n{}",
                self.name,
                self.log.display(),
                self.log_tail(40)
            );
        }
        Ok(())
    }

    /// The last `lines` lines of the log.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Waits until the Unix socket at `path` accepts a connection. Its
    /// file appears at bind(2), before listen(2): a connect in between is
    /// refused (seen with the Go driver on a loaded machine), so the file
    /// alone is not enough.
    pub async fn wait_for(&mut self, path: &Path, limit: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + limit;
        while std::os::unix::net::UnixStream::connect(path).is_err() {
            self.check_alive()?;
            if Instant::now() > deadline {
                bail!(
                    "{} did not listen on {} within {limit:?}; end of its log:\n{}",
                    self.name,
                    path.display(),
                    self.log_tail(40)
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }

    /// SIGTERM, then SIGKILL after 10 s; waits for the exit.
    pub fn stop(&mut self) {
        let pid = rustix::process::Pid::from_child(&self.child);
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A numeric field of `/proc/<pid>/status`, in KiB (0 if unreadable).
pub fn status_field(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Which driver serves the volumes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Peer {
    /// The upstream node plugin with the upstream Azure provider.
    Upstream,
    /// The upstream node plugin with `secretfs provider` as provider `azure`.
    UpstreamWithOurs,
    /// `secretfs node` (with its keeper, as its chart ships it).
    Secretfs,
}

impl Peer {
    pub fn label(self) -> &'static str {
        match self {
            Peer::Upstream => "upstream driver + upstream Azure provider",
            Peer::UpstreamWithOurs => "upstream driver + secretfs provider",
            Peer::Secretfs => "secretfs node",
        }
    }
}

/// Options of a node plugin, the same for every [`Peer`].
#[derive(Debug, Clone)]
pub struct NodeOptions {
    /// The node's name (`--nodeid`).
    pub node: String,
    /// `--enable-secret-rotation` (upstream's chart: false; secretfs's:
    /// true) and `--rotation-poll-interval` (both charts: 2m).
    pub rotation: Option<Duration>,
    /// Write `secretObjects` Secrets (both charts: `syncSecret.enabled`,
    /// false by default).
    pub sync_secrets: bool,
    /// `--metrics-addr` port (upstream's chart :8095, the Azure chart :8080
    /// for the driver; secretfs's chart :8095).
    pub metrics_port: u16,
    /// `secretfs provider --cache-max-age` for [`Peer::UpstreamWithOurs`]
    /// (`None`: its default, 100 s).
    pub provider_cache_max_age: Option<Duration>,
}

/// A running node plugin (and its provider or keeper) with its CSI socket.
#[derive(Debug)]
pub struct NodePlugin {
    pub peer: Peer,
    pub csi_socket: PathBuf,
    /// The node plugin first, then its provider or keeper.
    pub daemons: Vec<Daemon>,
    /// secretfs's admin socket (`secretfs status`), for [`Peer::Secretfs`].
    pub admin_socket: Option<PathBuf>,
}

/// Everything [`NodePlugin::start`] needs.
#[derive(Debug, Clone)]
pub struct PluginPaths {
    /// The peers' bin directory ([`peers_bin`]).
    pub peers_bin: PathBuf,
    /// The `secretfs` binary.
    pub secretfs: PathBuf,
    /// The admin kubeconfig of the control plane.
    pub kubeconfig: PathBuf,
    /// The emulator's CA (PEM).
    pub ca: PathBuf,
    /// A directory of this plugin's own (sockets, logs, state).
    pub dir: PathBuf,
}

fn go_duration(d: Duration) -> String {
    format!("{}ms", d.as_millis())
}

impl NodePlugin {
    /// Starts `peer` with the flags its Helm chart passes (paths and ports
    /// aside), and waits for its sockets.
    pub async fn start(
        peer: Peer,
        paths: &PluginPaths,
        options: &NodeOptions,
    ) -> anyhow::Result<NodePlugin> {
        std::fs::create_dir_all(&paths.dir)?;
        let dir = &paths.dir;
        let csi_socket = dir.join("csi.sock");
        let providers = dir.join("providers");
        let providers_etc = dir.join("providers-etc");
        std::fs::create_dir_all(&providers)?;
        std::fs::create_dir_all(&providers_etc)?;
        let mut daemons = Vec::new();
        let mut admin_socket = None;
        match peer {
            Peer::Upstream | Peer::UpstreamWithOurs => {
                // The provider first: its DaemonSet starts independently, and
                // the driver dials the socket at the first mount.
                let provider_socket = providers.join("azure.sock");
                let mut provider = match peer {
                    Peer::Upstream => {
                        // provider-azure-installer.yaml of the Azure chart.
                        let mut cmd = Command::new(paths.peers_bin.join(AZURE_BIN));
                        cmd.arg(format!("--endpoint=unix://{}", provider_socket.display()))
                            .args([
                                "--construct-pem-chain=true",
                                "--healthz-port=8989",
                                "--healthz-path=/healthz",
                                "--healthz-timeout=5s",
                            ])
                            .env("SSL_CERT_FILE", &paths.ca);
                        Daemon::spawn("upstream Azure provider", cmd, &dir.join("provider.log"))?
                    }
                    _ => {
                        let mut cmd = Command::new(&paths.secretfs);
                        cmd.arg("provider")
                            .arg(format!("--endpoint=unix://{}", provider_socket.display()))
                            .arg(format!("--nodeid={}", options.node))
                            .arg("--azure-ca-file")
                            .arg(&paths.ca)
                            .env("SECRETFS_LOG", "info")
                            .env("NO_COLOR", "1");
                        if let Some(age) = options.provider_cache_max_age {
                            cmd.arg(format!("--cache-max-age={}", go_duration(age)));
                        }
                        Daemon::spawn("secretfs provider", cmd, &dir.join("provider.log"))?
                    }
                };
                provider
                    .wait_for(&provider_socket, Duration::from_secs(30))
                    .await?;
                // secrets-store-csi-driver.yaml of the driver's chart.
                let mut cmd = Command::new(paths.peers_bin.join(DRIVER_BIN));
                cmd.arg(format!("--endpoint=unix://{}", csi_socket.display()))
                    .arg(format!("--nodeid={}", options.node))
                    .arg(format!("--provider-volume={}", providers.display()))
                    .arg(format!(
                        "--additional-provider-volume-paths={}",
                        providers_etc.display()
                    ))
                    .arg(format!("--metrics-addr=:{}", options.metrics_port))
                    .arg("--max-call-recv-msg-size=4194304")
                    .env("KUBECONFIG", &paths.kubeconfig)
                    .env("SSL_CERT_FILE", &paths.ca);
                if let Some(interval) = options.rotation {
                    cmd.arg("--enable-secret-rotation=true").arg(format!(
                        "--rotation-poll-interval={}",
                        go_duration(interval)
                    ));
                }
                let mut driver = Daemon::spawn("upstream driver", cmd, &dir.join("driver.log"))?;
                driver
                    .wait_for(&csi_socket, Duration::from_secs(60))
                    .await?;
                daemons.push(driver);
                // Upstream writes Secrets when its RBAC allows it (chart:
                // syncSecret.enabled); the kubeconfig here is an admin's.
                daemons.push(provider);
            }
            Peer::Secretfs => {
                // daemonset.yaml and keeper-daemonset.yaml of charts/secretfs.
                let keeper_socket = dir.join("keeper.sock");
                let mut cmd = Command::new(&paths.secretfs);
                cmd.arg("keeper")
                    .arg(format!("--socket={}", keeper_socket.display()))
                    .env("SECRETFS_LOG", "info")
                    .env("NO_COLOR", "1");
                let mut keeper = Daemon::spawn("secretfs keeper", cmd, &dir.join("keeper.log"))?;
                keeper
                    .wait_for(&keeper_socket, Duration::from_secs(30))
                    .await?;
                let admin = dir.join("admin.sock");
                let state = dir.join("state");
                let interval = options.rotation;
                let mut cmd = Command::new(&paths.secretfs);
                cmd.arg("node")
                    .arg(format!("--endpoint=unix://{}", csi_socket.display()))
                    .arg(format!("--nodeid={}", options.node))
                    .arg(format!("--drivername={DRIVER_NAME}"))
                    .arg(format!("--metrics-addr=:{}", options.metrics_port))
                    .arg(format!("--enable-secret-rotation={}", interval.is_some()))
                    .arg(format!(
                        "--rotation-poll-interval={}",
                        go_duration(interval.unwrap_or(Duration::from_secs(120)))
                    ))
                    .arg("--read-mode=page-cache")
                    .arg(format!("--sync-secrets={}", options.sync_secrets))
                    .arg(format!("--admin-socket={}", admin.display()))
                    .arg(format!("--provider-volume={}", providers.display()))
                    .arg(format!(
                        "--additional-provider-volume-paths={}",
                        providers_etc.display()
                    ))
                    .arg(format!("--state-dir={}", state.display()))
                    .arg(format!("--keeper-socket={}", keeper_socket.display()))
                    .arg("--azure-ca-file")
                    .arg(&paths.ca)
                    .env("KUBECONFIG", &paths.kubeconfig)
                    .env("SECRETFS_LOG", "info")
                    .env("NO_COLOR", "1");
                let mut node = Daemon::spawn("secretfs node", cmd, &dir.join("node.log"))?;
                node.wait_for(&csi_socket, Duration::from_secs(60)).await?;
                daemons.push(node);
                daemons.push(keeper);
                admin_socket = Some(admin);
            }
        }
        Ok(NodePlugin {
            peer,
            csi_socket,
            daemons,
            admin_socket,
        })
    }

    /// The summed resident memory of the node plugin and its provider or
    /// keeper, in KiB.
    pub fn rss_kib(&self) -> u64 {
        self.daemons.iter().map(Daemon::rss_kib).sum()
    }

    /// An error naming the first process that has exited.
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        for daemon in &mut self.daemons {
            daemon.check_alive()?;
        }
        Ok(())
    }
}

/// The real control plane, as the drivers see it.
#[derive(Clone)]
pub struct Cluster {
    pub client: kube::Client,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster").finish_non_exhaustive()
    }
}

/// The SecretProviderClassPodStatus resource.
pub fn status_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(
            "secrets-store.csi.x-k8s.io",
            "v1",
            "SecretProviderClassPodStatus",
        ),
        "secretproviderclasspodstatuses",
    )
}

impl Cluster {
    /// Connects with the admin kubeconfig at `path`.
    pub async fn connect(path: &Path) -> anyhow::Result<Cluster> {
        let config = kube::Config::from_custom_kubeconfig(
            kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("reading {}", path.display()))?,
            &kube::config::KubeConfigOptions::default(),
        )
        .await?;
        Ok(Cluster {
            client: kube::Client::try_from(config)?,
        })
    }

    /// Creates the Node object `name` (pods bound to a node that does not
    /// exist are deleted by the pod garbage collector). No kubelet runs:
    /// pods bound to it tolerate the taints the node lifecycle controller
    /// puts on a node that never reports ([`Cluster::create_pod`]).
    pub async fn ensure_node(&self, name: &str) -> anyhow::Result<()> {
        let nodes = kube::Api::<Node>::all(self.client.clone());
        if nodes.get_opt(name).await?.is_none() {
            nodes
                .create(
                    &PostParams::default(),
                    &serde_json::from_value(json!({"metadata": {"name": name}}))?,
                )
                .await
                .with_context(|| format!("creating Node {name}"))?;
        }
        Ok(())
    }

    /// Creates namespace `name` and waits for its default service account
    /// (pods are admitted only then).
    pub async fn namespace(&self, name: &str) -> anyhow::Result<()> {
        kube::Api::<Namespace>::all(self.client.clone())
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({"metadata": {"name": name}}))?,
            )
            .await
            .with_context(|| format!("creating namespace {name}"))?;
        let accounts = kube::Api::<k8s_openapi::api::core::v1::ServiceAccount>::namespaced(
            self.client.clone(),
            name,
        );
        let deadline = Instant::now() + Duration::from_secs(60);
        while accounts.get_opt("default").await?.is_none() {
            if Instant::now() > deadline {
                bail!("namespace {name} has no default service account after 60 s");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(())
    }

    /// Applies a manifest (YAML) into `namespace`, server-side.
    pub async fn apply(&self, namespace: &str, manifest: &str) -> anyhow::Result<()> {
        let mut object: Value = serde_yaml::from_str(manifest)?;
        object["metadata"]["namespace"] = json!(namespace);
        let api_version = object["apiVersion"].as_str().unwrap_or_default().to_owned();
        let (group, version) = api_version
            .split_once('/')
            .map(|(g, v)| (g.to_owned(), v.to_owned()))
            .unwrap_or((String::new(), api_version.clone()));
        let kind = object["kind"].as_str().unwrap_or_default().to_owned();
        let plural = format!("{}s", kind.to_lowercase())
            .replace("classs", "classes")
            .replace("statuss", "statuses");
        let resource = ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk(&group, &version, &kind),
            &plural,
        );
        let name = object["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        kube::Api::<DynamicObject>::namespaced_with(self.client.clone(), namespace, &resource)
            .patch(
                &name,
                &PatchParams::apply("secretfs-peers").force(),
                &Patch::Apply(&object),
            )
            .await
            .with_context(|| format!("applying {kind} {namespace}/{name}"))?;
        Ok(())
    }

    /// Creates pod `name` from `pod` in `namespace`, bound to `node`
    /// (`spec.nodeName`, which the upstream driver's pod cache filters on)
    /// and tolerating every taint (no kubelet ever reports for the node);
    /// returns it with the uid the API server gave it.
    pub async fn create_pod(
        &self,
        namespace: &str,
        pod: &Pod,
        name: &str,
        node: &str,
    ) -> anyhow::Result<Pod> {
        let mut value = serde_json::to_value(pod)?;
        value["metadata"] = json!({"name": name, "namespace": namespace});
        value["spec"]["nodeName"] = json!(node);
        value["spec"]["tolerations"] = json!([{"operator": "Exists"}]);
        kube::Api::<Pod>::namespaced(self.client.clone(), namespace)
            .create(&PostParams::default(), &serde_json::from_value(value)?)
            .await
            .with_context(|| format!("creating pod {namespace}/{name}"))
    }

    /// Deletes a pod at once (no kubelet would confirm a graceful one).
    pub async fn delete_pod(&self, namespace: &str, name: &str) -> anyhow::Result<()> {
        kube::Api::<Pod>::namespaced(self.client.clone(), namespace)
            .delete(name, &DeleteParams::default().grace_period(0))
            .await?;
        Ok(())
    }

    /// A Secret's data, if it exists.
    pub async fn secret_data(
        &self,
        namespace: &str,
        name: &str,
    ) -> anyhow::Result<Option<(String, BTreeMap<String, Vec<u8>>)>> {
        let secret = kube::Api::<Secret>::namespaced(self.client.clone(), namespace)
            .get_opt(name)
            .await?;
        Ok(secret.map(|s| {
            (
                s.type_.unwrap_or_default(),
                s.data
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k, v.0))
                    .collect(),
            )
        }))
    }

    /// `status.objects` of the pod status object of `pod` and `class`, as
    /// (id, version) pairs; `None` if there is none.
    pub async fn status_objects(
        &self,
        namespace: &str,
        pod: &str,
        class: &str,
    ) -> anyhow::Result<Option<Vec<(String, String)>>> {
        let name = format!("{pod}-{namespace}-{class}");
        let status = kube::Api::<DynamicObject>::namespaced_with(
            self.client.clone(),
            namespace,
            &status_resource(),
        )
        .get_opt(&name)
        .await?;
        Ok(status.map(|s| {
            s.data["status"]["objects"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|o| {
                    (
                        o["id"].as_str().unwrap_or_default().to_owned(),
                        o["version"].as_str().unwrap_or_default().to_owned(),
                    )
                })
                .collect()
        }))
    }
}

/// A volume's files as a pod sees them: relative path → (mode bits, bytes).
/// Follows symlinks (the upstream atomic writer's `..data` links) and skips
/// names starting with `..`, as upstream's own reader of a mount does.
pub fn read_volume(target: &Path) -> anyhow::Result<BTreeMap<String, (u32, Vec<u8>)>> {
    fn walk(
        root: &Path,
        dir: &Path,
        out: &mut BTreeMap<String, (u32, Vec<u8>)>,
    ) -> anyhow::Result<()> {
        for entry in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
            let entry = entry?;
            let name = entry.file_name();
            if name.to_string_lossy().starts_with("..") {
                continue;
            }
            let path = entry.path();
            let meta = std::fs::metadata(&path)?;
            if meta.is_dir() {
                walk(root, &path, out)?;
            } else {
                use std::os::unix::fs::PermissionsExt as _;
                let rel = path.strip_prefix(root)?.to_string_lossy().into_owned();
                let bytes =
                    std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
                out.insert(rel, (meta.permissions().mode() & 0o7777, bytes));
            }
        }
        Ok(())
    }
    let mut out = BTreeMap::new();
    walk(target, target, &mut out)?;
    Ok(out)
}
