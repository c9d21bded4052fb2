//! Ours served to theirs: the real upstream Secrets Store CSI Driver node
//! plugin, with `secretfs provider`'s socket as provider `azure`, against
//! the same driver with the real upstream Azure provider, and against
//! `secretfs node`; all three on the same emulator, the same real
//! kube-apiserver, the same SecretProviderClasses and pods, driven by the
//! kubelet stand-in. Every file of every volume (path, mode, bytes), every
//! pod status object and every synced Secret must be identical, before and
//! after a rotation, for every object type and format the emulator serves.
//!
//! The one divergence allowed is upstream's: `objectVersionHistory: N` with
//! more than N enabled versions gives upstream N + 1 files, where its own
//! documentation says N ("the top N (where N is `objectVersionHistory`)
//! versions", the provider's page on syncing multiple versions,
//! https://github.com/Azure/secrets-store-csi-driver-provider-azure/blob/master/website/content/en/configurations/sync-multiple-versions.md);
//! secretfs writes N
//! (README, "Version history"). The test checks that upstream's extra file
//! is the only difference.
//!
//! It needs the peers (`e2e/peers/build.sh`), the control plane and the
//! sandbox (`e2e/peers/sandbox.sh`: 127.0.0.1:443 and 169.254.169.254 for
//! the emulator, a private /etc/hosts), so it is ignored in the main run and
//! run by `scripts/peer-conformance.sh`, which `scripts/test.sh` calls.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use secretfs_e2e::kubelet::{Kubelet, PublishExtras, parse_pod};
use secretfs_e2e::peers::{
    Cluster, NodeOptions, NodePlugin, Peer, PluginPaths, Sandbox, peers_bin, read_volume,
};
use secretfs_e2e::{CertificateImport, KeyImport, Seed};

const SEED: &str = include_str!("../../e2e/seeds/peers.yaml");
const SEED_CLASS: &str = include_str!("../fixtures/seed/secretproviderclass.yaml");
const SEED_POD: &str = include_str!("../fixtures/seed/pod.yaml");
const VOLUME: &str = "secrets-store-inline";
const VAULT: &str = "kv-peers";
const TENANT: &str = "9c0d2e7b-1a3f-4b6c-8d5e-7f1a2b3c4d5e";
const NODE_IDENTITY: &str = "5a1d3e0c-6f0e-4c55-9a57-3c2f1b7d9e21";
const SP_CLIENT_ID: &str = "3f8e2d1c-7b6a-4c5d-9e8f-1a2b3c4d5e6f";
const SP_SECRET: &str = "emulator-test-client-secret";
/// `objectVersionHistory` of the `multi` secret, which has more enabled
/// versions than this.
const HISTORY: usize = 2;

type Files = BTreeMap<String, (u32, Vec<u8>)>;

