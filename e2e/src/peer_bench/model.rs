//! What the runs hold: the emulator's seed (vaults, secrets and their
//! values), the SecretProviderClasses, the pods, and kubelet's jitter.

use std::fmt::Write as _;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;

use super::config::{CYCLE_PODS, M, NODE_IDENTITY, SEED_CLASS, SEED_POD, TENANT, VALUE_BYTES};
use crate::Seed;
use crate::kubelet::parse_pod;

fn value(vault: &str, name: &str, generation: usize) -> String {
    let mut v = format!("{vault}/{name}/{generation}:");
    while v.len() < VALUE_BYTES {
        v.push_str("0123456789abcdef");
    }
    v.truncate(VALUE_BYTES);
    v
}

/// The vaults: kv-demo (the seed example's), one per 10-object use, and
/// kv-rotate with one secret; the node's managed identity reads them all.
fn ten_vaults() -> Vec<String> {
    let mut v = vec![
        "kv-ten".to_owned(),
        "kv-read".to_owned(),
        "kv-rss".to_owned(),
    ];
    v.extend(CYCLE_PODS.iter().map(|p| format!("kv-cycle-{p}")));
    v.push("kv-throttle".to_owned());
    v
}

pub(super) fn seed() -> anyhow::Result<Seed> {
    let mut yaml = format!(
        "tenant: {TENANT}
identities:
  - name: node-identity
    kind: managedIdentity
    clientId: {NODE_IDENTITY}
vaults:
  - name: kv-demo
    access: [{{identity: node-identity, secrets: [get, list]}}]
    secrets:
      - {{name: sql-password, versions: [{{value: Sql-Passw0rd-from-kv-demo}}]}}
  - name: kv-rotate
    access: [{{identity: node-identity, secrets: [get, list]}}]
    secrets:
      - {{name: value, versions: [{{value: generation-0}}]}}
"
    );
    for vault in ten_vaults() {
        writeln!(
            yaml,
            "  - name: {vault}\n    access: [{{identity: node-identity, secrets: [get, list]}}]\n    secrets:"
        )?;
        let mut names: Vec<String> = (0..M).map(|i| format!("obj-{i}")).collect();
        if vault == "kv-throttle" {
            names.extend((0..M).map(|i| format!("new-{i}")));
        }
        for name in names {
            writeln!(
                yaml,
                "      - {{name: {name}, versions: [{{value: {}}}]}}",
                value(&vault, &name, 0)
            )?;
        }
    }
    Ok(Seed::from_yaml(&yaml)?)
}

/// A class of `prefix-0..M` secrets in `vault`, read with the node's
/// managed identity (the seed class's identity mode).
fn class(name: &str, vault: &str, prefix: &str, objects: usize) -> String {
    let mut list = String::new();
    for i in 0..objects {
        let object = if objects == 1 {
            prefix.to_owned()
        } else {
            format!("{prefix}-{i}")
        };
        write!(
            list,
            "        - |\n          objectName: {object}\n          objectType: secret\n"
        )
        .unwrap();
    }
    format!(
        "apiVersion: secrets-store.csi.x-k8s.io/v1
kind: SecretProviderClass
metadata:
  name: {name}
spec:
  provider: azure
  parameters:
    keyvaultName: {vault}
    tenantId: {TENANT}
    useVMManagedIdentity: \"true\"
    userAssignedIdentityID: {NODE_IDENTITY}
    objects: |
      array:
{list}"
    )
}

pub(super) fn classes() -> Vec<String> {
    let mut all = vec![SEED_CLASS.to_owned()];
    for vault in ten_vaults() {
        all.push(class(&vault, &vault, "obj", M));
    }
    all.push(class("kv-throttle-new", "kv-throttle", "new", M));
    all.push(class("kv-rotate", "kv-rotate", "value", 1));
    all
}

/// A tiny PRNG (xorshift) for kubelet's jitter.
#[derive(Debug)]
pub(super) struct Rng(u64);

impl Rng {
    pub(super) fn new() -> Rng {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1);
        Rng(seed | 1)
    }
    pub(super) fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    /// Uniform in [lo, hi).
    pub(super) fn between(&mut self, lo: Duration, hi: Duration) -> Duration {
        let span = (hi - lo).as_millis() as u64;
        lo + Duration::from_millis(self.next() % span.max(1))
    }
}

pub(super) fn pod_of(class: &str) -> Pod {
    let mut pod = parse_pod(SEED_POD).unwrap();
    pod.spec.as_mut().unwrap().volumes.as_mut().unwrap()[0]
        .csi
        .as_mut()
        .unwrap()
        .volume_attributes
        .as_mut()
        .unwrap()
        .insert("secretProviderClass".into(), class.into());
    pod
}
