//! Who reads what (opt-in): a class annotated `secretfs.io/audit: reads`
//! has its volumes mounted with an open observer (`secretfs-fuse`'s
//! `OpenObserver`), so each first open of each file version by each
//! process comes here, while the opener waits in `open(2)`.
//!
//! The reader is attributed from `/proc/<pid>`: its cgroup names the pod
//! (`pod<uid>`) and the container, its `exe` the program, its `status` the
//! uid. Only a reader whose cgroup is the volume's own pod is attributed;
//! anything else (pid 0 because the driver is not in the host PID
//! namespace, a process already gone, a cgroup of no pod or of another
//! pod) is logged with `"attributed": false` and the reason, never with a
//! guessed pod. The container's name comes from the pod's
//! `status.containerStatuses` (one GET per pod, cached).
//!
//! Each event is one JSON line on the audit stream (`--audit-log`: a file,
//! or `-` for standard output, the default; the driver's own logs go to
//! standard error, so the two never mix) and counts in
//! `secretfs_audited_reads_total{namespace, pod, file}` or
//! `secretfs_audit_unattributed_reads_total{reason}`. No line, metric or
//! status holds a byte of a file.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use secretfs_fuse::{OpenEvent, OpenObserver};

/// The class annotation's value that turns auditing on.
pub const AUDIT_READS: &str = "reads";

/// What `secretfs status`, the log and TROUBLESHOOTING.md say when the
/// driver cannot see readers' pids.
pub const PID_NOT_VISIBLE: &str = "the reader's pid is not visible to the driver: run the node DaemonSet in the host PID namespace (hostPID: true; Helm value audit.enabled)";

/// Why a read was not attributed (a bounded set: the metric's label).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unattributed {
    /// The kernel gave pid 0: the reader is in a PID namespace the driver
    /// cannot see into (the driver is not in the host's).
    PidNotVisible,
    /// `/proc/<pid>` could not be read (the process exited, or /proc is
    /// not the host's).
    ProcessGone,
    /// The reader's cgroup names no pod (a process on the host, or a
    /// container runtime's own process).
    NoPodCgroup,
    /// The reader's cgroup is another pod's: a process of that pod read
    /// through the volume's mount (a shared host path, a debug container
    /// of another pod); the volume's pod is not named as the reader.
    OtherPod { cgroup_pod_uid: String },
}

impl Unattributed {
    /// The metric label and the line's `reason_code`.
    pub fn code(&self) -> &'static str {
        match self {
            Self::PidNotVisible => "pid-not-visible",
            Self::ProcessGone => "process-gone",
            Self::NoPodCgroup => "no-pod-cgroup",
            Self::OtherPod { .. } => "other-pod",
        }
    }

    /// The line's `reason`: what happened and what to do.
    pub fn reason(&self) -> String {
        match self {
            Self::PidNotVisible => PID_NOT_VISIBLE.to_owned(),
            Self::ProcessGone => {
                "the reader's /proc entry could not be read (it exited, or the driver does not see the host's /proc)".to_owned()
            }
            Self::NoPodCgroup => "the reader's cgroup names no pod: not a container of this volume's pod".to_owned(),
            Self::OtherPod { cgroup_pod_uid } => format!(
                "the reader's cgroup belongs to pod uid {cgroup_pod_uid}, not to the volume's pod: not attributed"
            ),
        }
    }
}

/// What a process's cgroup says: the pod's uid and the container's id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CgroupIdentity {
    /// With dashes (`0f3c…-…`), as in the pod's `metadata.uid`.
    pub pod_uid: Option<String>,
    /// The container's id, without the runtime prefix.
    pub container_id: Option<String>,
    /// `containerd`, `cri-o` or `docker`, when the path says.
    pub runtime: Option<&'static str>,
}