fn fixture(rel: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/azure/input")
        .join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Certificates imported from the fixtures (tests/fixtures/azure/): name →
/// (PFX source, content type). Key Vault serves PFX in the legacy PKCS#12
/// form (SHA-1 MAC, 3DES or RC2), the only one the upstream provider reads:
/// the chains of the fixtures (leaf, root, intermediate: out of order; an
/// incomplete one) are packed that way here ([`legacy_pfx`]); the two
/// fixtures already legacy are imported as they are.
const IMPORTED_CERTS: [(&str, Import, &str); 6] = [
    (
        "fx-rsa-chain",
        Import::Legacy("rsa", &["leaf-rsa", "root", "inter"]),
        "application/x-pkcs12",
    ),
    (
        "fx-ec-chain",
        Import::Legacy("ec", &["leaf-ec", "root", "inter"]),
        "application/x-pkcs12",
    ),
    (
        "fx-incomplete",
        Import::Legacy("rsa", &["leaf-rsa", "root"]),
        "application/x-pkcs12",
    ),
    (
        "fx-rsa-3des",
        Import::File("pfx-rsa-3des.pfx.b64"),
        "application/x-pkcs12",
    ),
    (
        "fx-rsa-legacy",
        Import::File("pfx-rsa-legacy.pfx.b64"),
        "application/x-pkcs12",
    ),
    (
        "fx-pem-rsa",
        Import::File("pem-file-rsa.pem"),
        "application/x-pem-file",
    ),
];

/// Where an imported certificate's value comes from.
#[derive(Clone, Copy)]
enum Import {
    /// A fixture file of `input/`, verbatim.
    File(&'static str),
    /// A legacy PFX of `pki/leaf-<key>.key` and `pki/<cert>.der`, in order.
    Legacy(&'static str, &'static [&'static str]),
}

/// A PFX in Key Vault's legacy form (HMAC-SHA-1, PBE-SHA1-3DES), empty
/// password, base64.
fn legacy_pfx(key: &str, certs: &[&str]) -> String {
    use base64::Engine as _;
    let pki = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/azure/pki");
    let pem = std::fs::read_to_string(pki.join(format!("leaf-{key}.key"))).unwrap();
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let key_der = base64::engine::general_purpose::STANDARD
        .decode(body)
        .unwrap();
    let certs: Vec<p12_keystore::Certificate> = certs
        .iter()
        .map(|c| {
            p12_keystore::Certificate::from_der(
                &std::fs::read(pki.join(format!("{c}.der"))).unwrap(),
            )
            .unwrap()
        })
        .collect();
    let chain = p12_keystore::PrivateKeyChain::new(
        vec![1u8; 20],
        p12_keystore::PrivateKey::from_der(&key_der).unwrap(),
        certs,
    );
    let mut store = p12_keystore::KeyStore::new();
    store.add_entry("1", p12_keystore::KeyStoreEntry::PrivateKeyChain(chain));
    let pfx = store
        .writer("")
        .encryption_algorithm(p12_keystore::EncryptionAlgorithm::PbeWithShaAnd3KeyTripleDesCbc)
        .mac_algorithm(p12_keystore::MacAlgorithm::HmacSha1)
        .write()
        .unwrap();
    base64::engine::general_purpose::STANDARD.encode(pfx)
}

/// Keys imported from the fixtures' JSON Web Keys.
const IMPORTED_KEYS: [(&str, &str); 4] = [
    ("fx-jwk-rsa", "jwk-rsa.json"),
    ("fx-jwk-ec-256", "jwk-ec-p256.json"),
    ("fx-jwk-ec-384", "jwk-ec-p384.json"),
    ("fx-jwk-ec-521", "jwk-ec-p521.json"),
];
/// Certificates whose backing secret is `application/x-pem-file`.
const PEM_BACKED: [&str; 3] = ["gen-pem-rsa", "gen-pem-ec", "fx-pem-rsa"];
const GENERATED_CERTS: [&str; 4] = ["gen-pfx-rsa", "gen-pfx-ec", "gen-pem-rsa", "gen-pem-ec"];
const GENERATED_KEYS: [&str; 4] = ["gen-rsa-2048", "gen-rsa-3072", "gen-ec-256", "gen-ec-384"];

/// One entry of `objects`.
fn object(fields: &[(&str, &str)]) -> String {
    let mut text = String::from("    - |\n");
    for (k, v) in fields {
        text.push_str(&format!("      {k}: {v}\n"));
    }
    text
}

/// Every object type and format: secrets (plain, pinned, history, base64,
/// hex, JSON, empty, file mode), certificate-backed secrets as PEM, as PFX
/// text and as binary PFX, certificates, keys (generated, imported, and the
/// keys behind certificates).
fn all_objects() -> String {
    let mut objects = String::new();
    for fields in [
        vec![("objectName", "plain"), ("objectType", "secret")],
        vec![
            ("objectName", "plain"),
            ("objectAlias", "plain-0400"),
            ("objectType", "secret"),
            ("filePermission", "\"0400\""),
        ],
        vec![("objectName", "multi"), ("objectType", "secret")],
        vec![
            ("objectName", "multi"),
            ("objectAlias", "multi-b"),
            ("objectType", "secret"),
            ("objectVersion", "0000000000000000000000000000000b"),
        ],
        vec![
            ("objectName", "multi"),
            ("objectAlias", "multi-history"),
            ("objectType", "secret"),
            ("objectVersionHistory", "2"),
        ],
        vec![
            ("objectName", "multi"),
            ("objectAlias", "multi-all"),
            ("objectType", "secret"),
            ("objectVersionHistory", "10"),
        ],
        vec![
            ("objectName", "multi"),
            ("objectAlias", "multi-from-d"),
            ("objectType", "secret"),
            ("objectVersion", "0000000000000000000000000000000d"),
            ("objectVersionHistory", "10"),
        ],
        vec![
            ("objectName", "binary-b64"),
            ("objectType", "secret"),
            ("objectEncoding", "base64"),
        ],
        vec![
            ("objectName", "binary-hex"),
            ("objectType", "secret"),
            ("objectEncoding", "hex"),
        ],
        vec![
            ("objectName", "binary-b64"),
            ("objectAlias", "b64-as-text"),
            ("objectType", "secret"),
        ],
        vec![("objectName", "json"), ("objectType", "secret")],
        vec![("objectName", "empty"), ("objectType", "secret")],
    ] {
        objects.push_str(&object(&fields));
    }
    let certs: Vec<&str> = GENERATED_CERTS
        .iter()
        .copied()
        .chain(IMPORTED_CERTS.iter().map(|c| c.0))
        .collect();
    for name in &certs {
        let pem = format!("{name}.secret.pem");
        let pfx = format!("{name}.secret.pfx.b64");
        let bin = format!("{name}.secret.pfx");
        let cert = format!("{name}.cert.pem");
        let key = format!("{name}.key.pem");
        objects.push_str(&object(&[
            ("objectName", name),
            ("objectAlias", &pem),
            ("objectType", "secret"),
        ]));
        objects.push_str(&object(&[
            ("objectName", name),
            ("objectAlias", &pfx),
            ("objectType", "secret"),
            ("objectFormat", "pfx"),
        ]));
        // A PEM-backed certificate's value is PEM text, which base64
        // decoding refuses (on every side).
        if !PEM_BACKED.contains(name) {
            objects.push_str(&object(&[
                ("objectName", name),
                ("objectAlias", &bin),
                ("objectType", "secret"),
                ("objectFormat", "pfx"),
                ("objectEncoding", "base64"),
            ]));
        }
        objects.push_str(&object(&[
            ("objectName", name),
            ("objectAlias", &cert),
            ("objectType", "cert"),
        ]));
        objects.push_str(&object(&[
            ("objectName", name),
            ("objectAlias", &key),
            ("objectType", "key"),
        ]));
    }
    for name in GENERATED_KEYS
        .iter()
        .chain(IMPORTED_KEYS.iter().map(|k| &k.0))
    {
        objects.push_str(&object(&[("objectName", name), ("objectType", "key")]));
    }
    objects
}

fn indent(text: &str, by: usize) -> String {
    text.lines()
        .map(|l| format!("{}{l}\n", " ".repeat(by)))
        .collect()
}

/// The class of every object, read with the node's managed identity (IMDS),
/// with two Secrets to sync: an Opaque one from a plain secret and a
/// history slot, and `kubernetes.io/tls` ones from a PFX and a PEM
/// certificate-backed secret.
fn all_objects_class() -> String {
    format!(
        "apiVersion: secrets-store.csi.x-k8s.io/v1
kind: SecretProviderClass
metadata:
  name: all-objects
spec:
  provider: azure
  secretObjects:
  - secretName: all-opaque
    type: Opaque
    labels:
      origin: peers-test
    data:
    - objectName: plain
      key: plain
    - objectName: multi-history/1
      key: history-1
    - objectName: binary-b64
      key: binary
  - secretName: tls-from-pfx
    type: kubernetes.io/tls
    data:
    - objectName: fx-rsa-chain.secret.pem
      key: tls.key
    - objectName: fx-rsa-chain.secret.pem
      key: tls.crt
  - secretName: tls-from-pem
    type: kubernetes.io/tls
    data:
    - objectName: gen-pem-ec.secret.pem
      key: tls.key
    - objectName: gen-pem-ec.secret.pem
      key: tls.crt
  parameters:
    keyvaultName: {VAULT}
    tenantId: {TENANT}
    useVMManagedIdentity: \"true\"
    userAssignedIdentityID: {NODE_IDENTITY}
    objects: |
      array:
{}",
        indent(&all_objects(), 4)
    )
}

/// A class read with a service principal (nodePublishSecretRef): Entra ID's
/// token endpoint instead of IMDS.
fn service_principal_class() -> String {
    format!(
        "apiVersion: secrets-store.csi.x-k8s.io/v1
kind: SecretProviderClass
metadata:
  name: service-principal
spec:
  provider: azure
  parameters:
    keyvaultName: {VAULT}
    tenantID: {TENANT}
    objects: |
      array:
{}",
        indent(
            &[
                object(&[("objectName", "plain"), ("objectType", "secret")]),
                object(&[
                    ("objectName", "gen-pfx-ec"),
                    ("objectAlias", "tls.pem"),
                    ("objectType", "secret"),
                ]),
                object(&[("objectName", "gen-rsa-2048"), ("objectType", "key")]),
            ]
            .concat(),
            4
        )
    )
}

/// A PFX in OpenSSL 3's default form, which upstream's provider refuses.
fn modern_pfx_class() -> String {
    format!(
        "apiVersion: secrets-store.csi.x-k8s.io/v1
kind: SecretProviderClass
metadata:
  name: modern-pfx
spec:
  provider: azure
  parameters:
    keyvaultName: {VAULT}
    tenantId: {TENANT}
    useVMManagedIdentity: \"true\"
    userAssignedIdentityID: {NODE_IDENTITY}
    objects: |
      array:
{}",
        indent(
            &object(&[
                ("objectName", "fx-modern"),
                ("objectAlias", "fx-modern.pem"),
                ("objectType", "secret"),
            ]),
            4
        )
    )
}

fn pod_of(class: &str) -> Pod {
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

/// One side of the comparison: a node plugin, its namespace and its pods.
struct Side {
    peer: Peer,
    node: String,
    plugin: NodePlugin,
    kubelet: Kubelet,
    namespace: String,
    /// class → the pod created for it (with its uid).
    pods: BTreeMap<String, Pod>,
}

const CLASSES: [&str; 3] = ["azure-kvname", "all-objects", "service-principal"];

fn extras(class: &str) -> PublishExtras {
    let mut extras = PublishExtras::default();
    if class == "service-principal" {
        extras
            .secrets
            .insert("clientid".into(), SP_CLIENT_ID.into());
        extras
            .secrets
            .insert("clientsecret".into(), SP_SECRET.into());
    }
    extras
}

impl Side {
    async fn publish_all(&mut self) {
        for (class, pod) in &self.pods {
            self.kubelet
                .publish(pod, VOLUME, &extras(class))
                .await
                .unwrap_or_else(|e| {
                    panic!(
                        "{}: publishing the pod of class {class}: {e}\n{}",
                        self.peer.label(),
                        self.logs()
                    )
                });
        }
    }

    fn files(&self) -> BTreeMap<String, Files> {
        self.pods
            .iter()
            .map(|(class, pod)| {
                let target = self.kubelet.target_path(pod, VOLUME);
                (class.clone(), read_volume(&target).unwrap())
            })
            .collect()
    }

    fn logs(&self) -> String {
        self.plugin
            .daemons
            .iter()
            .map(|d| format!("--- {} ({}):\n{}", d.name, d.log.display(), d.log_tail(30)))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

fn describe(files: &Files) -> String {
    files
        .iter()
        .map(|(p, (m, b))| format!("  {p} {m:o} {} bytes", b.len()))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The first difference between two volumes, or `None`.
fn difference(a: &Files, b: &Files) -> Option<String> {
    for (path, (mode, bytes)) in a {
        match b.get(path) {
            None => return Some(format!("{path}: only in the first")),
            Some((m, _)) if m != mode => {
                return Some(format!("{path}: mode {mode:o} vs {m:o}"));
            }
            Some((_, other)) if other != bytes => {
                return Some(format!(
                    "{path}: {} bytes vs {} bytes, differing from byte {}:\n{:?}\nvs\n{:?}",
                    bytes.len(),
                    other.len(),
                    bytes.iter().zip(other).take_while(|(x, y)| x == y).count(),
                    String::from_utf8_lossy(bytes),
                    String::from_utf8_lossy(other)
                ));
            }
            Some(_) => {}
        }
    }
    b.keys()
        .find(|p| !a.contains_key(*p))
        .map(|p| format!("{p}: only in the second"))
}

/// Upstream's files minus the extra history slot `multi-history/<N>` it
/// writes (see the module docs); panics if that slot is missing.
fn without_upstream_extra_slot(mut files: Files) -> Files {
    let extra = format!("multi-history/{HISTORY}");
    assert!(
        files.remove(&extra).is_some(),
        "upstream's Azure provider wrote no {extra}: its objectVersionHistory off-by-one is \
         gone; remove this exception (and the README's note)\n{}",
        describe(&files)
    );
    files
}

fn assert_same_volumes(
    reference: (&str, &BTreeMap<String, Files>),
    other: (&str, &BTreeMap<String, Files>),
    what: &str,
) {
    for (class, files) in reference.1 {
        let theirs = &other.1[class];
        if let Some(diff) = difference(files, theirs) {
            panic!(
                "{what}: class {class}: {} and {} differ: {diff}\n{}:\n{}\n{}:\n{}",
                reference.0,
                other.0,
                reference.0,
                describe(files),
                other.0,
                describe(theirs)
            );
        }
    }
}

/// Every side's files, with upstream's extra slot removed from the sides
/// that run the upstream provider.
fn comparable(side: &Side) -> BTreeMap<String, Files> {
    let mut files = side.files();
    if side.peer == Peer::Upstream {
        let all = files.remove("all-objects").unwrap();
        files.insert("all-objects".into(), without_upstream_extra_slot(all));
    }
    files
}

/// `status.objects` of the pod status of `class`. (Upstream's extra history
/// slot `secret/multi/2` shares its id with the slot of `multi-all` and
/// `multi-from-d`, whose version the status keeps: nothing to remove.)
async fn status_of(cluster: &Cluster, side: &Side, class: &str) -> Vec<(String, String)> {
    let pod = &side.pods[class];
    cluster
        .status_objects(
            &side.namespace,
            pod.metadata.name.as_deref().unwrap(),
            class,
        )
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("{}: no pod status for class {class}", side.peer.label()))
}

async fn wait_for_secret(
    cluster: &Cluster,
    side: &Side,
    name: &str,
    check: impl Fn(&BTreeMap<String, Vec<u8>>) -> bool,
) -> (String, BTreeMap<String, Vec<u8>>) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some((kind, data)) = cluster.secret_data(&side.namespace, name).await.unwrap()
            && check(&data)
        {
            return (kind, data);
        }
        assert!(
            Instant::now() < deadline,
            "{}: Secret {}/{name} not written as expected within 60 s\n{}",
            side.peer.label(),
            side.namespace,
            side.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn import_fixtures(control: &secretfs_e2e::Control) {
    let mut certs: Vec<(&str, String, &str)> = IMPORTED_CERTS
        .iter()
        .map(|(name, import, content_type)| {
            let value = match import {
                Import::File(file) => fixture(file),
                Import::Legacy(key, certs) => legacy_pfx(key, certs),
            };
            (*name, value, *content_type)
        })
        .collect();
    // OpenSSL 3's default PFX (PBES2 with AES, SHA-256 MAC), for the class
    // upstream's provider cannot read.
    certs.push((
        "fx-modern",
        fixture("pfx-rsa-chain.pfx.b64"),
        "application/x-pkcs12",
    ));
    for (name, value, content_type) in certs {
        control
            .import_certificate(
                VAULT,
                name,
                &CertificateImport {
                    value,
                    content_type: Some(content_type.to_owned()),
                    attributes: Default::default(),
                },
            )
            .unwrap_or_else(|e| panic!("importing {name}: {e}"));
    }
    for (name, file) in IMPORTED_KEYS {
        control
            .import_key(
                VAULT,
                name,
                &KeyImport {
                    jwk: serde_json::from_str(&fixture(file)).unwrap(),
                    attributes: Default::default(),
                },
            )
            .unwrap_or_else(|e| panic!("importing {file}: {e}"));
    }
}

fn secretfs_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_secretfs"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the peers, a control plane and the sandbox: scripts/peer-conformance.sh"]
async fn upstream_driver_with_secretfs_provider_matches_upstream_byte_for_byte() {
    let sandbox = Sandbox::require().unwrap();
    let work = tempfile::tempdir().unwrap();
    let ca = work.path().join("emulator-ca.pem");
    let emulator = sandbox
        .emulator(Seed::from_yaml(SEED).unwrap(), &ca)
        .await
        .unwrap();
    import_fixtures(emulator.control());
    let kubeconfig = crate::real_kube::kubeconfig();
    let cluster = Cluster::connect(&kubeconfig).await.unwrap();
    let suffix = format!("{:06x}", std::process::id() & 0xffffff);

    let mut sides = Vec::new();
    for (i, peer) in [Peer::Upstream, Peer::UpstreamWithOurs, Peer::Secretfs]
        .into_iter()
        .enumerate()
    {
        let node = format!("peers-node-{i}-{suffix}");
        let namespace = format!("peers-{i}-{suffix}");
        cluster.ensure_node(&node).await.unwrap();
        cluster.namespace(&namespace).await.unwrap();
        cluster.apply(&namespace, SEED_CLASS).await.unwrap();
        cluster
            .apply(&namespace, &all_objects_class())
            .await
            .unwrap();
        cluster
            .apply(&namespace, &service_principal_class())
            .await
            .unwrap();
        cluster
            .apply(&namespace, &modern_pfx_class())
            .await
            .unwrap();
        let paths = PluginPaths {
            peers_bin: peers_bin().unwrap(),
            secretfs: secretfs_bin(),
            kubeconfig: kubeconfig.clone(),
            ca: ca.clone(),
            dir: work.path().join(format!("node-{i}")),
        };
        let options = NodeOptions {
            node: node.clone(),
            // Republishes call the provider again after 1 s (upstream), the
            // node refreshes on `secretfs refresh` (its own interval is
            // never reached in this test).
            rotation: Some(if peer == Peer::Secretfs {
                Duration::from_secs(3600)
            } else {
                Duration::from_secs(1)
            }),
            sync_secrets: true,
            metrics_port: 18095 + i as u16,
            // The provider's cache (100 s by default) would hold the old
            // versions past the rotation below, a second later.
            provider_cache_max_age: Some(Duration::from_secs(1)),
        };
        let plugin = NodePlugin::start(peer, &paths, &options)
            .await
            .unwrap_or_else(|e| panic!("{}: {e:#}", peer.label()));
        let kubelet = Kubelet::connect(
            &plugin.csi_socket,
            &work.path().join(format!("kubelet-{i}")),
        )
        .await
        .unwrap();
        let mut pods = BTreeMap::new();
        for class in CLASSES {
            let pod = cluster
                .create_pod(&namespace, &pod_of(class), &format!("pod-{class}"), &node)
                .await
                .unwrap();
            pods.insert(class.to_owned(), pod);
        }
        sides.push(Side {
            peer,
            node: node.clone(),
            plugin,
            kubelet,
            namespace,
            pods,
        });
    }

    for side in &mut sides {
        side.publish_all().await;
    }
    let before: Vec<BTreeMap<String, Files>> = sides.iter().map(comparable).collect();
    // Sanity: the classes really produced what they name.
    let all = &sides[0].files()["all-objects"];
    assert!(
        all.len() > 60,
        "upstream mounted only {} files:\n{}",
        all.len(),
        describe(all)
    );
    assert_eq!(all["plain-0400"].0, 0o400);
    assert_eq!(all["multi-b"].1, b"multi-two");
    assert!(all.contains_key(&format!("multi-history/{HISTORY}")));
    assert_same_volumes(
        (sides[0].peer.label(), &before[0]),
        (sides[1].peer.label(), &before[1]),
        "at publish",
    );
    assert_same_volumes(
        (sides[0].peer.label(), &before[0]),
        (sides[2].peer.label(), &before[2]),
        "at publish",
    );
    for class in CLASSES {
        let reference = status_of(&cluster, &sides[0], class).await;
        for side in &sides[1..] {
            assert_eq!(
                status_of(&cluster, side, class).await,
                reference,
                "pod status objects of class {class}: {} vs {}",
                side.peer.label(),
                sides[0].peer.label()
            );
        }
    }
    let synced = ["sqlserver", "all-opaque", "tls-from-pfx", "tls-from-pem"];
    let mut secrets_before = Vec::new();
    for name in synced {
        let reference = wait_for_secret(&cluster, &sides[0], name, |_| true).await;
        for side in &sides[1..] {
            let theirs = wait_for_secret(&cluster, side, name, |_| true).await;
            assert_eq!(
                theirs,
                reference,
                "Secret {name}: {} vs {}",
                side.peer.label(),
                sides[0].peer.label()
            );
        }
        secrets_before.push(reference);
    }

    // Rotation: new versions of a plain secret, of the seed's secret and of
    // a generated certificate (its key and secret too).
    let control = emulator.control();
    control
        .set_secret(VAULT, "plain", "rotated plain value\n")
        .unwrap();
    control
        .set_secret("kv-demo", "sql-password", "rotated-sql-password")
        .unwrap();
    control
        .add_certificate_version(VAULT, "gen-pem-ec", None)
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for side in &mut sides {
        match side.peer {
            Peer::Secretfs => {
                let admin = side.plugin.admin_socket.clone().unwrap();
                let results = secretfs::cmd::admin::refresh(&admin, None).await.unwrap();
                assert_eq!(results.len(), CLASSES.len(), "{results:?}");
            }
            _ => side.publish_all().await,
        }
    }
    let after: Vec<BTreeMap<String, Files>> = sides.iter().map(comparable).collect();
    for (side, files) in sides.iter().zip(&after) {
        assert_eq!(
            files["all-objects"]["plain"].1,
            b"rotated plain value\n",
            "{}: the rotated secret did not reach the volume\n{}",
            side.peer.label(),
            side.logs()
        );
        assert_eq!(
            files["azure-kvname"]["SECRET_1"].1,
            b"rotated-sql-password",
            "{}",
            side.peer.label()
        );
        assert_ne!(
            files["all-objects"]["gen-pem-ec.cert.pem"].1,
            before[0]["all-objects"]["gen-pem-ec.cert.pem"].1
        );
    }
    assert_same_volumes(
        (sides[0].peer.label(), &after[0]),
        (sides[1].peer.label(), &after[1]),
        "after rotation",
    );
    assert_same_volumes(
        (sides[0].peer.label(), &after[0]),
        (sides[2].peer.label(), &after[2]),
        "after rotation",
    );
    for class in CLASSES {
        let reference = status_of(&cluster, &sides[0], class).await;
        for side in &sides[1..] {
            assert_eq!(
                status_of(&cluster, side, class).await,
                reference,
                "pod status objects of class {class} after rotation: {} vs {}",
                side.peer.label(),
                sides[0].peer.label()
            );
        }
    }
    for (name, before) in synced.iter().zip(&secrets_before) {
        if *name == "tls-from-pfx" {
            continue; // its certificate did not change
        }
        let reference = wait_for_secret(&cluster, &sides[0], name, |data| *data != before.1).await;
        for side in &sides[1..] {
            let theirs = wait_for_secret(&cluster, side, name, |data| *data == reference.1).await;
            assert_eq!(theirs.0, reference.0);
        }
    }

    // A PFX with a SHA-256 MAC and AES (OpenSSL 3's default): upstream's
    // provider (golang.org/x/crypto/pkcs12) refuses it and fails the whole
    // mount; secretfs reads it, as a PEM identical to what upstream writes
    // for the legacy form of the same chain.
    let want = std::fs::read(
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/azure/expected/pfx-rsa-chain.pem"),
    )
    .unwrap();
    assert_eq!(
        before[0]["all-objects"]["fx-rsa-chain.secret.pem"].1, want,
        "upstream's PEM of the legacy PFX of the same chain"
    );
    for side in &mut sides {
        let pod = cluster
            .create_pod(
                &side.namespace,
                &pod_of("modern-pfx"),
                "pod-modern-pfx",
                &side.node.clone(),
            )
            .await
            .unwrap();
        let result = side
            .kubelet
            .publish(&pod, VOLUME, &PublishExtras::default())
            .await;
        match side.peer {
            Peer::Upstream => {
                let error = result
                    .expect_err("upstream's provider read a PBES2/SHA-256 PFX")
                    .to_string();
                assert!(
                    error.contains("pkcs12: unknown digest algorithm"),
                    "{error}"
                );
            }
            _ => {
                let target = result.unwrap_or_else(|e| panic!("{}: {e}", side.peer.label()));
                assert_eq!(std::fs::read(target.join("fx-modern.pem")).unwrap(), want);
                side.kubelet.unpublish(&pod, VOLUME).await.unwrap();
            }
        }
    }

    for side in &mut sides {
        side.plugin.check_alive().unwrap();
        for pod in side.pods.values() {
            side.kubelet.unpublish(pod, VOLUME).await.unwrap();
        }
    }
}
