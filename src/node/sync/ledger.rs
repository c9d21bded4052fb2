//! What this node last applied, per volume and per synced Secret, so that
//! an unchanged object is not written again, and which volumes of this node
//! use each Secret, so that its owners are the union of theirs.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::provider::PodRef;

/// One owner reference of a synced Secret: the pod's owner (its
/// ReplicaSet, StatefulSet, …) or, for a pod without owners, its pod status
/// object. Written without `controller`, as upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Owner {
    pub api_version: String,
    pub kind: String,
    pub name: String,
    pub uid: String,
}

impl Owner {
    pub fn to_json(&self) -> Value {
        json!({
            "apiVersion": self.api_version,
            "kind": self.kind,
            "name": self.name,
            "uid": self.uid,
        })
    }
}

/// A mounted volume, keyed by its target path.
#[derive(Debug)]
pub(super) struct VolumeEntry {
    /// The volume's pod and class, once known (the first sync, or the
    /// takeover): what another volume's apply needs to read this volume's
    /// owners when they are not known yet.
    pub pod: Option<(PodRef, String)>,
    /// Hash of the pod status body last applied.
    pub status_hash: Option<u64>,
    /// The pod status object's uid, once known (the owner of the Secrets of
    /// a pod without owners).
    pub status_uid: Option<String>,
    /// The owners this volume gives its Secrets; `None` until resolved, and
    /// again at each re-check.
    pub owners: Option<Vec<Owner>>,
    /// The Secrets (`namespace/name`) this volume writes.
    pub secrets: BTreeSet<String>,
    /// When everything of this volume was last applied or re-applied;
    /// `None` for a volume taken over from a previous process, which is
    /// due at once.
    pub checked: Option<Instant>,
}

/// A synced Secret that volumes of this node use.
#[derive(Debug, Default)]
pub(super) struct SecretEntry {
    /// Hash of the body (data, labels, owners) last applied, and when.
    pub applied: Option<(u64, Instant)>,
    /// Held while the Secret's owners are computed and applied, so that
    /// two volumes publishing together cannot apply a stale owner list last.
    pub lock: Arc<tokio::sync::Mutex<()>>,
}

/// The node's record of what it wrote.
#[derive(Debug, Default)]
pub(super) struct Ledger {
    volumes: HashMap<String, VolumeEntry>,
    secrets: HashMap<String, SecretEntry>,
}

impl Ledger {
    /// The volume's entry, created (checked now) on first use.
    pub fn volume(&mut self, target: &str) -> &mut VolumeEntry {
        self.volumes
            .entry(target.to_owned())
            .or_insert_with(|| VolumeEntry {
                pod: None,
                status_hash: None,
                status_uid: None,
                owners: None,
                secrets: BTreeSet::new(),
                checked: Some(Instant::now()),
            })
    }

    /// Records a volume taken over from a previous process, before this
    /// process serves anything: it writes `secrets`, with owners not known
    /// yet (read when first needed), and it is due for a re-check at once.
    pub fn adopt(&mut self, target: &str, pod: PodRef, class: &str, secrets: BTreeSet<String>) {
        let volume = self.volume(target);
        volume.pod = Some((pod, class.to_owned()));
        volume.owners = None;
        volume.checked = None;
        self.use_secrets(target, secrets);
    }

    /// Whether the volume is known and was last (re-)applied `recheck` ago
    /// or longer, or was taken over and not re-applied since.
    pub fn due(&self, target: &str, recheck: Duration) -> bool {
        self.volumes
            .get(target)
            .is_some_and(|v| v.checked.is_none_or(|c| c.elapsed() >= recheck))
    }

    /// The volumes that write the Secret `key` and whose owners are not
    /// known: (target, pod, class, status object uid if known).
    pub fn unresolved(&self, key: &str) -> Vec<(String, PodRef, String, Option<String>)> {
        self.volumes
            .iter()
            .filter(|(_, v)| v.secrets.contains(key) && v.owners.is_none())
            .filter_map(|(target, v)| {
                let (pod, class) = v.pod.clone()?;
                Some((target.clone(), pod, class, v.status_uid.clone()))
            })
            .collect()
    }

    /// Records that the volume writes `secrets` (and no others): a Secret
    /// that no volume writes any more is dropped.
    pub fn use_secrets(&mut self, target: &str, secrets: BTreeSet<String>) {
        for key in &secrets {
            self.secrets.entry(key.clone()).or_default();
        }
        let old = std::mem::replace(&mut self.volume(target).secrets, secrets);
        for key in old {
            self.drop_unused(&key);
        }
    }

    /// Forgets an unpublished volume, and each Secret only it used. Nothing
    /// is written: the owners it gave stay on the Secret until this node
    /// applies it again or Kubernetes finds them gone.
    pub fn forget(&mut self, target: &str) {
        if let Some(volume) = self.volumes.remove(target) {
            for key in volume.secrets {
                self.drop_unused(&key);
            }
        }
    }

    fn drop_unused(&mut self, key: &str) {
        if !self.volumes.values().any(|v| v.secrets.contains(key)) {
            self.secrets.remove(key);
        }
    }

    /// The lock of a Secret in use.
    pub fn secret_lock(&mut self, key: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.secrets.entry(key.to_owned()).or_default().lock.clone()
    }

