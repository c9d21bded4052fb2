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
    child: Child,
    _dir: tempfile::TempDir,
}

impl Env {
    /// Starts everything with the seed class plus `classes` (YAML).
    pub async fn start(classes: &[String]) -> Env {
        Self::start_with(classes, None).await
    }

    /// With `kubeconfig`, the node reads classes from (and syncs to) that
    /// API server instead of a directory.
    pub async fn start_with(classes: &[String], kubeconfig: Option<&Path>) -> Env {
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
        let mut command = Command::new(env!("CARGO_BIN_EXE_secretfs"));
        command.arg("node");
        match kubeconfig {
            Some(path) => {
                command.env("KUBECONFIG", path);
            }
            None => {
                command.arg("--spc-dir").arg(&class_dir);
            }
        }
        let child = command
            .arg(format!("--metrics-addr={metrics_addr}"))
            .arg("--admin-socket")
            .arg(dir.path().join("admin.sock"))
            .arg(format!("--endpoint=unix://{}", socket.display()))
            .args(["--nodeid", "e2e-node"])
            .arg("--azure-ca-file")
            .arg(emulator.ca_path())
            .arg(format!("--azure-resolve=*.vault.azure.net={addr}"))
            .arg(format!("--azure-resolve=login.microsoftonline.com={addr}"))
            .arg(format!("--azure-vault-port={}", addr.port()))
            .arg(format!(
                "--azure-authority-host={}",
                emulator.authority_url()
            ))
            .arg(format!("--azure-imds-endpoint={}", emulator.imds_url()))
            .arg(format!("--azure-nmi-endpoint={}", emulator.imds_url()))
            .env("SECRETFS_LOG", "secretfs=debug,warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while !socket.exists() {
            assert!(
                Instant::now() < deadline,
                "the node plugin did not create its socket"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // The metrics listener starts beside the CSI socket: wait for it
        // too, so tests that read /readyz never race its bind.
        while std::net::TcpStream::connect(metrics_addr).is_err() {
            assert!(
                Instant::now() < deadline,
                "the node plugin did not serve {metrics_addr}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let kubelet = Kubelet::connect(&socket, &root).await.unwrap();
        Env {
            emulator,
            kubelet,
            root,
            metrics_addr,
            admin_socket: dir.path().join("admin.sock"),
            child,
            _dir: dir,
        }
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
