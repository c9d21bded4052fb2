//! One node in process for the hostile-input table: the CSI Node service
//! over the real [`Driver`], SecretProviderClasses read through the driver's
//! own watch ([`KubeSpcs`]) from a fake API server that also records every
//! write (pod statuses, Secrets), and three providers:
//! - `azure`: the built-in Azure provider against the Key Vault emulator over
//!   HTTPS (real host names resolved to the emulator, its CA trusted);
//! - `scripted`: an external provider on a unix socket answering whatever
//!   the case sets (any `MountResponse`, or a gRPC error);
//! - `kv-payload`: Key Vault secret bundles the emulator cannot hold
//!   (certificate-backed secrets with a broken PFX or PEM), given in the
//!   class and turned into files by the Azure provider's real conversion
//!   ([`object_content`]); only the HTTP fetch is skipped.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use secretfs::node::driver::{Driver, DriverConfig};
use secretfs::provider::azure::{
    AzureProvider, AzureProviderConfig, Fetched, FetchedSecret, HostOverride, RetryConfig,
    object_content, parse_objects,
};
use secretfs::provider::external::{ExternalConfig, ExternalRetry};
use secretfs::provider::{
    MountError, MountRequest, MountResponse, MountedFile, ObjectErrors, ObjectVersion, Provider,
    ProviderRegistry,
};
use secretfs::spc::KubeSpcs;
use secretfs_csi::NodeService;
use secretfs_csi::proto::csi::node_server::Node as _;
use secretfs_csi::proto::csi::{
    NodePublishVolumeRequest, NodeUnpublishVolumeRequest, VolumeCapability, volume_capability,
};
use secretfs_csi::proto::provider as pb;
use secretfs_csi::proto::provider::csi_driver_provider_server::{
    CsiDriverProvider, CsiDriverProviderServer,
};
use secretfs_e2e::fake_apiserver::{FakeApiServer, object_path};
use secretfs_e2e::{Emulator, EmulatorConfig, EmulatorHandle, Seed};
use secretfs_fuse::ReadMode;
use secretfs_secrets::SecretString;
use serde_json::{Value, json};

pub use secretfs_e2e::prereq::fuse_available;

pub const TENANT: &str = "9c0d2e7b-1a3f-4b6c-8d5e-7f1a2b3c4d5e";
/// The `app-sp` service principal of the conformance seed.
pub const APP_SP: &str = "3f8e2d1c-7b6a-4c5d-9e8f-1a2b3c4d5e6f";
pub const APP_SP_SECRET: &str = "emulator-test-client-secret";
/// The workload identity app (federated to `default/workload-sa`).
pub const WORKLOAD_APP: &str = "7c6b5a49-3e2d-4f1a-8b9c-0d1e2f3a4b5c";
pub const VAULT: &str = "kv-conformance";
/// The object the `good` class mounts as file `base`.
pub const BASE_OBJECT: &str = "hostile-base";
pub const BASE_VALUE: &str = "base-value-5c2e91d0";
pub const GOOD_CLASS: &str = "good";
pub const POD: &str = "hostile-pod";
pub const SERVICE_ACCOUNT: &str = "workload-sa";
const VOLUME: &str = "secrets";

/// What the scripted provider answers to `Mount`.
#[derive(Debug, Clone)]
pub enum Reply {
    Response(pb::MountResponse),
    Status(tonic::Code, String),
}

#[derive(Debug, Clone)]
struct Scripted {
    reply: Arc<Mutex<Reply>>,
}

#[tonic::async_trait]
impl CsiDriverProvider for Scripted {
    async fn version(
        &self,
        _request: tonic::Request<pb::VersionRequest>,
    ) -> Result<tonic::Response<pb::VersionResponse>, tonic::Status> {
        Ok(tonic::Response::new(pb::VersionResponse {
            version: "v1alpha1".into(),
            runtime_name: "hostile".into(),
            runtime_version: "0".into(),
        }))
    }

    async fn mount(
        &self,
        _request: tonic::Request<pb::MountRequest>,
    ) -> Result<tonic::Response<pb::MountResponse>, tonic::Status> {
        let reply = self.reply.lock().unwrap().clone();
        match reply {
            Reply::Response(r) => Ok(tonic::Response::new(r)),
            Reply::Status(code, message) => Err(tonic::Status::new(code, message)),
        }
    }
}