/// Parses `/proc/<pid>/cgroup` (cgroup v1 `hierarchy:controllers:path`
/// lines and the v2 `0::path` line): the kubelet's cgroupfs layout
/// (`/kubepods/burstable/pod<uid>/<id>`) and its systemd layout
/// (`/kubepods.slice/…/kubepods-burstable-pod<uid_with_underscores>.slice/
/// cri-containerd-<id>.scope`, `crio-<id>.scope`, `docker-<id>.scope`),
/// and plain Docker (`/docker/<id>`). The first line naming a pod wins;
/// without one, the first naming a container.
pub fn parse_cgroup(text: &str) -> CgroupIdentity {
    let mut fallback = CgroupIdentity::default();
    for line in text.lines() {
        let Some(path) = line.splitn(3, ':').nth(2) else {
            continue;
        };
        let identity = parse_cgroup_path(path);
        if identity.pod_uid.is_some() {
            return identity;
        }
        if fallback.container_id.is_none() && identity.container_id.is_some() {
            fallback = identity;
        }
    }
    fallback
}

/// One cgroup path (see [`parse_cgroup`]).
pub fn parse_cgroup_path(path: &str) -> CgroupIdentity {
    let mut out = CgroupIdentity::default();
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    for (i, segment) in segments.iter().enumerate() {
        if let Some(uid) = pod_segment(segment) {
            out.pod_uid = Some(uid);
        }
        if i > 0 && segments[i - 1] == "docker" && is_container_id(segment) {
            out.container_id = Some((*segment).to_owned());
            out.runtime = Some("docker");
        } else if let Some((runtime, id)) = container_segment(segment) {
            out.container_id = Some(id.to_owned());
            out.runtime = runtime;
        }
    }
    out
}

/// `pod<uid>` (cgroupfs) or `kubepods[-<qos>]-pod<uid_>.slice` (systemd).
fn pod_segment(segment: &str) -> Option<String> {
    let uid = if let Some(slice) = segment.strip_suffix(".slice") {
        let at = slice.rfind("-pod")?;
        if !slice.starts_with("kubepods") {
            return None;
        }
        slice[at + 4..].replace('_', "-")
    } else {
        segment.strip_prefix("pod")?.to_owned()
    };
    is_uid(&uid).then_some(uid)
}

/// A UUID: 8-4-4-4-12 hex digits.
fn is_uid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// A container id: 64 lowercase hex digits (containerd, cri-o, docker).
fn is_container_id(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// `cri-containerd-<id>.scope`, `crio-<id>.scope`, `docker-<id>.scope`, or
/// a bare id (cgroupfs layout). A conmon scope (`crio-conmon-…`) is the
/// runtime's monitor, not the container.
fn container_segment(segment: &str) -> Option<(Option<&'static str>, &str)> {
    if is_container_id(segment) {
        return Some((None, segment));
    }
    let scope = segment.strip_suffix(".scope")?;
    let (runtime, id) = if let Some(id) = scope.strip_prefix("cri-containerd-") {
        ("containerd", id)
    } else if let Some(id) = scope.strip_prefix("crio-") {
        ("cri-o", id)
    } else if let Some(id) = scope.strip_prefix("docker-") {
        ("docker", id)
    } else {
        return None;
    };
    is_container_id(id).then_some((Some(runtime), id))
}

/// The real uid on the `Uid:` line of `/proc/<pid>/status`.
pub fn parse_status_uid(status: &str) -> Option<u32> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The volume a read belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditedVolume {
    pub namespace: String,
    pub pod: String,
    pub pod_uid: String,
    pub class: String,
}

/// A reader, as `/proc` shows it during its open.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Reader {
    identity: CgroupIdentity,
    exe: Option<String>,
    uid: Option<u32>,
}

fn read_process(proc_root: &Path, pid: u32) -> Option<Reader> {
    let dir = proc_root.join(pid.to_string());
    let cgroup = std::fs::read_to_string(dir.join("cgroup")).ok()?;
    Some(Reader {
        identity: parse_cgroup(&cgroup),
        exe: std::fs::read_link(dir.join("exe"))
            .ok()
            .map(|p| p.to_string_lossy().into_owned()),
        uid: std::fs::read_to_string(dir.join("status"))
            .ok()
            .and_then(|s| parse_status_uid(&s)),
    })
}

/// Whose read it is: the reader's cgroup must be the volume's own pod.
fn attribute(pid: u32, reader: Option<&Reader>, volume_pod_uid: &str) -> Result<(), Unattributed> {
    if pid == 0 {
        return Err(Unattributed::PidNotVisible);
    }
    let reader = reader.ok_or(Unattributed::ProcessGone)?;
    match &reader.identity.pod_uid {
        None => Err(Unattributed::NoPodCgroup),
        Some(uid) if uid.eq_ignore_ascii_case(volume_pod_uid) => Ok(()),
        Some(uid) => Err(Unattributed::OtherPod {
            cgroup_pod_uid: uid.clone(),
        }),
    }
}

