//! Starts the emulator and the real binary; builds pods and classes.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Pod, PodSecurityContext};
use secretfs_e2e::kubelet::{Kubelet, parse_pod};
use secretfs_e2e::{Emulator, EmulatorConfig, EmulatorHandle, Seed};

pub const SEED_CLASS: &str = include_str!("../fixtures/seed/secretproviderclass.yaml");
pub const SEED_POD: &str = include_str!("../fixtures/seed/pod.yaml");
pub const VOLUME: &str = "secrets-store-inline";

pub use secretfs_e2e::prereq::fuse_available;

/// The emulator, the node binary and a kubelet stand-in.
pub struct Env {
    pub emulator: EmulatorHandle,
    pub kubelet: Kubelet,
    pub root: PathBuf,
    /// Where the node serves /metrics, /healthz and /readyz.
    pub metrics_addr: std::net::SocketAddr,
    /// The node's admin socket (`secretfs status`, `secretfs refresh`).
    pub admin_socket: PathBuf,
    /// The node's state directory (restart survival).
    pub state_dir: PathBuf,
    socket: PathBuf,
    args: Vec<std::ffi::OsString>,
    envs: Vec<(String, std::ffi::OsString)>,
    child: Child,
    /// `secretfs keeper`, when volumes survive restarts.
    keeper: Option<Child>,
    _dir: tempfile::TempDir,
}

/// How the node plugin is stopped before a restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// SIGTERM: a graceful hand-over.
    Term,
    /// SIGKILL: a crash.
    Kill,
}

impl Env {
    /// Starts everything with the seed class plus `classes` (YAML).
    pub async fn start(classes: &[String]) -> Env {
        Self::start_with(classes, None).await
    }

    /// With `kubeconfig`, the node reads classes from (and syncs to) that
    /// API server instead of a directory.
    pub async fn start_with(classes: &[String], kubeconfig: Option<&Path>) -> Env {
        Self::start_full(classes, kubeconfig, false).await
    }

    /// With a state directory and, if `keeper`, a `secretfs keeper`, so
    /// volumes survive [`Env::restart`].
    pub async fn start_surviving(keeper: bool) -> Env {
        Self::start_full(&[], None, true)
            .await
            .with_keeper(keeper)
            .await
    }

    async fn start_full(classes: &[String], kubeconfig: Option<&Path>, state: bool) -> Env {
        let emulator = Emulator::start(EmulatorConfig::with_seed(Seed::demo()))
            .await
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let class_dir = dir.path().join("classes");
        std::fs::create_dir_all(&class_dir).unwrap();
        std::fs::write(class_dir.join("seed.yaml"), SEED_CLASS).unwrap();
        for (i, class) in classes.iter().enumerate() {
            std::fs::write(class_dir.join(format!("class-{i}.yaml")), class).unwrap();
        }
        let root = dir.path().join("kubelet");
        let socket = dir.path().join("csi.sock");
        let addr = emulator.https_addr();
        let metrics_addr = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let mut args: Vec<std::ffi::OsString> = vec!["node".into()];
        let mut envs = vec![("SECRETFS_LOG".to_owned(), "secretfs=debug,warn".into())];
        match kubeconfig {
            Some(path) => envs.push(("KUBECONFIG".into(), path.into())),
            None => {
                args.push("--spc-dir".into());
                args.push(class_dir.into());
            }
        }
        let state_dir = dir.path().join("state");
        if state {
            args.push("--state-dir".into());
            args.push(state_dir.clone().into());
        }
        args.extend(
            [
                format!("--metrics-addr={metrics_addr}"),
                format!("--admin-socket={}", dir.path().join("admin.sock").display()),
                format!("--endpoint=unix://{}", socket.display()),
                "--nodeid=e2e-node".into(),
                format!("--azure-ca-file={}", emulator.ca_path().display()),
                format!("--azure-resolve=*.vault.azure.net={addr}"),
                format!("--azure-resolve=login.microsoftonline.com={addr}"),
                format!("--azure-vault-port={}", addr.port()),
                format!("--azure-authority-host={}", emulator.authority_url()),
                format!("--azure-imds-endpoint={}", emulator.imds_url()),
                format!("--azure-nmi-endpoint={}", emulator.imds_url()),
            ]
            .map(Into::into),
        );
        let child = spawn(Path::new(env!("CARGO_BIN_EXE_secretfs")), &args, &envs);
        wait_until_serving(&socket, metrics_addr).await;
        let kubelet = Kubelet::connect(&socket, &root).await.unwrap();
        Env {
            emulator,
            kubelet,
            root,
            metrics_addr,
            admin_socket: dir.path().join("admin.sock"),
            state_dir,
            socket,
            args,
            envs,
            child,
            keeper: None,
            _dir: dir,
        }
    }

    /// Starts a keeper and restarts the node with it.
    async fn with_keeper(mut self, keeper: bool) -> Env {
        if !keeper {
            return self;
        }
        let socket = self.start_keeper().await;
        self.args
            .push(format!("--keeper-socket={}", socket.display()).into());
        self.restart(Stop::Term, None).await;
        self
    }

