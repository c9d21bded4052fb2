//! Restart survival (docs/ARCHITECTURE.md, "Restart survival").
//!
//! Two places keep a volume alive while no node plugin runs:
//! - the state directory: one JSON record per volume with everything that
//!   is not secret (pod, class, parameters, files and versions, the FUSE
//!   session's INIT exchange). Written at publish and after each change.
//! - the keeper (`secretfs keeper`): the volume's `/dev/fuse` connection
//!   (which keeps the mount alive) and, in locked memory, what is secret:
//!   the files' bytes, the pod's tokens and the publish secrets.
//!
//! A starting node reads the records, takes each connection back from the
//! keeper and serves the same files under the same inode numbers; requests
//! that waited meanwhile are answered, and on Linux 6.9+ so are those a
//! killed process left unanswered. What cannot be kept is repaired: a
//! record without a connection means the mount died with the old process;
//! it is unmounted and the pods that need a restart are named in the log.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine;
use secretfs_fuse::{
    Content, FileSpec, MountOptions, MountedVolume, SessionState, Volume, VolumeId, VolumeSpec,
};
use secretfs_secrets::{SecretBytes, SecretMap, SecretString};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::{Driver, Published, cache_age, unmount_stale};
use crate::node::keeper::{KeeperClient, Kept};
use crate::provider::external::ProviderVolume;
use crate::provider::{FileMode, MountRequest, MountedFile, ObjectVersion, PodRef};
use crate::spc::SecretObject;

const RECORD_FORMAT: u32 = 1;
const BLOB_MAGIC: &[u8; 4] = b"SFK1";

/// Where volumes are kept across restarts.
pub struct Persistence {
    state_dir: PathBuf,
    keeper: Option<KeeperLink>,
}

impl std::fmt::Debug for Persistence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Persistence")
            .field("state_dir", &self.state_dir)
            .field("keeper", &self.keeper.as_ref().map(|k| &k.socket))
            .finish()
    }
}

/// A connection to the keeper, made again after an error.
struct KeeperLink {
    socket: PathBuf,
    client: std::sync::Mutex<Option<KeeperClient>>,
}

impl KeeperLink {
    /// Runs `op` on a connected client; on failure the connection is dropped
    /// and made again next time.
    fn with<T>(
        &self,
        mut op: impl FnMut(&mut KeeperClient) -> std::io::Result<T>,
    ) -> std::io::Result<T> {
        let mut guard = self.client.lock().unwrap_or_else(|e| e.into_inner());
        // A kept connection may lead to a keeper that has since restarted:
        // on failure, connect again once and retry.
        if let Some(client) = guard.as_mut() {
            match op(client) {
                Ok(value) => return Ok(value),
                Err(_) => *guard = None,
            }
        }
        let mut client = KeeperClient::connect(&self.socket)?;
        let result = op(&mut client);
        if result.is_ok() {
            *guard = Some(client);
        }
        result
    }
}

impl Persistence {
    /// Records go to `state_dir` (created 0700); connections and secrets
    /// to the keeper at `keeper` (none: volumes die with the process, and
    /// the next start only repairs).
    pub fn new(state_dir: &Path, keeper: Option<&Path>) -> std::io::Result<Self> {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(state_dir)?;
        Ok(Self {
            state_dir: state_dir.to_owned(),
            keeper: keeper.map(|socket| KeeperLink {
                socket: socket.to_owned(),
                client: std::sync::Mutex::new(None),
            }),
        })
    }

    pub fn has_keeper(&self) -> bool {
        self.keeper.is_some()
    }

    fn record_path(&self, target: &Path) -> PathBuf {
        self.state_dir
            .join(format!("{}.json", record_name(&target.to_string_lossy())))
    }

    fn write_record(&self, record: &Record) -> std::io::Result<()> {
        let path = self.record_path(&record.target);
        let tmp = path.with_extension("json.tmp");
        let text = serde_json::to_vec_pretty(record).map_err(std::io::Error::other)?;
        std::fs::write(&tmp, text)?;
        std::fs::rename(&tmp, &path)
    }