/// Whether this process sees the host's PID namespace, judged by PID 1:
/// the host's init is in no pod's cgroup; a container's first process is.
/// `Some(problem)` when it cannot attribute.
pub fn check_pid_namespace(proc_root: &Path) -> Option<String> {
    let cgroup = std::fs::read_to_string(proc_root.join("1/cgroup")).ok()?;
    let identity = parse_cgroup(&cgroup);
    (identity.pod_uid.is_some() || identity.container_id.is_some()).then(|| {
        format!("PID 1 is a container's process, so the driver is not in the host PID namespace: {PID_NOT_VISIBLE}")
    })
}

/// Container names of a pod by container id (from its
/// `status.containerStatuses`, init and ephemeral containers included).
#[async_trait::async_trait]
pub trait ContainerNames: Send + Sync + 'static {
    async fn names(&self, namespace: &str, pod: &str) -> Result<HashMap<String, String>, String>;
}

/// [`ContainerNames`] from the Kubernetes API.
pub struct KubeContainerNames(pub kube::Client);

impl std::fmt::Debug for KubeContainerNames {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KubeContainerNames")
    }
}

#[async_trait::async_trait]
impl ContainerNames for KubeContainerNames {
    async fn names(&self, namespace: &str, pod: &str) -> Result<HashMap<String, String>, String> {
        let pods: kube::Api<k8s_openapi::api::core::v1::Pod> =
            kube::Api::namespaced(self.0.clone(), namespace);
        let pod = pods.get(pod).await.map_err(|e| e.to_string())?;
        let status = pod.status.unwrap_or_default();
        let mut out = HashMap::new();
        for s in status
            .container_statuses
            .iter()
            .flatten()
            .chain(status.init_container_statuses.iter().flatten())
            .chain(status.ephemeral_container_statuses.iter().flatten())
        {
            if let Some(id) = &s.container_id {
                let bare = id.split_once("://").map_or(id.as_str(), |(_, id)| id);
                out.insert(bare.to_owned(), s.name.clone());
            }
        }
        Ok(out)
    }
}

/// Where audit lines go.
#[derive(Debug)]
pub enum AuditSink {
    Stdout,
    File(std::fs::File),
    /// Kept in memory (tests).
    Memory(Arc<Mutex<Vec<u8>>>),
}

impl AuditSink {
    /// `-`: standard output; else a file, created 0600 and appended to.
    pub fn open(spec: &str) -> std::io::Result<Self> {
        if spec == "-" {
            return Ok(Self::Stdout);
        }
        use std::os::unix::fs::OpenOptionsExt;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(PathBuf::from(spec))?;
        Ok(Self::File(file))
    }

    fn write_line(&mut self, line: &str) {
        let result = match self {
            Self::Stdout => {
                let mut out = std::io::stdout().lock();
                out.write_all(line.as_bytes()).and_then(|()| out.flush())
            }
            Self::File(file) => file.write_all(line.as_bytes()),
            Self::Memory(buffer) => {
                buffer
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .extend_from_slice(line.as_bytes());
                Ok(())
            }
        };
        if let Err(err) = result {
            tracing::warn!(error = %err, "cannot write the audit log");
        }
    }
}

/// A pod's container names by id, and when they were read.
type KnownNames = (Instant, HashMap<String, String>);

/// The node's auditor: one sink, one container-name cache, the node's
/// ability to attribute.
pub struct Auditor {
    sink: Mutex<AuditSink>,
    names: Option<Arc<dyn ContainerNames>>,
    /// By pod uid: container names, and when they were read.
    cache: Mutex<HashMap<String, KnownNames>>,
    proc_root: PathBuf,
    /// Why this node cannot attribute reads, if it cannot (found at start,
    /// or by a read whose pid the kernel could not map).
    problem: Mutex<Option<String>>,
    metrics: &'static crate::metrics::Metrics,
    runtime: tokio::runtime::Handle,
}

impl std::fmt::Debug for Auditor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auditor")
            .field("proc_root", &self.proc_root)
            .field("problem", &self.problem())
            .finish_non_exhaustive()
    }
}