/// `kv-payload`: parameters `objects` (as for Azure) and `bundle` (a Key
/// Vault `SecretBundle` as JSON: `value`, `contentType`, `kid`); every
/// object gets that bundle, converted by the Azure provider's code.
#[derive(Debug)]
struct PayloadProvider;

#[async_trait::async_trait]
impl Provider for PayloadProvider {
    fn name(&self) -> &str {
        "kv-payload"
    }

    async fn mount(&self, request: &MountRequest) -> Result<MountResponse, MountError> {
        let param = |k: &str| request.parameters.get(k).map_or("", String::as_str);
        let parsed = parse_objects(param("objects"))
            .map_err(|e| MountError::config(e.kind(), e.to_string()))?;
        let bundle: Value = serde_json::from_str(param("bundle")).expect("bundle JSON");
        let text = |k: &str| bundle.get(k).and_then(Value::as_str).map(str::to_owned);
        let fetched = Fetched::Secret(FetchedSecret {
            value: text("value").map(SecretString::from),
            content_type: text("contentType"),
            kid: text("kid"),
        });
        let mut response = MountResponse::default();
        let mut errors = ObjectErrors::new();
        for object in &parsed.objects {
            match object_content(object, &object.id(), &fetched) {
                Ok(content) => {
                    response.files.push(MountedFile {
                        path: object.file_name().to_owned(),
                        mode: object.file_permission.unwrap_or(request.default_mode),
                        contents: Arc::new(content.bytes),
                        object_id: object.id(),
                    });
                    response.versions.push(ObjectVersion {
                        id: object.id(),
                        version: "1".into(),
                    });
                }
                Err(e) => errors.push(e),
            }
        }
        if errors.is_empty() {
            Ok(response)
        } else {
            Err(MountError::Objects(errors))
        }
    }
}

/// The Azure provider aimed at `emu` (short deadlines: failing cases stay fast).
pub fn azure_config(emu: &EmulatorHandle) -> AzureProviderConfig {
    let addr = emu.https_addr();
    AzureProviderConfig {
        extra_ca_pem: Some(emu.ca_pem().to_owned()),
        resolve: vec![
            HostOverride::new("*.vault.azure.net", addr),
            HostOverride::new("login.microsoftonline.com", addr),
        ],
        vault_port: Some(addr.port()),
        authority_host: Some(emu.authority_url()),
        imds_url: emu.imds_url(),
        nmi_url: emu.imds_url(),
        deadline: Duration::from_secs(10),
        request_timeout: Duration::from_secs(5),
        retry: RetryConfig {
            max_attempts: 2,
            initial_backoff: Duration::from_millis(20),
            max_backoff: Duration::from_millis(50),
            max_retry_after: Duration::from_secs(1),
        },
        ..Default::default()
    }
}

/// The node, its fakes, and where kubelet would put volumes.
pub struct Node {
    pub emu: EmulatorHandle,
    pub api: FakeApiServer,
    pub driver: Arc<Driver>,
    scripted: Arc<Mutex<Reply>>,
    node: NodeService,
    kubelet: tempfile::TempDir,
    _providers: tempfile::TempDir,
    _scripted_task: tokio::task::JoinHandle<()>,
}

