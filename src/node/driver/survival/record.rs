//! A volume's state record: one JSON file per volume in the state
//! directory with everything needed to serve it again except secrets.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::Engine;
use serde::{Deserialize, Serialize};

use super::Persistence;
use crate::node::driver::Published;
use crate::provider::{ObjectVersion, PodRef};
use crate::spc::SecretObject;

pub(super) const RECORD_FORMAT: u32 = 1;

impl Persistence {
    pub(super) fn record_path(&self, target: &Path) -> PathBuf {
        self.state_dir
            .join(format!("{}.json", record_name(&target.to_string_lossy())))
    }

    pub(super) fn write_record(&self, record: &Record) -> std::io::Result<()> {
        let path = self.record_path(&record.target);
        let tmp = path.with_extension("json.tmp");
        let text = serde_json::to_vec_pretty(record).map_err(std::io::Error::other)?;
        std::fs::write(&tmp, text)?;
        std::fs::rename(&tmp, &path)
    }

    pub(super) fn remove_record(&self, target: &Path) {
        match std::fs::remove_file(self.record_path(target)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(target = ?target, error = %e, "cannot remove the volume's state record")
            }
        }
    }

    pub(super) fn records(&self) -> Vec<Record> {
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
pub(super) fn record_name(target: &str) -> String {
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
pub(super) struct Record {
    pub(super) format: u32,
    pub(super) target: PathBuf,
    pub(super) volume_id: String,
    pub(super) provider: String,
    pub(super) class: String,
    pub(super) interval_seconds: Option<u64>,
    pub(super) gid: u32,
    pub(super) lazy: bool,
    pub(super) pod: PodRef,
    pub(super) parameters: BTreeMap<String, String>,
    pub(super) default_mode: u32,
    pub(super) kubelet_keys: BTreeMap<String, String>,
    pub(super) versions: Vec<ObjectVersion>,
    pub(super) files: Vec<FileRecord>,
    pub(super) secret_objects: Vec<SecretObject>,
    pub(super) synced: bool,
    pub(super) refreshed_at: u64,
    pub(super) fuse_init_request: String,
    pub(super) fuse_init_reply: String,
    /// The files' versions the kernel may hold (`SessionState::versions`,
    /// base64): each version of a file is an inode of its own. Absent from
    /// records of older builds, which gave every file one inode.
    #[serde(default)]
    pub(super) fuse_versions: String,
    /// When each file's object version is valid (timestamps only). Absent
    /// from records of older builds: known again at the next refresh.
    #[serde(default)]
    pub(super) validity: BTreeMap<String, crate::expiry::Validity>,
    /// The expiry warnings the pod got (path, version, reason), so a
    /// restart does not post them again.
    #[serde(default)]
    pub(super) expiry_warned: Vec<(String, String, String)>,
    /// Whether each file was read since it was shown (timestamps only), as
    /// of the record's last write (publish, rotation, hand-over). Absent
    /// from records of older builds: the files count from the takeover.
    #[serde(default)]
    pub(super) reads: Vec<ReadRecord>,
    /// Whether the class asked for its reads to be audited (the kernel
    /// sends this connection's opens). Absent from older records: no.
    #[serde(default)]
    pub(super) audited: bool,
}

/// One file's read record: Unix milliseconds since when its contents are
/// shown, and of their first read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct ReadRecord {
    pub(super) path: String,
    pub(super) shown_since_ms: u64,
    #[serde(default)]
    pub(super) first_read_ms: Option<u64>,
}

impl ReadRecord {
    pub(super) fn of(r: &secretfs_fuse::FileReads) -> Self {
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

    pub(super) fn reads(&self) -> secretfs_fuse::FileReads {
        let at = |ms: u64| std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
        secretfs_fuse::FileReads {
            path: self.path.clone(),
            since: at(self.shown_since_ms),
            first_read: self.first_read_ms.map(at),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct FileRecord {
    pub(super) path: String,
    pub(super) mode: u32,
    pub(super) object: String,
}

pub(super) fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

pub(super) fn record_of(target: &Path, p: &Published) -> Record {
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
