//! Starts the emulator and the real binary; builds pods and classes.
//!
//! Secrets never leak: every process runs at `SECRETFS_LOG=trace` (all
//! crates) with its output in a log file, and when the [`Env`] drops (or
//! [`Env::assert_no_leaks`] is called) no secret value, token or client
//! secret may appear in those logs, in the last `/metrics` and `status
//! --json`, in any admin output or HTTP body the test read, in any error
//! the kubelet stand-in got, or in what the node wrote to the API server
//! (Events, pod statuses, annotations; only a Secret's `data` may hold
//! values). `SECRETFS_E2E_INHERIT_LOGS=1` logs to the terminal instead, as
//! before (`secretfs=debug,warn`), and skips the log scan.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Pod, PodSecurityContext};
use secretfs_e2e::fake_apiserver::FakeApiServer;
use secretfs_e2e::kubelet::{Kubelet, parse_pod};
use secretfs_e2e::secrets_seen::{Leak, LeakScanner, SecretKind, SeenSecret};
use secretfs_e2e::{Emulator, EmulatorConfig, EmulatorHandle, Seed};

pub const SEED_CLASS: &str = include_str!("../../fixtures/seed/secretproviderclass.yaml");
pub const SEED_POD: &str = include_str!("../../fixtures/seed/pod.yaml");
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
    /// What the leak check reads.
    leaks: LeakCheck,
    _dir: tempfile::TempDir,
}

/// Where logs go, and what else the leak check scans.
#[derive(Debug)]
struct LeakCheck {
    /// The node's and the keeper's output, unless inherited.
    logs: Option<[PathBuf; 2]>,
    /// The API server of the kubeconfig, and its token.
    api_url: Option<String>,
    api_token: Option<String>,
    /// (source, text) read by the test: admin outputs, HTTP bodies.
    outputs: Mutex<Vec<(String, String)>>,
    /// Secrets the test named.
    forbidden: Mutex<Vec<SeenSecret>>,
    /// Kubelets of earlier node processes (errors they got, tokens sent).
    kubelets: Vec<Kubelet>,
}

/// Logs to files (false: to the terminal, `SECRETFS_E2E_INHERIT_LOGS=1`).
fn logs_to_files() -> bool {
    std::env::var_os("SECRETFS_E2E_INHERIT_LOGS").is_none_or(|v| v != "1")
}

/// The log filter of every process the harness starts: everything, so a
/// dependency that logs a header or a body is caught too.
pub fn log_filter() -> &'static str {
    if logs_to_files() {
        "trace"
    } else {
        "secretfs=debug,warn"
    }
}

/// The environment of every process the harness starts: [`log_filter`],
/// and no colours in log files.
pub fn log_envs() -> Vec<(&'static str, &'static str)> {
    let mut envs = vec![("SECRETFS_LOG", log_filter())];
    if logs_to_files() {
        envs.push(("NO_COLOR", "1"));
    }
    envs
}