/// How long a pod's container names are trusted before a container id not
/// among them makes the pod be read again.
const NAMES_REFRESH: Duration = Duration::from_secs(10);

impl Auditor {
    /// An auditor writing to `sink`; container names through `names`
    /// (none without a cluster). Checks the PID namespace at once.
    pub fn new(
        sink: AuditSink,
        names: Option<Arc<dyn ContainerNames>>,
        proc_root: impl Into<PathBuf>,
        metrics: &'static crate::metrics::Metrics,
        runtime: tokio::runtime::Handle,
    ) -> Arc<Self> {
        let proc_root = proc_root.into();
        // Said at the publish of an audited volume, not here: most nodes
        // audit nothing.
        let problem = check_pid_namespace(&proc_root);
        metrics
            .audit_can_attribute
            .set(i64::from(problem.is_none()));
        Arc::new(Self {
            sink: Mutex::new(sink),
            names,
            cache: Mutex::new(HashMap::new()),
            proc_root,
            problem: Mutex::new(problem),
            metrics,
            runtime,
        })
    }

    /// Why reads cannot be attributed on this node, if they cannot.
    pub fn problem(&self) -> Option<String> {
        self.problem
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The observer of one volume; `versions` maps its file paths to their
    /// object versions (kept current by the driver).
    pub fn observer(
        self: &Arc<Self>,
        volume: AuditedVolume,
        versions: Arc<Mutex<HashMap<String, FileVersion>>>,
    ) -> Arc<VolumeObserver> {
        Arc::new(VolumeObserver {
            auditor: self.clone(),
            volume,
            versions,
        })
    }

    fn write(&self, line: &serde_json::Value) {
        let mut text = line.to_string();
        text.push('\n');
        self.sink
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .write_line(&text);
    }

    /// The container's name, from the cache or one GET of the pod.
    async fn container_name(&self, volume: &AuditedVolume, id: &str) -> Option<String> {
        let names = self.names.as_ref()?;
        {
            let cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some((at, known)) = cache.get(&volume.pod_uid) {
                if let Some(name) = known.get(id) {
                    return Some(name.clone());
                }
                if at.elapsed() < NAMES_REFRESH {
                    return None;
                }
            }
        }
        match names.names(&volume.namespace, &volume.pod).await {
            Ok(known) => {
                let name = known.get(id).cloned();
                self.cache
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .insert(volume.pod_uid.clone(), (Instant::now(), known));
                name
            }
            Err(err) => {
                tracing::warn!(pod = %volume.pod, namespace = %volume.namespace, error = %err, "audit: cannot read the pod's container names");
                None
            }
        }
    }

    /// Forgets a pod's container names (its last volume is gone).
    pub fn forget_pod(&self, pod_uid: &str) {
        self.cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(pod_uid);
    }
}

/// A file's object (vault name or alias) and version, for the audit line.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FileVersion {
    pub object: String,
    pub version: String,
}

/// One audited volume's observer.
pub struct VolumeObserver {
    auditor: Arc<Auditor>,
    volume: AuditedVolume,
    versions: Arc<Mutex<HashMap<String, FileVersion>>>,
}

impl std::fmt::Debug for VolumeObserver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VolumeObserver")
            .field("volume", &self.volume)
            .finish_non_exhaustive()
    }
}