impl Node {
    pub async fn start() -> Node {
        let seed = Seed::from_yaml(include_str!("../../../e2e/seeds/conformance.yaml")).unwrap();
        let emu = Emulator::start(EmulatorConfig::with_seed(seed))
            .await
            .expect("emulator");
        emu.set_secret(VAULT, BASE_OBJECT, BASE_VALUE).unwrap();

        let api = FakeApiServer::start().await.expect("fake API server");
        api.put(
            "pods",
            json!({"apiVersion": "v1", "kind": "Pod",
                   "metadata": {"name": POD, "namespace": "default", "uid": "pod-uid"}}),
        );
        let config = kube::Config::new(api.url().parse().unwrap());
        let client = kube::Client::try_from(config).unwrap();

        let providers = tempfile::tempdir().unwrap();
        let reply = Arc::new(Mutex::new(Reply::Status(
            tonic::Code::Internal,
            "no reply set".into(),
        )));
        let listener = secretfs_csi::bind(&providers.path().join("scripted.sock")).unwrap();
        let service = Scripted {
            reply: reply.clone(),
        };
        let scripted_task = tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(CsiDriverProviderServer::new(service))
                .serve_with_incoming(tokio_stream::wrappers::UnixListenerStream::new(listener))
                .await;
        });

        let azure = AzureProvider::new(azure_config(&emu)).expect("azure provider");
        let registry = ProviderRegistry::new([
            Arc::new(azure) as Arc<dyn Provider>,
            Arc::new(PayloadProvider),
        ])
        .with_external(ExternalConfig {
            dirs: vec![providers.path().to_owned()],
            timeout: Duration::from_secs(5),
            retry: ExternalRetry {
                max_attempts: 2,
                initial_backoff: Duration::from_millis(20),
                max_backoff: Duration::from_millis(50),
                multiplier: 1.1,
            },
            ..ExternalConfig::default()
        });
        let driver = Driver::new(
            DriverConfig {
                node_name: "node-1".into(),
                read_mode: ReadMode::Atomic,
                rotation_interval: Duration::from_secs(120),
            },
            Arc::new(KubeSpcs::start(client.clone())),
            registry,
        )
        .with_syncer(Arc::new(secretfs::node::sync::Syncer::new(
            client, "node-1",
        )));
        let driver = Arc::new(driver);
        let node = NodeService::new("node-1", driver.clone());
        let me = Node {
            emu,
            api,
            driver,
            scripted: reply,
            node,
            kubelet: tempfile::tempdir().unwrap(),
            _providers: providers,
            _scripted_task: scripted_task,
        };
        me.add_class(
            GOOD_CLASS,
            azure_spec(&[(
                "objects",
                &objects(&[&format!(
                    "objectName: {BASE_OBJECT}\nobjectType: secret\nobjectAlias: base"
                )]),
            )]),
            "hostile-good",
            "base",
        );
        me
    }

    /// Creates SecretProviderClass `name` with `spec` (provider and
    /// parameters), syncing `file` to Secret `secret` key `value`.
    pub fn add_class(&self, name: &str, mut spec: Value, secret: &str, file: &str) {
        spec["secretObjects"] = json!([{
            "secretName": secret,
            "type": "Opaque",
            "data": [{"objectName": file, "key": "value"}],
        }]);
        self.api.put(
            "secretproviderclasses",
            json!({"apiVersion": "secrets-store.csi.x-k8s.io/v1", "kind": "SecretProviderClass",
                   "metadata": {"name": name, "namespace": "default"}, "spec": spec}),
        );
    }

    /// What the scripted provider answers from now on.
    pub fn script(&self, reply: Reply) {
        *self.scripted.lock().unwrap() = reply;
    }

    pub fn target(&self, uid: &str) -> PathBuf {
        self.kubelet.path().join(format!(
            "pods/{uid}/volumes/kubernetes.io~csi/{VOLUME}/mount"
        ))
    }

    /// What kubelet sends for pod `uid` naming `class`: pod info, the
    /// `app-sp` service principal as nodePublishSecretRef, read-only.
    /// The pod exists in the API server (the sync reads its owners), one
    /// per uid as in a cluster: `hostile-pod-<uid>`.
    pub fn request(&self, uid: &str, class: &str) -> NodePublishVolumeRequest {
        let pod = format!("{POD}-{}", uid.to_lowercase());
        self.api.put(
            "pods",
            json!({"apiVersion": "v1", "kind": "Pod",
                   "metadata": {"name": pod, "namespace": "default", "uid": uid}}),
        );
        let context: BTreeMap<&str, &str> = [
            ("csi.storage.k8s.io/pod.name", pod.as_str()),
            ("csi.storage.k8s.io/pod.namespace", "default"),
            ("csi.storage.k8s.io/pod.uid", uid),
            ("csi.storage.k8s.io/serviceAccount.name", SERVICE_ACCOUNT),
            ("csi.storage.k8s.io/ephemeral", "true"),
            ("secretProviderClass", class),
        ]
        .into();
        NodePublishVolumeRequest {
            volume_id: format!("csi-{uid}"),
            target_path: self.target(uid).to_string_lossy().into_owned(),
            volume_capability: Some(VolumeCapability {
                access_type: Some(volume_capability::AccessType::Mount(
                    volume_capability::MountVolume {
                        fs_type: String::new(),
                        mount_flags: Vec::new(),
                        volume_mount_group: String::new(),
                    },
                )),
                access_mode: Some(volume_capability::AccessMode {
                    mode: volume_capability::access_mode::Mode::SingleNodeWriter as i32,
                }),
            }),
            readonly: true,
            secrets: [("clientid", APP_SP), ("clientsecret", APP_SP_SECRET)]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
            volume_context: context
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
            ..Default::default()
        }
    }

    /// NodePublishVolume, as kubelet calls it (it creates the parent).
    pub async fn publish(&self, request: NodePublishVolumeRequest) -> Result<(), tonic::Status> {
        let target = PathBuf::from(&request.target_path);
        let plain = target
            .components()
            .all(|c| matches!(c, Component::RootDir | Component::Normal(_)));
        if plain
            && target.starts_with(self.kubelet.path())
            && let Some(parent) = target.parent()
        {
            let _ = std::fs::create_dir_all(parent);
        }
        self.node
            .node_publish_volume(tonic::Request::new(request))
            .await
            .map(|_| ())
    }

    pub async fn unpublish(&self, volume_id: &str, target: &Path) -> Result<(), tonic::Status> {
        self.node
            .node_unpublish_volume(tonic::Request::new(NodeUnpublishVolumeRequest {
                volume_id: volume_id.to_owned(),
                target_path: target.to_string_lossy().into_owned(),
            }))
            .await
            .map(|_| ())
    }

    /// How many writes (anything but GET) reached the API server.
    pub fn api_writes(&self) -> usize {
        self.api
            .requests()
            .iter()
            .filter(|r| r.method != "GET")
            .count()
    }

    /// Every path the API server was asked for.
    pub fn api_paths(&self) -> Vec<String> {
        self.api.requests().into_iter().map(|r| r.path).collect()
    }

    /// Key `value` of synced Secret `name`, decoded.
    pub fn synced_secret(&self, name: &str) -> Option<Vec<u8>> {
        use base64::Engine as _;
        let secret = self
            .api
            .get(&object_path("v1", "secrets", "default", name))?;
        let value = secret["data"]["value"].as_str()?;
        base64::engine::general_purpose::STANDARD.decode(value).ok()
    }
}