/// Where a child's stdout and stderr go: appended to `log`, or inherited.
pub fn log_output(log: &Path) -> (Stdio, Stdio) {
    if !logs_to_files() {
        return (Stdio::null(), Stdio::inherit());
    }
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    (file.try_clone().unwrap().into(), file.into())
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
        Self::start_full(classes, kubeconfig, false, &[]).await
    }

    /// With a state directory and, if `keeper`, a `secretfs keeper`, so
    /// volumes survive [`Env::restart`].
    pub async fn start_surviving(keeper: bool) -> Env {
        Self::start_full(&[], None, true, &[])
            .await
            .with_keeper(keeper)
            .await
    }

    /// Classes from (and sync to) the API server of `kubeconfig`, with a
    /// state directory and a keeper (volumes survive [`Env::restart`]), and
    /// `extra` flags for the node.
    pub async fn start_surviving_with(kubeconfig: &Path, extra: &[&str]) -> Env {
        Self::start_full(&[], Some(kubeconfig), true, extra)
            .await
            .with_keeper(true)
            .await
    }

    async fn start_full(
        classes: &[String],
        kubeconfig: Option<&Path>,
        state: bool,
        extra: &[&str],
    ) -> Env {
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
        let mut envs: Vec<(String, std::ffi::OsString)> = log_envs()
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.into()))
            .collect();
        let (api_url, api_token) = kubeconfig.map(kubeconfig_server).unwrap_or_default();
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
        args.extend(extra.iter().map(Into::into));
        let leaks = LeakCheck {
            logs: logs_to_files()
                .then(|| [dir.path().join("node.log"), dir.path().join("keeper.log")]),
            api_url,
            api_token,
            outputs: Mutex::default(),
            forbidden: Mutex::default(),
            kubelets: Vec::new(),
        };
        let child = spawn(
            Path::new(env!("CARGO_BIN_EXE_secretfs")),
            &args,
            &envs,
            &dir.path().join("node.log"),
        );
        if let Err(e) = wait_until_serving(&socket, metrics_addr).await {
            print_log_tails(
                leaks.logs.iter().flatten(),
                &LeakScanner::new(&emulator.secrets_seen()),
            );
            panic!("{e}");
        }
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
            leaks,
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
        let (stdout, stderr) = log_output(&self._dir.path().join("keeper.log"));
        self.keeper = Some(
            Command::new(env!("CARGO_BIN_EXE_secretfs"))
                .arg("keeper")
                .arg("--socket")
                .arg(&socket)
                .envs(log_envs())
                .stdout(stdout)
                .stderr(stderr)
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
            // A clean stop leaves no socket behind.
            assert!(
                !self.socket.exists(),
                "the CSI socket is removed on SIGTERM"
            );
            assert!(
                !self.admin_socket.exists(),
                "the admin socket is removed on SIGTERM"
            );
        }
        // Sockets left by a killed process stay: the start replaces them.
        let binary = binary.unwrap_or(Path::new(env!("CARGO_BIN_EXE_secretfs")));
        self.child = spawn(
            binary,
            &self.args,
            &self.envs,
            &self._dir.path().join("node.log"),
        );
        if let Err(e) = wait_until_serving(&self.socket, self.metrics_addr).await {
            print_log_tails(self.leaks.logs.iter().flatten(), &self.scanner());
            panic!("{e}");
        }
        let kubelet = Kubelet::connect(&self.socket, &self.root).await.unwrap();
        let old = std::mem::replace(&mut self.kubelet, kubelet);
        self.leaks.kubelets.push(old);
    }
}

fn spawn(
    binary: &Path,
    args: &[std::ffi::OsString],
    envs: &[(String, std::ffi::OsString)],
    log: &Path,
) -> Child {
    let (stdout, stderr) = log_output(log);
    Command::new(binary)
        .args(args)
        .envs(envs.iter().map(|(k, v)| (k, v)))
        .stdout(stdout)
        .stderr(stderr)
        .spawn()
        .unwrap()
}