    fn remove_record(&self, target: &Path) {
        match std::fs::remove_file(self.record_path(target)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(target = ?target, error = %e, "cannot remove the volume's state record")
            }
        }
    }

    fn records(&self) -> Vec<Record> {
        let Ok(entries) = std::fs::read_dir(&self.state_dir) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_none_or(|e| e != "json") {
                continue;
            }
            match std::fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|text| serde_json::from_slice::<Record>(&text).map_err(|e| e.to_string()))
            {
                Ok(record) if record.format == RECORD_FORMAT => out.push(record),
                Ok(record) => {
                    tracing::warn!(file = ?path, format = record.format, "state record of an unknown format: ignored")
                }
                Err(e) => {
                    tracing::warn!(file = ?path, error = %e, "unreadable state record: ignored")
                }
            }
        }
        out.sort_by(|a, b| a.target.cmp(&b.target));
        out
    }
}

/// A stable file name for a target path (FNV-1a, two seeds).
fn record_name(target: &str) -> String {
    let fnv = |seed: u64| {
        target.bytes().fold(seed, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
        })
    };
    format!(
        "{:016x}{:016x}",
        fnv(0xcbf2_9ce4_8422_2325),
        fnv(0x6c62_272e_07bb_0142)
    )
}

/// What a volume's record holds: everything needed to serve it again,
/// except secrets.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Record {
    format: u32,
    target: PathBuf,
    volume_id: String,
    provider: String,
    class: String,
    interval_seconds: Option<u64>,
    gid: u32,
    lazy: bool,
    pod: PodRef,
    parameters: BTreeMap<String, String>,
    default_mode: u32,
    kubelet_keys: BTreeMap<String, String>,
    versions: Vec<ObjectVersion>,
    files: Vec<FileRecord>,
    secret_objects: Vec<SecretObject>,
    synced: bool,
    refreshed_at: u64,
    fuse_init_request: String,
    fuse_init_reply: String,
    /// The files' versions the kernel may hold (`SessionState::versions`,
    /// base64): each version of a file is an inode of its own. Absent from
    /// records of older builds, which gave every file one inode.
    #[serde(default)]
    fuse_versions: String,
    /// When each file's object version is valid (timestamps only). Absent
    /// from records of older builds: known again at the next refresh.
    #[serde(default)]
    validity: BTreeMap<String, crate::expiry::Validity>,
    /// The expiry warnings the pod got (path, version, reason), so a
    /// restart does not post them again.
    #[serde(default)]
    expiry_warned: Vec<(String, String, String)>,
    /// Whether each file was read since it was shown (timestamps only), as
    /// of the record's last write (publish, rotation, hand-over). Absent
    /// from records of older builds: the files count from the takeover.
    #[serde(default)]
    reads: Vec<ReadRecord>,
    /// Whether the class asked for its reads to be audited (the kernel
    /// sends this connection's opens). Absent from older records: no.
    #[serde(default)]
    audited: bool,
}

/// One file's read record: Unix milliseconds since when its contents are
/// shown, and of their first read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ReadRecord {
    path: String,
    shown_since_ms: u64,
    #[serde(default)]
    first_read_ms: Option<u64>,
}

impl ReadRecord {
    fn of(r: &secretfs_fuse::FileReads) -> Self {
        let ms = |t: std::time::SystemTime| {
            t.duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        };
        ReadRecord {
            path: r.path.clone(),
            shown_since_ms: ms(r.since),
            first_read_ms: r.first_read.map(ms),
        }
    }