    /// The owners of a Secret: every owner given by a volume of this node
    /// that writes it, once each, ordered by uid.
    pub fn owners_of(&self, key: &str) -> Vec<Owner> {
        let mut owners = BTreeMap::new();
        for volume in self.volumes.values() {
            if volume.secrets.contains(key) {
                for owner in volume.owners.iter().flatten() {
                    owners
                        .entry(owner.uid.clone())
                        .or_insert_with(|| owner.clone());
                }
            }
        }
        owners.into_values().collect()
    }

    /// Whether the Secret must be applied: its body changed, or `recheck`
    /// is set and it was last applied `recheck` ago or longer.
    pub fn secret_due(&self, key: &str, hash: u64, recheck: Option<Duration>) -> bool {
        match self.secrets.get(key).and_then(|s| s.applied) {
            None => true,
            Some((last, at)) => last != hash || recheck.is_some_and(|r| at.elapsed() >= r),
        }
    }

    /// Records an apply of the Secret (if a volume still uses it).
    pub fn secret_applied(&mut self, key: &str, hash: u64) {
        if let Some(secret) = self.secrets.get_mut(key) {
            secret.applied = Some((hash, Instant::now()));
        }
    }

    /// Number of volumes and Secrets recorded.
    #[cfg(test)]
    pub fn len(&self) -> (usize, usize) {
        (self.volumes.len(), self.secrets.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner(uid: &str) -> Owner {
        Owner {
            api_version: "apps/v1".into(),
            kind: "ReplicaSet".into(),
            name: format!("rs-{uid}"),
            uid: uid.into(),
        }
    }

    fn keys(keys: &[&str]) -> BTreeSet<String> {
        keys.iter().map(|k| (*k).to_owned()).collect()
    }

    #[test]
    fn a_secret_is_owned_by_the_owners_of_every_volume_that_writes_it() {
        let mut ledger = Ledger::default();
        ledger.volume("/a").owners = Some(vec![owner("2")]);
        ledger.use_secrets("/a", keys(&["ns/s"]));
        ledger.volume("/b").owners = Some(vec![owner("1"), owner("2")]);
        ledger.use_secrets("/b", keys(&["ns/s", "ns/t"]));
        let uids = |ledger: &Ledger, key| {
            ledger
                .owners_of(key)
                .into_iter()
                .map(|o| o.uid)
                .collect::<Vec<_>>()
        };
        assert_eq!(uids(&ledger, "ns/s"), ["1", "2"], "once each, by uid");
        assert_eq!(uids(&ledger, "ns/t"), ["1", "2"]);
        ledger.forget("/b");
        assert_eq!(uids(&ledger, "ns/s"), ["2"]);
        assert_eq!(ledger.len(), (1, 1), "ns/t is used by no volume any more");
        ledger.forget("/a");
        assert_eq!(ledger.len(), (0, 0));
    }

    #[test]
    fn a_secret_is_due_when_its_body_changed_or_its_recheck_came() {
        let mut ledger = Ledger::default();
        ledger.use_secrets("/a", keys(&["ns/s"]));
        assert!(ledger.secret_due("ns/s", 7, None), "never applied");
        ledger.secret_applied("ns/s", 7);
        assert!(!ledger.secret_due("ns/s", 7, None));
        assert!(!ledger.secret_due("ns/s", 7, Some(Duration::from_secs(60))));
        assert!(ledger.secret_due("ns/s", 7, Some(Duration::ZERO)));
        assert!(ledger.secret_due("ns/s", 8, None), "another body");
        // A Secret no volume uses is not recorded.
        ledger.use_secrets("/a", keys(&[]));
        ledger.secret_applied("ns/s", 7);
        assert_eq!(ledger.len(), (1, 0));
    }

    fn pod(name: &str) -> PodRef {
        PodRef {
            name: name.into(),
            namespace: "ns".into(),
            uid: format!("uid-{name}"),
            service_account: "default".into(),
        }
    }

    #[test]
    fn an_adopted_volume_is_due_at_once_and_its_owners_are_read_before_an_apply() {
        let mut ledger = Ledger::default();
        ledger.adopt("/a", pod("a"), "class", keys(&["ns/s"]));
        ledger.adopt("/b", pod("b"), "class", keys(&["ns/s", "ns/t"]));
        assert!(
            ledger.due("/a", Duration::from_secs(3600)),
            "due at takeover"
        );
        let mut unresolved: Vec<String> = ledger
            .unresolved("ns/s")
            .into_iter()
            .map(|(target, ..)| target)
            .collect();
        unresolved.sort();
        assert_eq!(unresolved, ["/a", "/b"]);
        assert_eq!(ledger.unresolved("ns/t").len(), 1);
        // Once read, an owner counts, and the volume is no longer unresolved.
        ledger.volume("/a").owners = Some(vec![owner("1")]);
        assert_eq!(ledger.unresolved("ns/s").len(), 1);
        assert_eq!(ledger.owners_of("ns/s"), [owner("1")]);
        // A re-check applied: due again only after the interval.
        ledger.volume("/a").checked = Some(Instant::now());
        assert!(!ledger.due("/a", Duration::from_secs(3600)));
        assert!(ledger.due("/b", Duration::from_secs(3600)));
    }

    #[test]
    fn a_volume_is_due_after_the_recheck_interval_only_if_known() {
        let mut ledger = Ledger::default();
        assert!(!ledger.due("/a", Duration::ZERO), "unknown");
        ledger.volume("/a");
        assert!(ledger.due("/a", Duration::ZERO));
        assert!(!ledger.due("/a", Duration::from_secs(60)));
    }
}