    async fn start_keeper(&mut self) -> PathBuf {
        let socket = self._dir.path().join("keeper.sock");
        let _ = std::fs::remove_file(&socket);
        self.keeper = Some(
            Command::new(env!("CARGO_BIN_EXE_secretfs"))
                .arg("keeper")
                .arg("--socket")
                .arg(&socket)
                .env("SECRETFS_LOG", "secretfs=debug,warn")
                .stdout(Stdio::null())
                .stderr(Stdio::inherit())
                .spawn()
                .unwrap(),
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::os::unix::net::UnixStream::connect(&socket).is_err() {
            assert!(Instant::now() < deadline, "the keeper did not start");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        socket
    }

    /// Kills the keeper (SIGKILL) and starts a new one.
    pub async fn restart_keeper(&mut self) {
        if let Some(mut keeper) = self.keeper.take() {
            let _ = keeper.kill();
            let _ = keeper.wait();
        }
        self.start_keeper().await;
    }

    /// Stops the node plugin (`how`) and starts it again, from `binary`
    /// (an upgrade) or the same one; waits until it serves.
    pub async fn restart(&mut self, how: Stop, binary: Option<&Path>) {
        let signal = match how {
            Stop::Term => rustix::process::Signal::TERM,
            Stop::Kill => rustix::process::Signal::KILL,
        };
        rustix::process::kill_process(rustix::process::Pid::from_child(&self.child), signal)
            .unwrap();
        let child = &mut self.child;
        let status = tokio::task::block_in_place(|| child.wait()).unwrap();
        if how == Stop::Term {
            assert!(
                status.success(),
                "the node plugin stopped cleanly: {status}"
            );
        }
        // A CSI socket left by a killed process is replaced at start.
        let _ = std::fs::remove_file(&self.socket);
        let binary = binary.unwrap_or(Path::new(env!("CARGO_BIN_EXE_secretfs")));
        self.child = spawn(binary, &self.args, &self.envs);
        wait_until_serving(&self.socket, self.metrics_addr).await;
        self.kubelet = Kubelet::connect(&self.socket, &self.root).await.unwrap();
    }
}

fn spawn(
    binary: &Path,
    args: &[std::ffi::OsString],
    envs: &[(String, std::ffi::OsString)],
) -> Child {
    Command::new(binary)
        .args(args)
        .envs(envs.iter().map(|(k, v)| (k, v)))
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap()
}

async fn wait_until_serving(socket: &Path, metrics_addr: std::net::SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !socket.exists() {
        assert!(
            Instant::now() < deadline,
            "the node plugin did not create its socket"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The metrics listener starts beside the CSI socket: wait for it too,
    // so tests that read /readyz never race its bind.
    while std::net::TcpStream::connect(metrics_addr).is_err() {
        assert!(
            Instant::now() < deadline,
            "the node plugin did not serve {metrics_addr}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

impl Env {
    /// Runs `secretfs <args> --admin-socket <this node's>`: (success, stdout).
    pub fn admin(&self, args: &[&str]) -> (bool, String) {
        let out = Command::new(env!("CARGO_BIN_EXE_secretfs"))
            .args(args)
            .arg("--admin-socket")
            .arg(&self.admin_socket)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// GET `path` on the metrics address: (status, body).
    pub fn http_get(&self, path: &str) -> (u16, String) {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(self.metrics_addr).unwrap();
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: node\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        let status = response
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let body = response
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default();
        (status, body)
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        let _ = rustix::process::kill_process(
            rustix::process::Pid::from_child(&self.child),
            rustix::process::Signal::TERM,
        );
        let _ = self.child.wait();
        if let Some(keeper) = &mut self.keeper {
            let _ = rustix::process::kill_process(
                rustix::process::Pid::from_child(keeper),
                rustix::process::Signal::TERM,
            );
            let _ = keeper.wait();
        }
        // Volumes a test left behind: never leave mounts in a temp dir.
        let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
        let ours = self._dir.path().to_string_lossy().into_owned();
        for point in mounts.lines().filter_map(|l| l.split(' ').nth(1)) {
            if point.starts_with(&ours) {
                let _ = rustix::mount::unmount(point, rustix::mount::UnmountFlags::DETACH);
            }
        }
    }
}

/// The seed pod with `uid`, optionally another class, service account and
/// fsGroup.
pub fn pod(
    uid: &str,
    class: Option<&str>,
    service_account: Option<&str>,
    fs_group: Option<i64>,
) -> Pod {
    let mut pod = parse_pod(SEED_POD).unwrap();
    pod.metadata.uid = Some(uid.to_owned());
    pod.metadata.name = Some(format!("pod-{uid}"));
    let spec = pod.spec.as_mut().unwrap();
    if let Some(class) = class {
        let csi = spec.volumes.as_mut().unwrap()[0].csi.as_mut().unwrap();
        csi.volume_attributes
            .as_mut()
            .unwrap()
            .insert("secretProviderClass".into(), class.into());
    }
    spec.service_account_name = service_account.map(str::to_owned);
    if let Some(group) = fs_group {
        spec.security_context = Some(PodSecurityContext {
            fs_group: Some(group),
            ..Default::default()
        });
    }
    pod
}

/// A v1 SecretProviderClass in `default` for provider `azure` on kv-demo.
pub fn azure_class(name: &str, extra: &[(&str, &str)], objects: &str) -> String {
    let mut params = format!(
        "    keyvaultName: kv-demo\n    tenantId: 9c0d2e7b-1a3f-4b6c-8d5e-7f1a2b3c4d5e\n    objects: |\n{}\n",
        objects
            .lines()
            .map(|l| format!("      {l}"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    for (k, v) in extra {
        params.push_str(&format!("    {k}: {v:?}\n"));
    }
    format!(
        "apiVersion: secrets-store.csi.x-k8s.io/v1\nkind: SecretProviderClass\nmetadata:\n  name: {name}\n  namespace: default\nspec:\n  provider: azure\n  parameters:\n{params}"
    )
}

/// The `objects` string for one secret.
pub fn one_secret(name: &str, alias: &str) -> String {
    format!(
        "array:\n  - |\n    objectName: {name}\n    objectAlias: {alias}\n    objectType: secret\n"
    )
}

pub fn is_mounted(target: &Path) -> bool {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
    mounts
        .lines()
        .any(|l| l.split(' ').nth(1) == Some(target.to_str().unwrap()))
}