    fn reads(&self) -> secretfs_fuse::FileReads {
        let at = |ms: u64| std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
        secretfs_fuse::FileReads {
            path: self.path.clone(),
            since: at(self.shown_since_ms),
            first_read: self.first_read_ms.map(at),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct FileRecord {
    path: String,
    mode: u32,
    object: String,
}

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

fn record_of(target: &Path, p: &Published) -> Record {
    let state = p.mounted.session_state();
    Record {
        format: RECORD_FORMAT,
        target: target.to_owned(),
        volume_id: p.mounted.volume().id().as_str().to_owned(),
        provider: p.provider.name().to_owned(),
        class: p.class.clone(),
        interval_seconds: p.interval.map(|d| d.as_secs()),
        gid: p.gid,
        lazy: p.live.is_some(),
        pod: p.request.pod.clone(),
        parameters: p.request.parameters.clone(),
        default_mode: p.request.default_mode.bits(),
        kubelet_keys: p.kubelet_keys.clone(),
        versions: p.versions.clone(),
        files: p
            .files
            .iter()
            .map(|f| FileRecord {
                path: f.path.clone(),
                mode: f.mode.bits(),
                object: f.object_id.clone(),
            })
            .collect(),
        secret_objects: p.secret_objects.clone(),
        synced: p.synced,
        refreshed_at: p
            .refreshed_at
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        fuse_init_request: b64().encode(&state.init_request),
        fuse_init_reply: b64().encode(&state.init_reply),
        fuse_versions: b64().encode(&state.versions),
        validity: p.validity.clone(),
        expiry_warned: p.warned.iter().cloned().collect(),
        audited: p.audit.is_some(),
        reads: p
            .mounted
            .volume()
            .reads()
            .iter()
            .map(ReadRecord::of)
            .collect(),
    }
}

/// The secret half of a volume, as the keeper holds it.
struct Secrets {
    tokens: Option<SecretString>,
    secrets: SecretMap,
    files: BTreeMap<String, Arc<SecretBytes>>,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Secrets")
            .field("files", &self.files.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// Encodes the secret half of a published volume (see [`encode_blob`]).
fn encode_secrets(p: &Published) -> Zeroizing<Vec<u8>> {
    let tokens = p
        .request
        .service_account_tokens
        .as_ref()
        .map(|t| t.expose().as_bytes());
    let secrets: Vec<(&str, &str)> = p.request.secrets.expose().collect();
    let files: Vec<(&str, &[u8])> = p
        .files
        .iter()
        .map(|f| (f.path.as_str(), f.contents.expose()))
        .collect();
    encode_blob(tokens, &secrets, &files)
}

/// Encodes the secret half into one buffer allocated at its final size
/// (no reallocation leaves a copy behind): magic, tokens (`u32::MAX` length
/// when absent), secrets as key/value pairs, files as path/bytes pairs;
/// every field a little-endian `u32` length and its bytes.
fn encode_blob(
    tokens: Option<&[u8]>,
    secrets: &[(&str, &str)],
    files: &[(&str, &[u8])],
) -> Zeroizing<Vec<u8>> {
    let size = 4
        + 4
        + tokens.map_or(0, <[u8]>::len)
        + 4
        + secrets
            .iter()
            .map(|(k, v)| 8 + k.len() + v.len())
            .sum::<usize>()
        + 4
        + files
            .iter()
            .map(|(k, v)| 8 + k.len() + v.len())
            .sum::<usize>();
    let mut out = Zeroizing::new(Vec::with_capacity(size));
    let field = |out: &mut Vec<u8>, bytes: &[u8]| {
        out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
        out.extend_from_slice(bytes);
    };
    out.extend_from_slice(BLOB_MAGIC);
    match tokens {
        Some(t) => field(&mut out, t),
        None => out.extend_from_slice(&u32::MAX.to_le_bytes()),
    }
    out.extend_from_slice(&(secrets.len() as u32).to_le_bytes());
    for (k, v) in secrets {
        field(&mut out, k.as_bytes());
        field(&mut out, v.as_bytes());
    }
    out.extend_from_slice(&(files.len() as u32).to_le_bytes());
    for (k, v) in files {
        field(&mut out, k.as_bytes());
        field(&mut out, v);
    }
    debug_assert_eq!(out.len(), size);
    out
}

fn decode_secrets(blob: &[u8]) -> Result<Secrets, &'static str> {
    struct Reader<'a>(&'a [u8]);
    impl<'a> Reader<'a> {
        fn take(&mut self, n: usize) -> Result<&'a [u8], &'static str> {
            if self.0.len() < n {
                return Err("truncated");
            }
            let (head, rest) = self.0.split_at(n);
            self.0 = rest;
            Ok(head)
        }
        fn u32(&mut self) -> Result<u32, &'static str> {
            Ok(u32::from_le_bytes(
                self.take(4)?.try_into().map_err(|_| "truncated")?,
            ))
        }
        fn field(&mut self) -> Result<&'a [u8], &'static str> {
            let n = self.u32()? as usize;
            self.take(n)
        }
        fn text(&mut self) -> Result<String, &'static str> {
            String::from_utf8(self.field()?.to_vec()).map_err(|_| "not UTF-8")
        }
    }
    let mut r = Reader(blob);
    if r.take(4)? != BLOB_MAGIC {
        return Err("unknown format");
    }
    let tokens = match r.u32()? {
        u32::MAX => None,
        n => Some(SecretString::new(
            String::from_utf8(r.take(n as usize)?.to_vec()).map_err(|_| "not UTF-8")?,
        )),
    };
    let mut pairs = Vec::new();
    for _ in 0..r.u32()? {
        pairs.push((r.text()?, r.text()?));
    }
    let secrets = SecretMap::new(pairs);
    let mut files = BTreeMap::new();
    for _ in 0..r.u32()? {
        let path = r.text()?;
        files.insert(path, Arc::new(SecretBytes::from_slice(r.field()?)));
    }
    if !r.0.is_empty() {
        return Err("trailing bytes");
    }
    Ok(Secrets {
        tokens,
        secrets,
        files,
    })
}

/// The provider of a restored volume that was not available at start: looked
/// up again at each refresh until it is.
struct Deferred {
    name: String,
    registry: Arc<crate::provider::ProviderRegistry>,
    volume: ProviderVolume,
    found: std::sync::Mutex<Option<Arc<dyn crate::provider::Provider>>>,
}

#[async_trait::async_trait]
impl crate::provider::Provider for Deferred {
    fn name(&self) -> &str {
        &self.name
    }