async fn wait_until_serving(
    socket: &Path,
    metrics_addr: std::net::SocketAddr,
) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    // Connected, not only there: a killed process's socket is still there
    // until the new one replaces it.
    while std::os::unix::net::UnixStream::connect(socket).is_err() {
        if Instant::now() >= deadline {
            return Err("the node plugin did not serve its socket".into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The metrics listener starts beside the CSI socket: wait for it too,
    // so tests that read /readyz never race its bind.
    while std::net::TcpStream::connect(metrics_addr).is_err() {
        if Instant::now() >= deadline {
            return Err(format!("the node plugin did not serve {metrics_addr}"));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// The `server` and the user `token` of a kubeconfig.
fn kubeconfig_server(path: &Path) -> (Option<String>, Option<String>) {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let value = |key: &str| {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(key))
            .map(|v| v.trim().trim_matches('"').to_owned())
    };
    (value("server:"), value("token:"))
}

/// GET `path` from `addr` over HTTP/1.1: (status, body); `None` if
/// nothing answers.
fn try_http_get(addr: &str, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).ok()?;
    let response = String::from_utf8_lossy(&response).into_owned();
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Some((status, body))
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
        let output = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        self.saw(format!("secretfs {}", args.join(" ")), &output);
        (out.status.success(), output)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// GET `path` on the metrics address: (status, body).
    pub fn http_get(&self, path: &str) -> (u16, String) {
        let (status, body) = try_http_get(&self.metrics_addr.to_string(), path)
            .unwrap_or_else(|| panic!("nothing serves {}", self.metrics_addr));
        self.saw(format!("GET {path}"), &body);
        (status, body)
    }

    /// Remembers a text the test read, for the leak check.
    fn saw(&self, source: String, text: &str) {
        lock(&self.leaks.outputs).push((source, text.to_owned()));
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Leak checks (see the module documentation).
impl Env {
    /// The node's log file (none when inherited).
    pub fn node_log(&self) -> Option<&Path> {
        self.leaks.logs.as_ref().map(|[node, _]| node.as_path())
    }

    /// Forbids `value` too (a credential the test made up).
    pub fn forbid(&self, value: &str) {
        lock(&self.leaks.forbidden).push(SeenSecret::new(SecretKind::Credential, value));
    }

    /// Every secret that must not leak: the emulator's (values, tokens,
    /// client secrets), what the kubelet stand-in sent, the API server's
    /// token and the test's own.
    pub fn forbidden(&self) -> Vec<SeenSecret> {
        let mut all = self.emulator.secrets_seen();
        for kubelet in self.leaks.kubelets.iter().chain([&self.kubelet]) {
            all.extend(kubelet.credentials_sent());
        }
        if let Some(token) = &self.leaks.api_token {
            all.push(SeenSecret::new(SecretKind::Credential, token));
        }
        all.extend(lock(&self.leaks.forbidden).iter().cloned());
        all
    }

    fn scanner(&self) -> LeakScanner {
        LeakScanner::new(&self.forbidden())
    }

    /// Panics, listing them masked, if any secret appears in what the leak
    /// check reads; the node's `/metrics` and `status --json` are read now.
    pub fn assert_no_leaks(&self) {
        let now = self.final_outputs();
        let leaks = self.find_leaks(&now);
        if !leaks.is_empty() {
            panic!("{}", report(&leaks));
        }
    }

    /// The node's `/metrics` and `status --json` now, if it answers (what
    /// the leak check reads last).
    pub fn final_outputs(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        if let Some((_, body)) = try_http_get(&self.metrics_addr.to_string(), "/metrics") {
            out.push(("GET /metrics (last)".to_owned(), body));
        }
        if let Ok(status) = Command::new(env!("CARGO_BIN_EXE_secretfs"))
            .args(["status", "--json", "--admin-socket"])
            .arg(&self.admin_socket)
            .output()
        {
            out.push((
                "secretfs status --json (last)".to_owned(),
                String::from_utf8_lossy(&status.stdout).into_owned()
                    + &String::from_utf8_lossy(&status.stderr),
            ));
        }
        out
    }

    /// Every line holding a secret, in everything scanned (plus `extra`).
    pub fn find_leaks(&self, extra: &[(String, String)]) -> Vec<Leak> {
        let scanner = self.scanner();
        self.scanned_texts(extra)
            .iter()
            .flat_map(|(source, text)| scanner.scan(source, text))
            .collect()
    }

    /// Everything the leak check reads, as (source, text): the logs,
    /// what the test read, the kubelet's errors, what the API server got,
    /// and `extra`.
    pub fn scanned_texts(&self, extra: &[(String, String)]) -> Vec<(String, String)> {
        let mut texts = Vec::new();
        for log in self.leaks.logs.iter().flatten() {
            if let Ok(bytes) = std::fs::read(log) {
                texts.push((
                    log.file_name()
                        .unwrap_or_default()
                        .to_string_lossy()
                        .into_owned(),
                    String::from_utf8_lossy(&bytes).into_owned(),
                ));
            }
        }
        texts.extend(lock(&self.leaks.outputs).iter().cloned());
        texts.extend(extra.iter().cloned());
        for kubelet in self.leaks.kubelets.iter().chain([&self.kubelet]) {
            for error in kubelet.errors_received() {
                texts.push(("an error the kubelet got".to_owned(), error));
            }
        }
        texts.extend(self.api_server_texts());
        texts
    }

    /// What the node wrote to the API server of its kubeconfig: every
    /// request, if it is a [`FakeApiServer`] of this process, else the
    /// objects it lists. A Secret's `data` is left out: values belong
    /// there.
    fn api_server_texts(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let Some(server) = &self.leaks.api_url else {
            return out;
        };
        if let Some(api) = FakeApiServer::find(server) {
            for request in api.requests() {
                let mut body = request.body;
                if request.path.split('/').any(|s| s == "secrets") {
                    strip_secret_data(&mut body);
                }
                out.push((
                    format!("API {} {}?{}", request.method, request.path, request.query),
                    serde_json::to_string_pretty(&body).unwrap_or_default(),
                ));
            }
            return out;
        }
        let addr = server.trim_start_matches("http://").trim_end_matches('/');
        for collection in [
            "/api/v1/events",
            "/apis/events.k8s.io/v1/events",
            "/api/v1/pods",
            "/api/v1/secrets",
            "/apis/secrets-store.csi.x-k8s.io/v1/secretproviderclasspodstatuses",
            "/apis/secrets-store.csi.x-k8s.io/v1alpha1/secretproviderclasspodstatuses",
        ] {
            let Some((200, body)) = try_http_get(addr, collection) else {
                continue;
            };
            let Ok(mut list) = serde_json::from_str::<serde_json::Value>(&body) else {
                continue;
            };
            if collection.ends_with("/secrets")
                && let Some(items) = list["items"].as_array_mut()
            {
                items.iter_mut().for_each(strip_secret_data);
            }
            out.push((
                format!("API GET {collection}"),
                serde_json::to_string_pretty(&list).unwrap_or_default(),
            ));
        }
        out
    }
}

/// A Secret without `data` (only there may values be).
fn strip_secret_data(secret: &mut serde_json::Value) {
    if let Some(object) = secret.as_object_mut() {
        object.remove("data");
    }
}

/// The leaks, for a panic message (each line is masked).
pub fn report(leaks: &[Leak]) -> String {
    let mut out = format!("{} line(s) hold a secret:\n", leaks.len());
    for leak in leaks.iter().take(40) {
        out.push_str(&format!("  {leak}\n"));
    }
    if leaks.len() > 40 {
        out.push_str(&format!("  … and {} more\n", leaks.len() - 40));
    }
    out
}

/// A log line of secretfs itself, or at INFO and above; a line that does
/// not start with a timestamp continues the previous one (`previous`:
/// whether that one was shown).
fn worth_showing(line: &str, previous: bool) -> bool {
    let mut words = line.split_whitespace();
    let timestamp = words.next().unwrap_or_default();
    if !(timestamp.len() > 20 && timestamp.starts_with("20") && timestamp.ends_with('Z')) {
        return previous;
    }
    let level = words.next().unwrap_or_default();
    !matches!(level, "TRACE" | "DEBUG") || line.contains(" secretfs")
}

/// The last lines of `logs`, masked.
fn print_log_tails<'a>(logs: impl IntoIterator<Item = &'a PathBuf>, scanner: &LeakScanner) {
    const LINES: usize = 50;
    for log in logs {
        let Ok(bytes) = std::fs::read(log) else {
            continue;
        };
        let text = String::from_utf8_lossy(&bytes);
        // At trace, the last lines are the transport's: show ours, and
        // everything at INFO and above.
        let mut show = true;
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| {
                show = worth_showing(l, show);
                show
            })
            .collect();
        let tail = &lines[lines.len().saturating_sub(LINES)..];
        eprintln!(
            "---- last {} of {} lines of {} (secretfs, or INFO and above; secrets masked) ----",
            tail.len(),
            text.lines().count(),
            log.file_name().unwrap_or_default().to_string_lossy()
        );
        for line in tail {
            let masked = scanner.mask(line);
            let cut = (0..=masked.len().min(2000))
                .rev()
                .find(|&i| masked.is_char_boundary(i))
                .unwrap_or(0);
            eprintln!("{}", &masked[..cut]);
        }
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        let failed = std::thread::panicking();
        let running = matches!(self.child.try_wait(), Ok(None));
        let last = if running && !failed {
            self.final_outputs()
        } else {
            Vec::new()
        };
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
        if failed {
            print_log_tails(self.leaks.logs.iter().flatten(), &self.scanner());
            return;
        }
        let leaks = self.find_leaks(&last);
        if !leaks.is_empty() {
            panic!("{}", report(&leaks));
        }
    }
}

/// The log of a process started outside an [`Env`] (`secretfs mount`):
/// when dropped, it must hold no secret of the emulator; after a failed test, its last lines are printed, masked.
#[derive(Debug)]
pub struct LogCheck {
    path: PathBuf,
    control: secretfs_e2e::Control,
}

impl LogCheck {
    /// Checks `path` against the secrets of `emulator`.
    pub fn new(path: PathBuf, emulator: &secretfs_e2e::Control) -> Self {
        Self {
            path,
            control: emulator.clone(),
        }
    }

    /// Where the child's stdout and stderr go (see [`log_output`]); pair
    /// with [`log_envs`].
    pub fn output(&self) -> (Stdio, Stdio) {
        log_output(&self.path)
    }

    fn scanner(&self) -> LeakScanner {
        LeakScanner::new(&self.control.secrets_seen())
    }
}

impl Drop for LogCheck {
    fn drop(&mut self) {
        if !logs_to_files() {
            return;
        }
        if std::thread::panicking() {
            print_log_tails([&self.path], &self.scanner());
            return;
        }
        let text = std::fs::read(&self.path).unwrap_or_default();
        let leaks = self.scanner().scan(
            &self.path.file_name().unwrap_or_default().to_string_lossy(),
            &String::from_utf8_lossy(&text),
        );
        if !leaks.is_empty() {
            panic!("{}", report(&leaks));
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