fn unix_millis(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl OpenObserver for VolumeObserver {
    fn first_open(&self, event: OpenEvent) {
        let auditor = &self.auditor;
        let time_ms = unix_millis(SystemTime::now());
        let reader = (event.pid != 0)
            .then(|| read_process(&auditor.proc_root, event.pid))
            .flatten();
        let verdict = attribute(event.pid, reader.as_ref(), &self.volume.pod_uid);
        // An older version held open has no known object version here.
        let version = event
            .current
            .then(|| {
                self.versions
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .get(&event.path)
                    .cloned()
            })
            .flatten()
            .unwrap_or_default();
        let v = &self.volume;
        match verdict {
            Err(why) => {
                if why == Unattributed::PidNotVisible {
                    let mut problem = auditor
                        .problem
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner);
                    if problem.is_none() {
                        tracing::warn!(
                            "auditing cannot attribute reads on this node: {PID_NOT_VISIBLE}"
                        );
                        *problem = Some(PID_NOT_VISIBLE.to_owned());
                        auditor.metrics.audit_can_attribute.set(0);
                    }
                }
                auditor
                    .metrics
                    .audit_unattributed
                    .get_or_create(&crate::metrics::ReasonLabels {
                        reason: why.code().to_owned(),
                    })
                    .inc();
                let mut line = serde_json::json!({
                    "stream": "secretfs-audit",
                    "event": "first-open",
                    "time_ms": time_ms,
                    "attributed": false,
                    "reason_code": why.code(),
                    "reason": why.reason(),
                    "pid": event.pid,
                    "volume": {
                        "namespace": v.namespace,
                        "pod": v.pod,
                        "pod_uid": v.pod_uid,
                        "class": v.class,
                    },
                    "file": event.path,
                    "object": version.object,
                    "version": version.version,
                    "current": event.current,
                });
                if let Some(reader) = &reader {
                    line["exe"] = reader.exe.clone().into();
                    line["uid"] = reader.uid.unwrap_or(event.uid).into();
                }
                auditor.write(&line);
            }
            Ok(()) => {
                let reader = reader.unwrap_or(Reader {
                    identity: CgroupIdentity::default(),
                    exe: None,
                    uid: None,
                });
                auditor
                    .metrics
                    .audited_reads
                    .get_or_create(&crate::metrics::AuditLabels {
                        namespace: v.namespace.clone(),
                        pod: v.pod.clone(),
                        file: event.path.clone(),
                    })
                    .inc();
                let line = serde_json::json!({
                    "stream": "secretfs-audit",
                    "event": "first-open",
                    "time_ms": time_ms,
                    "attributed": true,
                    "namespace": v.namespace,
                    "pod": v.pod,
                    "pod_uid": v.pod_uid,
                    "class": v.class,
                    "container_id": reader.identity.container_id,
                    "container_runtime": reader.identity.runtime,
                    "container": serde_json::Value::Null,
                    "pid": event.pid,
                    "exe": reader.exe,
                    "uid": reader.uid.unwrap_or(event.uid),
                    "file": event.path,
                    "object": version.object,
                    "version": version.version,
                    "current": event.current,
                });
                // The name may need a GET of the pod: finished on the
                // runtime, never on the FUSE thread.
                let (auditor, volume) = (auditor.clone(), v.clone());
                let id = reader.identity.container_id.clone();
                auditor.runtime.clone().spawn(async move {
                    let mut line = line;
                    if let Some(id) = id
                        && let Some(name) = auditor.container_name(&volume, &id).await
                    {
                        line["container"] = name.into();
                    }
                    auditor.write(&line);
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const UID: &str = "3c0b3d9e-7e54-4c1a-9b7a-2f1e5d6c7b8a";
    const ID: &str = "4f2a9c0d1e3b5a7c9d0e2f4a6b8c0d1e3f5a7b9c1d3e5f7a9b0c2d4e6f8a0b1c";

    #[test]
    fn cgroup_v1_cgroupfs_layout() {
        let text = format!(
            "12:pids:/kubepods/burstable/pod{UID}/{ID}\n11:memory:/kubepods/burstable/pod{UID}/{ID}\n1:name=systemd:/kubepods/burstable/pod{UID}/{ID}\n"
        );
        let got = parse_cgroup(&text);
        assert_eq!(got.pod_uid.as_deref(), Some(UID));
        assert_eq!(got.container_id.as_deref(), Some(ID));
        assert_eq!(got.runtime, None);
        // Guaranteed QoS has no class segment.
        let got = parse_cgroup(&format!("4:cpu:/kubepods/pod{UID}/{ID}"));
        assert_eq!(got.pod_uid.as_deref(), Some(UID));
    }

    #[test]
    fn cgroup_v2_systemd_containerd() {
        let underscored = UID.replace('-', "_");
        let text = format!(
            "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{underscored}.slice/cri-containerd-{ID}.scope\n"
        );
        let got = parse_cgroup(&text);
        assert_eq!(got.pod_uid.as_deref(), Some(UID));
        assert_eq!(got.container_id.as_deref(), Some(ID));
        assert_eq!(got.runtime, Some("containerd"));
        // Guaranteed: kubepods-pod<uid>.slice.
        let got = parse_cgroup(&format!(
            "0::/kubepods.slice/kubepods-pod{underscored}.slice/cri-containerd-{ID}.scope"
        ));
        assert_eq!(got.pod_uid.as_deref(), Some(UID));
    }

    #[test]
    fn cgroup_cri_o_and_its_conmon() {
        let underscored = UID.replace('-', "_");
        let got = parse_cgroup(&format!(
            "0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{underscored}.slice/crio-{ID}.scope"
        ));
        assert_eq!(
            (
                got.pod_uid.as_deref(),
                got.container_id.as_deref(),
                got.runtime
            ),
            (Some(UID), Some(ID), Some("cri-o"))
        );
        // The monitor: the pod, but no container.
        let got = parse_cgroup(&format!(
            "0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{underscored}.slice/crio-conmon-{ID}.scope"
        ));
        assert_eq!(got.pod_uid.as_deref(), Some(UID));
        assert_eq!(got.container_id, None);
    }

    #[test]
    fn cgroup_docker_formats() {
        let got = parse_cgroup(&format!("9:memory:/docker/{ID}\n0::/\n"));
        assert_eq!(
            (got.pod_uid, got.container_id.as_deref(), got.runtime),
            (None, Some(ID), Some("docker"))
        );
        let got = parse_cgroup(&format!(
            "0::/kubepods.slice/kubepods-pod{}.slice/docker-{ID}.scope",
            UID.replace('-', "_")
        ));
        assert_eq!(got.runtime, Some("docker"));
        assert_eq!(got.pod_uid.as_deref(), Some(UID));
    }

    #[test]
    fn a_host_process_or_garbage_names_nothing() {
        assert_eq!(parse_cgroup("0::/init.scope\n"), CgroupIdentity::default());
        assert_eq!(
            parse_cgroup("9:name=systemd:/\n4:memory:/user.slice\n"),
            CgroupIdentity::default()
        );
        assert_eq!(parse_cgroup("garbage"), CgroupIdentity::default());
        // Not a uid: not a pod.
        assert_eq!(parse_cgroup("1:cpu:/kubepods/podnot-a-uid/x").pod_uid, None);
        assert_eq!(parse_cgroup("1:cpu:/kubepods/pod/x").pod_uid, None);
    }

    #[test]
    fn the_real_uid_is_the_first_of_the_uid_line() {
        assert_eq!(
            parse_status_uid("Name:\tcat\nUid:\t1000\t1001\t1002\t1003\nGid:\t0\t0\t0\t0\n"),
            Some(1000)
        );
        assert_eq!(parse_status_uid("Name:\tcat\n"), None);
    }

    fn reader(pod_uid: Option<&str>) -> Reader {
        Reader {
            identity: CgroupIdentity {
                pod_uid: pod_uid.map(str::to_owned),
                container_id: Some(ID.to_owned()),
                runtime: None,
            },
            exe: Some("/bin/cat".into()),
            uid: Some(0),
        }
    }

    #[test]
    fn only_a_reader_of_the_volumes_own_pod_is_attributed() {
        assert_eq!(attribute(42, Some(&reader(Some(UID))), UID), Ok(()));
        assert_eq!(
            attribute(0, Some(&reader(Some(UID))), UID),
            Err(Unattributed::PidNotVisible)
        );
        assert_eq!(attribute(42, None, UID), Err(Unattributed::ProcessGone));
        assert_eq!(
            attribute(42, Some(&reader(None)), UID),
            Err(Unattributed::NoPodCgroup)
        );
        let other = "11111111-2222-3333-4444-555555555555";
        assert_eq!(
            attribute(42, Some(&reader(Some(other))), UID),
            Err(Unattributed::OtherPod {
                cgroup_pod_uid: other.to_owned()
            })
        );
    }

    #[test]
    fn the_pid_namespace_check_reads_pid_1s_cgroup() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("1")).unwrap();
        std::fs::write(dir.path().join("1/cgroup"), "0::/init.scope\n").unwrap();
        assert_eq!(check_pid_namespace(dir.path()), None);
        std::fs::write(
            dir.path().join("1/cgroup"),
            format!("0::/kubepods/besteffort/pod{UID}/{ID}\n"),
        )
        .unwrap();
        let problem = check_pid_namespace(dir.path()).unwrap();
        assert!(problem.contains("hostPID: true"), "{problem}");
    }
}