    async fn mount(
        &self,
        request: &MountRequest,
    ) -> Result<crate::provider::MountResponse, crate::provider::MountError> {
        let cached = self.found.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let provider = match cached {
            Some(provider) => provider,
            None => {
                let provider = self
                    .registry
                    .lookup(&self.name, || self.volume.clone())
                    .map_err(|e| {
                        crate::provider::MountError::config(
                            crate::provider::ErrorKind::Transient,
                            e.to_string(),
                        )
                    })?;
                *self.found.lock().unwrap_or_else(|e| e.into_inner()) = Some(provider.clone());
                provider
            }
        };
        provider.mount(request).await
    }
}

/// What a start did with the volumes it found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RestoreReport {
    /// Volumes served again, with no remount.
    pub adopted: usize,
    /// Volumes whose mount could not be kept; their pods need a restart.
    pub lost: Vec<String>,
}

impl Driver {
    /// Keeps volumes across restarts with `persistence`.
    pub fn with_persistence(mut self, persistence: Persistence) -> Self {
        self.persist = Some(Arc::new(persistence));
        self
    }

    /// Hands the keeper `p`'s secrets and a duplicate of its connection,
    /// and, when what it shows changed (`changed`: publish, rotation),
    /// rewrites its record; a republish only brings new tokens. Failures
    /// are logged: the volume works, it just would not survive a restart.
    pub(super) async fn persist(&self, target: &Path, p: &Published, changed: bool) {
        let Some(persist) = self.persist.clone() else {
            return;
        };
        let record = changed.then(|| record_of(target, p));
        let blob = persist.keeper.is_some().then(|| encode_secrets(p));
        // The connection goes with every update: a keeper that restarted
        // since the last one has none.
        let fd = p
            .mounted
            .connection()
            .and_then(|fd| fd.try_clone_to_owned().ok());
        let target = target.to_owned();
        let done = tokio::task::spawn_blocking(move || {
            if let Some(record) = record
                && let Err(e) = persist.write_record(&record)
            {
                tracing::warn!(target = ?target, error = %e, "cannot write the volume's state record: it will not survive a restart");
            }
            if let (Some(link), Some(blob)) = (&persist.keeper, blob) {
                let key = target.to_string_lossy();
                let result = link.with(|c| {
                    use std::os::fd::AsFd;
                    c.put(&key, fd.as_ref().map(|f| f.as_fd()), &blob)
                });
                if let Err(e) = result {
                    tracing::warn!(target = ?target, error = %e, "the keeper did not take the volume: it will not survive a restart");
                }
            }
        })
        .await;
        if let Err(e) = done {
            tracing::warn!(error = %e, "persisting a volume failed");
        }
    }