/// An Azure class spec for the conformance vault: `keyvaultName` and
/// `tenantID` set, then `params` (which may override them).
pub fn azure_spec(params: &[(&str, &str)]) -> Value {
    let mut parameters: BTreeMap<&str, &str> =
        [("keyvaultName", VAULT), ("tenantID", TENANT)].into();
    for (k, v) in params {
        parameters.insert(k, v);
    }
    json!({"provider": "azure", "parameters": parameters})
}

/// One object's fields: `defaults`, each replaced by or followed by the
/// `key: value` lines of `fields`.
pub fn object_yaml(defaults: &[(&str, &str)], fields: &str) -> String {
    let mut entries: Vec<(String, String)> = defaults
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    for line in fields.lines().filter(|l| !l.trim().is_empty()) {
        let (key, value) = line.split_once(':').expect("key: value");
        let value = value.trim().to_owned();
        match entries.iter_mut().find(|(k, _)| k == key) {
            Some(entry) => entry.1 = value,
            None => entries.push((key.to_owned(), value)),
        }
    }
    entries
        .iter()
        .map(|(k, v)| format!("{k}: {v}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The `objects` parameter holding these objects (each a YAML mapping).
pub fn objects(entries: &[&str]) -> String {
    let mut out = String::from("array:\n");
    for e in entries {
        out.push_str("  - |\n");
        for line in e.lines() {
            out.push_str("    ");
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

pub fn is_mounted(target: &Path) -> bool {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
    let wanted = target.to_string_lossy();
    mounts
        .lines()
        .any(|l| l.split(' ').nth(1) == Some(wanted.as_ref()))
}

/// Every file under `root`: relative path → bytes.
pub fn tree(root: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if std::fs::metadata(&path).unwrap().is_dir() {
                stack.push(path);
            } else {
                let rel = path
                    .strip_prefix(root)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                out.insert(rel, std::fs::read(&path).unwrap());
            }
        }
    }
    out
}
