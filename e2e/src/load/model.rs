//! The test's model: the vault's secrets and every value each has had,
//! the classes and pods, and what the node's process and mounts show.

use std::path::{Path, PathBuf};
use std::sync::RwLock;
use std::sync::atomic::AtomicU32;

use super::report::Memory;
use super::*;

#[derive(Debug, Clone)]
pub(super) struct FileRef {
    pub(super) path: PathBuf,
    pub(super) secret: usize,
    pub(super) volume: usize,
}

/// A class and the (file, secret) pairs of its volumes.
#[derive(Debug, Clone)]
pub(super) struct ClassSpec {
    pub(super) name: String,
    pub(super) yaml: String,
    pub(super) files: Vec<(String, usize)>,
}

/// Every value each secret has had, oldest first (index = generation).
#[derive(Debug)]
pub(super) struct History {
    pub(super) names: Vec<String>,
    pub(super) values: RwLock<Vec<Vec<Vec<u8>>>>,
    /// Newest generation some reader saw, per secret.
    pub(super) seen: Vec<AtomicU32>,
}

impl History {
    pub(super) fn generation(&self, secret: usize, bytes: &[u8]) -> Option<u32> {
        let values = self.values.read().unwrap();
        values[secret]
            .iter()
            .rposition(|v| v.as_slice() == bytes)
            .map(|g| g as u32)
    }

    pub(super) fn latest(&self, secret: usize) -> u32 {
        (self.values.read().unwrap()[secret].len() - 1) as u32
    }
}

/// The value of generation `generation` of an extra secret: its name and
/// generation, then filler, so a mix of two versions matches neither.
pub(super) fn value(name: &str, generation: u32, size: usize) -> String {
    let mut text = format!("{name}#{generation:06}|");
    let filler = char::from(b'a' + (generation % 26) as u8);
    let size = size + (generation as usize % 7);
    while text.len() < size {
        text.push(filler);
    }
    text
}

pub(super) fn class_yaml(name: &str, secrets: &[String]) -> String {
    let mut objects = String::from("array:\n");
    for secret in secrets {
        objects.push_str(&format!(
            "  - |\n    objectName: {secret}\n    objectType: secret\n"
        ));
    }
    let objects: Vec<String> = objects.lines().map(|l| format!("      {l}")).collect();
    format!(
        "apiVersion: secrets-store.csi.x-k8s.io/v1\nkind: SecretProviderClass\nmetadata:\n  name: {name}\n  namespace: default\nspec:\n  provider: azure\n  parameters:\n    keyvaultName: {VAULT}\n    tenantId: {TENANT}\n    useVMManagedIdentity: \"true\"\n    userAssignedIdentityID: {NODE_IDENTITY}\n    objects: |\n{}\n",
        objects.join("\n")
    )
}

/// The demo seed's class (one secret, aliased SECRET_1).
pub(super) fn seed_class_yaml() -> String {
    format!(
        "apiVersion: secrets-store.csi.x-k8s.io/v1\nkind: SecretProviderClass\nmetadata:\n  name: {SEED_CLASS}\n  namespace: default\nspec:\n  provider: azure\n  parameters:\n    keyvaultName: {VAULT}\n    tenantId: {TENANT}\n    useVMManagedIdentity: \"true\"\n    userAssignedIdentityID: {NODE_IDENTITY}\n    objects: |\n      array:\n        - |\n          objectName: {SEED_SECRET}\n          objectAlias: {SEED_FILE}\n          objectType: secret\n"
    )
}

pub(super) fn pod_yaml(index: usize, class: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: load-{index}\n  namespace: default\n  uid: 10ad0000-0000-4000-8000-{index:012}\nspec:\n  containers:\n    - name: app\n      image: busybox\n  volumes:\n    - name: {VOLUME}\n      csi:\n        driver: secrets-store.csi.k8s.io\n        readOnly: true\n        volumeAttributes:\n          secretProviderClass: {class}\n"
    )
}

pub(super) fn memory(pid: u32) -> Memory {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    Memory {
        rss_kb: field("VmRSS:"),
        hwm_kb: field("VmHWM:"),
    }
}

/// Mount points at or under `dir`, deepest first.
pub(super) fn mounts_under(dir: &Path) -> Vec<String> {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let dir = dir.to_string_lossy();
    let mut points: Vec<String> = mounts
        .lines()
        .filter_map(|l| l.split(' ').nth(1))
        .filter(|p| p.starts_with(dir.as_ref()))
        .map(str::to_owned)
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    points
}