    /// Watches the keeper: when it comes back after a restart (it lost
    /// everything it held), every volume is handed to it again. Runs until
    /// the process ends; does nothing without a keeper.
    pub async fn watch_keeper(self: Arc<Self>) {
        let Some(socket) = self
            .persist
            .as_ref()
            .and_then(|p| p.keeper.as_ref())
            .map(|k| k.socket.clone())
        else {
            return;
        };
        let mut seen = false;
        loop {
            let connected = tokio::net::UnixStream::connect(&socket).await;
            let Ok(mut stream) = connected else {
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                continue;
            };
            if seen {
                tracing::info!(socket = ?socket, "the keeper is back: handing it every volume again");
                for (target, slot) in self.slots() {
                    let guard = slot.lock().await;
                    if let Some(published) = guard.as_ref() {
                        self.persist(&target, published, false).await;
                    }
                }
            }
            seen = true;
            // The keeper never writes on this connection: a read ends only
            // when the keeper goes away.
            let mut byte = [0u8; 1];
            let _ = tokio::io::AsyncReadExt::read(&mut stream, &mut byte).await;
            tracing::warn!(socket = ?socket, "lost the keeper: volumes survive a restart again once it is back");
        }
    }

    /// Forgets a volume that was unpublished.
    pub(super) async fn forget(&self, target: &Path) {
        let Some(persist) = self.persist.clone() else {
            return;
        };
        let target = target.to_owned();
        let _ = tokio::task::spawn_blocking(move || {
            persist.remove_record(&target);
            if let Some(link) = &persist.keeper
                && let Err(e) = link.with(|c| c.remove(&target.to_string_lossy()))
            {
                tracing::warn!(target = ?target, error = %e, "the keeper did not drop the volume");
            }
        })
        .await;
    }

    /// Serves again the volumes of a previous process (call once, before
    /// serving CSI).
    pub async fn restore(&self) -> RestoreReport {
        let mut report = RestoreReport::default();
        let Some(persist) = self.persist.clone() else {
            return report;
        };
        let records = persist.records();
        let listing = persist.clone();
        let listed = tokio::task::spawn_blocking(move || {
            listing
                .keeper
                .as_ref()
                .map(|link| link.with(KeeperClient::list))
        })
        .await;
        let mut kept: BTreeMap<String, Kept> = match listed {
            Ok(Some(Ok(entries))) => entries.into_iter().map(|k| (k.key.clone(), k)).collect(),
            Ok(Some(Err(e))) => {
                tracing::error!(error = %e, "cannot reach the keeper: volumes of the previous process cannot be taken over");
                BTreeMap::new()
            }
            _ => BTreeMap::new(),
        };
        for record in records {
            let key = record.target.to_string_lossy().into_owned();
            let target = record.target.clone();
            let pod = format!(
                "{}/{} (uid {})",
                record.pod.namespace, record.pod.name, record.pod.uid
            );
            let outcome = match kept.remove(&key) {
                Some(entry) => self.adopt(record, entry).await,
                None => Err(
                    "its FUSE connection was not kept (no keeper, or the keeper restarted)"
                        .to_owned(),
                ),
            };
            match outcome {
                Ok(()) => {
                    tracing::info!(target = ?target, pod = %pod, "volume taken over from the previous process");
                    report.adopted += 1;
                }
                Err(reason) => {
                    tracing::warn!(
                        target = ?target,
                        pod = %pod,
                        "volume lost: {reason}; restart the pod (its next republish mounts a fresh volume, which reaches only new containers)"
                    );
                    let stale = target.clone();
                    let _ = tokio::task::spawn_blocking(move || unmount_stale(&stale)).await;
                    self.forget(&target).await;
                    report.lost.push(pod);
                }
            }
        }
        // Connections the keeper holds for volumes nobody recorded.
        for (key, entry) in kept {
            drop(entry);
            tracing::warn!(target = %key, "the keeper held a volume with no state record: dropped");
            let target = PathBuf::from(&key);
            let _ = tokio::task::spawn_blocking(move || unmount_stale(&target)).await;
            self.forget(Path::new(&key)).await;
        }
        self.metrics().restored(report.adopted, report.lost.len());
        report
    }

    async fn adopt(&self, record: Record, entry: Kept) -> Result<(), String> {
        let secrets = decode_secrets(&entry.blob)
            .map_err(|e| format!("the keeper's copy is unusable ({e})"))?;
        let interval = record.interval_seconds.map(std::time::Duration::from_secs);
        let request = MountRequest {
            parameters: record.parameters.clone(),
            pod: record.pod.clone(),
            service_account_tokens: secrets.tokens,
            secrets: secrets.secrets,
            default_mode: FileMode::new(record.default_mode).unwrap_or_default(),
            current: Vec::new(),
            node_name: self.config.node_name.clone(),
            max_age: cache_age(interval.unwrap_or(self.config.rotation_interval)),
            fresh_since: None,
        };
        let kubelet_keys = record.kubelet_keys.clone();
        let volume_of = || ProviderVolume {
            class: record.class.clone(),
            target_path: record.target.clone(),
            kubelet_keys: kubelet_keys.clone(),
        };
        let provider = match self.providers.lookup(&record.provider, volume_of) {
            Ok(provider) => provider,
            // An external provider restarting with the node plugin: the
            // kept files are served meanwhile and each refresh looks again.
            Err(e) if !record.lazy => {
                tracing::warn!(
                    target = ?record.target,
                    provider = %record.provider,
                    error = %e,
                    "provider not available yet: serving the kept files; refreshes look for it again"
                );
                Arc::new(Deferred {
                    name: record.provider.clone(),
                    registry: self.providers.clone(),
                    volume: volume_of(),
                    found: std::sync::Mutex::new(None),
                })
            }
            Err(e) => return Err(format!("its provider is not available ({e})")),
        };
        let mut lazy_objects = BTreeMap::new();
        let (specs, files, live) = if record.lazy {
            let live = Arc::new(std::sync::Mutex::new(request.clone()));
            let sink = super::lazy::LoadSink {
                loads: self.lazy_loads.clone(),
                target: record.target.clone(),
            };
            let specs;
            (specs, lazy_objects) =
                super::lazy_specs(&provider, &live, &request, record.gid, &sink)
                    .map_err(|e| e.message)?;
            (specs, Vec::new(), Some(live))
        } else {
            let mut files = Vec::new();
            let mut specs = Vec::new();
            for f in &record.files {
                let contents = secrets
                    .files
                    .get(&f.path)
                    .cloned()
                    .ok_or_else(|| format!("the keeper has no bytes for {:?}", f.path))?;
                let mode = FileMode::new(f.mode).unwrap_or_default();
                specs.push(
                    FileSpec::new(
                        &f.path,
                        mode.bits(),
                        0,
                        record.gid,
                        Content::Ready(contents.clone()),
                    )
                    .map_err(|e| e.to_string())?,
                );
                files.push(MountedFile {
                    path: f.path.clone(),
                    mode,
                    contents,
                    object_id: f.object.clone(),
                });
            }
            (specs, files, None)
        };
        let volume = Volume::new(VolumeSpec {
            id: VolumeId::new(&record.volume_id),
            dir_uid: 0,
            dir_gid: record.gid,
            files: specs,
        })
        .map_err(|e| e.to_string())?;
        // Which files were read, as recorded: the takeover moves every name
        // to a new version, but the contents are the same.
        let reads: Vec<secretfs_fuse::FileReads> =
            record.reads.iter().map(ReadRecord::reads).collect();
        volume.restore_reads(&reads);
        let state = SessionState {
            init_request: b64()
                .decode(&record.fuse_init_request)
                .map_err(|e| e.to_string())?,
            init_reply: b64()
                .decode(&record.fuse_init_reply)
                .map_err(|e| e.to_string())?,
            versions: b64()
                .decode(&record.fuse_versions)
                .map_err(|e| e.to_string())?,
        };
        // An audited volume stays audited (its kernel connection still
        // sends opens); without an auditor now, its opens are answered as
        // any volume's and the kernel stops sending them.
        let audit = if record.audited {
            let audit = self.audit_option(&record.pod, &record.class, &files, &record.versions);
            if audit.is_none() {
                tracing::warn!(target = ?record.target, "an audited volume taken over without --audit-log: its reads are no longer audited");
            }
            audit
        } else {
            None
        };
        let options = MountOptions {
            read_mode: self.config.read_mode,
            audit: audit.as_ref().map(|(option, _)| option.clone()),
            ..MountOptions::default()
        };
        let runtime = tokio::runtime::Handle::current();
        let target = record.target.clone();
        let fd = entry.fd;
        let mounted = tokio::task::spawn_blocking(move || {
            MountedVolume::adopt(volume, &target, fd, &state, &options, runtime)
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
        let published = Published {
            mounted,
            provider,
            gid: record.gid,
            class: record.class.clone(),
            interval,
            request,
            versions: record.versions.clone(),
            files,
            secret_objects: record.secret_objects.clone(),
            synced: record.synced,
            refreshed_at: std::time::UNIX_EPOCH
                + std::time::Duration::from_secs(record.refreshed_at),
            last_error: None,
            live,
            kubelet_keys: record.kubelet_keys.clone(),
            validity: record.validity.clone(),
            lazy_objects,
            warned: record.expiry_warned.iter().cloned().collect(),
            audit: audit.map(|(_, table)| table),
        };
        // The process after this one must know the inode numbers this one
        // gave the files (every name moved to a new version at the takeover).
        self.persist(&record.target, &published, true).await;
        self.track(&record.target, &published);
        // Its expiry series at once; warnings not given yet come at its
        // first refresh (none is posted before CSI is served).
        self.set_expiry_series(&record.target, &published);
        if let Some(syncer) = &self.syncer {
            // Before anything is published: the Secrets this volume writes
            // keep its owners at the next apply by any volume of this node.
            let secret_objects: &[SecretObject] = if published.live.is_some() {
                &[]
            } else {
                &published.secret_objects
            };
            syncer.adopt(
                &record.target.to_string_lossy(),
                &published.request.pod,
                &published.class,
                secret_objects,
            );
        }
        *self.slot(&record.target).lock().await = Some(published);
        Ok(())
    }

    /// Stops serving every volume without unmounting, after the keeper has
    /// its newest state: the next process takes them over. Without a
    /// keeper this does nothing (the volumes die with the process).
    pub async fn hand_over(&self, drain: std::time::Duration) -> usize {
        let Some(persist) = self.persist.clone() else {
            return 0;
        };
        if !persist.has_keeper() {
            return 0;
        }
        let mut handed = 0;
        for (target, slot) in self.slots() {
            let mut guard = slot.lock().await;
            let Some(published) = guard.take() else {
                continue;
            };
            // The record too: it carries the files' newest versions.
            self.persist(&target, &published, true).await;
            let released =
                tokio::task::spawn_blocking(move || published.mounted.release(drain)).await;
            match released {
                Ok(r) if r.unanswered > 0 => {
                    tracing::warn!(target = ?target, unanswered = r.unanswered, "requests left unanswered at hand-over; the next process gets them again on Linux 6.9+")
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(target = ?target, error = %e, "release failed"),
            }
            handed += 1;
        }
        handed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_names_are_stable_and_distinct() {
        let a = record_name("/var/lib/kubelet/pods/a/volumes/x/mount");
        assert_eq!(a, record_name("/var/lib/kubelet/pods/a/volumes/x/mount"));
        assert_ne!(a, record_name("/var/lib/kubelet/pods/b/volumes/x/mount"));
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|b| b.is_ascii_hexdigit()));
    }

    #[test]
    fn damaged_blobs_are_refused_not_trusted() {
        assert_eq!(decode_secrets(b"").unwrap_err(), "truncated");
        assert_eq!(decode_secrets(b"XXXX").unwrap_err(), "unknown format");
        let mut blob = BLOB_MAGIC.to_vec();
        blob.extend_from_slice(&u32::MAX.to_le_bytes());
        blob.extend_from_slice(&0u32.to_le_bytes());
        blob.extend_from_slice(&1u32.to_le_bytes());
        blob.extend_from_slice(&100u32.to_le_bytes());
        assert_eq!(decode_secrets(&blob).unwrap_err(), "truncated");
        let mut ok = BLOB_MAGIC.to_vec();
        ok.extend_from_slice(&u32::MAX.to_le_bytes());
        ok.extend_from_slice(&0u32.to_le_bytes());
        ok.extend_from_slice(&0u32.to_le_bytes());
        let decoded = decode_secrets(&ok).unwrap();
        assert!(decoded.tokens.is_none() && decoded.files.is_empty());
        ok.push(0);
        assert_eq!(decode_secrets(&ok).unwrap_err(), "trailing bytes");
    }

    /// Arbitrary secret halves: tokens or none, publish secrets, files.
    #[allow(clippy::type_complexity)]
    fn secret_half() -> impl proptest::strategy::Strategy<
        Value = (
            Option<String>,
            BTreeMap<String, String>,
            BTreeMap<String, Vec<u8>>,
        ),
    > {
        use proptest::prelude::*;
        let text = || proptest::string::string_regex("(?s).{0,24}").unwrap();
        (
            proptest::option::of(proptest::string::string_regex("(?s).{0,300}").unwrap()),
            proptest::collection::btree_map(text(), text(), 0..6),
            proptest::collection::btree_map(
                text(),
                prop_oneof![
                    4 => proptest::collection::vec(any::<u8>(), 0..128),
                    1 => proptest::collection::vec(any::<u8>(), 0..20_000),
                ],
                0..6,
            ),
        )
    }

    fn blob_of(
        tokens: &Option<String>,
        secrets: &BTreeMap<String, String>,
        files: &BTreeMap<String, Vec<u8>>,
    ) -> Zeroizing<Vec<u8>> {
        let secrets: Vec<(&str, &str)> = secrets
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let files: Vec<(&str, &[u8])> = files
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_slice()))
            .collect();
        encode_blob(tokens.as_deref().map(str::as_bytes), &secrets, &files)
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(128))]

        /// Encode then decode is the identity: tokens, secrets and files.
        #[test]
        fn any_secret_half_round_trips((tokens, secrets, files) in secret_half()) {
            let blob = blob_of(&tokens, &secrets, &files);
            let decoded = decode_secrets(&blob).unwrap();
            proptest::prop_assert_eq!(decoded.tokens.as_ref().map(SecretString::expose), tokens.as_deref());
            let pairs: BTreeMap<String, String> = decoded
                .secrets
                .expose()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect();
            proptest::prop_assert_eq!(&pairs, &secrets);
            let got: BTreeMap<String, Vec<u8>> = decoded
                .files
                .iter()
                .map(|(k, v)| (k.clone(), v.expose().to_vec()))
                .collect();
            proptest::prop_assert_eq!(&got, &files);
        }

        /// Every truncation of a blob is refused.
        #[test]
        fn every_truncation_is_refused((tokens, secrets, files) in secret_half(), cut in proptest::prelude::any::<proptest::sample::Index>()) {
            let blob = blob_of(&tokens, &secrets, &files);
            let cut = cut.index(blob.len());
            proptest::prop_assert!(decode_secrets(&blob[..cut]).is_err(), "{} of {} bytes accepted", cut, blob.len());
        }

        /// A flipped bit gives an error or another well-formed half, never
        /// a panic; in the magic it is always refused.
        #[test]
        fn a_flipped_bit_is_refused_cleanly((tokens, secrets, files) in secret_half(), at in proptest::prelude::any::<proptest::sample::Index>(), bit in 0u8..8) {
            let mut blob = blob_of(&tokens, &secrets, &files);
            let at = at.index(blob.len());
            blob[at] ^= 1 << bit;
            let decoded = decode_secrets(&blob);
            if at < 4 {
                proptest::prop_assert_eq!(decoded.unwrap_err(), "unknown format");
            }
        }
    }
}
