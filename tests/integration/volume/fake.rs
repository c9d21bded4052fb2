//! A fake provider and a driver over real mounts, shared by the tests.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use secretfs::node::driver::{Driver, DriverConfig};
use secretfs::provider::{
    ErrorKind, MountError, MountRequest, MountResponse, MountedFile, ObjectError, ObjectErrors,
    ObjectVersion, Provider,
};
use secretfs::spc::SpcDir;
use secretfs_csi::{PublishRequest, UnpublishRequest, VolumeContext, VolumeManager, keys};
use secretfs_fuse::ReadMode;
use secretfs_secrets::{SecretBytes, SecretMap};

pub use secretfs_e2e::prereq::fuse_available;

/// Serves files named by parameters `file:<path>` with their values;
/// parameter `fail` makes it fail with that kind.
#[derive(Default)]
pub struct FakeProvider {
    pub calls: AtomicUsize,
    /// Path → new value (`None`: the object is gone), over the parameters.
    pub overrides: std::sync::Mutex<BTreeMap<String, Option<String>>>,
    /// Fail every call (a vault outage).
    pub fail: std::sync::atomic::AtomicBool,
    /// The `Retry-After` those failures carry (a throttling vault).
    pub retry_after: std::sync::Mutex<Option<std::time::Duration>>,
}

impl FakeProvider {
    /// The vault now holds `value` for the file at `path`.
    pub fn set(&self, path: &str, value: &str) {
        self.overrides
            .lock()
            .unwrap()
            .insert(path.to_owned(), Some(value.to_owned()));
    }
}

#[async_trait::async_trait]
impl Provider for FakeProvider {
    fn name(&self) -> &str {
        "fake"
    }

    fn plan(
        &self,
        request: &MountRequest,
    ) -> Option<Result<Vec<secretfs::provider::PlannedFile>, MountError>> {
        Some(Ok(request
            .parameters
            .keys()
            .filter_map(|k| k.strip_prefix("file:"))
            .map(|path| secretfs::provider::PlannedFile {
                path: path.to_owned(),
                mode: request.default_mode,
                object_id: format!("secret/{path}"),
                required: true,
            })
            .collect()))
    }

    async fn mount(&self, request: &MountRequest) -> Result<MountResponse, MountError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if self.fail.load(Ordering::SeqCst) {
            let retry_after = *self.retry_after.lock().unwrap();
            let errors: ObjectErrors =
                [
                    ObjectError::new("secret/SECRET_1", ErrorKind::Transient, "vault unreachable")
                        .with_retry_after(retry_after),
                ]
                .into_iter()
                .collect();
            return Err(MountError::Objects(errors));
        }
        if let Some(kind) = request.parameters.get("fail") {
            let kind = match kind.as_str() {
                "notfound" => ErrorKind::NotFound,
                "denied" => ErrorKind::Denied,
                _ => ErrorKind::Transient,
            };
            let errors: ObjectErrors = [ObjectError::new("secret/a", kind, "vault said no")]
                .into_iter()
                .collect();
            return Err(MountError::Objects(errors));
        }
        let mut response = MountResponse::default();
        let mut files: BTreeMap<String, Option<String>> = request
            .parameters
            .iter()
            .filter_map(|(k, v)| Some((k.strip_prefix("file:")?.to_owned(), Some(v.clone()))))
            .collect();
        files.extend(self.overrides.lock().unwrap().clone());
        for (path, value) in &files {
            if let Some(value) = value {
                response.files.push(MountedFile {
                    path: path.to_owned(),
                    mode: request.default_mode,
                    contents: Arc::new(SecretBytes::from_slice(value.as_bytes())),
                    object_id: format!("secret/{path}"),
                });
                response.versions.push(ObjectVersion {
                    id: format!("secret/{path}"),
                    version: "1".into(),
                });
            }
        }
        Ok(response)
    }
}

pub struct Setup {
    pub driver: Arc<Driver>,
    pub provider: Arc<FakeProvider>,
    pub kubelet: tempfile::TempDir,
    classes: tempfile::TempDir,
}

pub fn class(name: &str, provider: &str, parameters: &[(&str, &str)]) -> String {
    let params: BTreeMap<&str, &str> = parameters.iter().copied().collect();
    format!(
        "apiVersion: secrets-store.csi.x-k8s.io/v1\nkind: SecretProviderClass\nmetadata:\n  name: {name}\n  namespace: default\nspec:\n  provider: {provider}\n  parameters: {}\n---\n",
        serde_json::to_string(&params).unwrap()
    )
}

pub fn setup() -> Setup {
    setup_with(&[])
}

/// With extra classes (YAML documents).
pub fn setup_with(extra: &[String]) -> Setup {
    let classes = tempfile::tempdir().unwrap();
    let manifests = [
        class(
            "ok",
            "fake",
            &[("file:SECRET_1", "s3cr3t"), ("file:db/pass", "hunter2")],
        ),
        class("denied", "fake", &[("fail", "denied")]),
        class("elsewhere", "vault", &[]),
    ]
    .concat()
        + &extra.concat();
    std::fs::write(classes.path().join("classes.yaml"), manifests).unwrap();
    let provider = Arc::new(FakeProvider::default());
    let driver = Arc::new(Driver::new(
        DriverConfig {
            node_name: "node-1".into(),
            read_mode: ReadMode::Atomic,
            rotation_interval: std::time::Duration::from_secs(120),
        },
        Arc::new(SpcDir::new(classes.path())),
        [provider.clone() as Arc<dyn Provider>],
    ));
    Setup {
        driver,
        provider,
        kubelet: tempfile::tempdir().unwrap(),
        classes,
    }
}

impl Setup {
    /// Writes another manifest file into the class directory.
    pub fn write_manifest(&self, file: &str, text: &str) {
        std::fs::write(self.classes.path().join(file), text).unwrap();
    }

    /// Adds an annotation to class `name` (rewrites its manifest file).
    pub fn annotate_class(&self, name: &str, key: &str, value: &str) {
        let path = self.classes.path().join("classes.yaml");
        let text = std::fs::read_to_string(&path).unwrap();
        let needle = format!("  name: {name}\n");
        let text = text.replacen(
            &needle,
            &format!("{needle}  annotations: {{{key:?}: {value:?}}}\n"),
            1,
        );
        std::fs::write(path, text).unwrap();
    }

    pub fn target(&self, uid: &str) -> PathBuf {
        crate::kubelet::target_path(self.kubelet.path(), uid)
    }

    pub fn request(&self, uid: &str, class: &str) -> PublishRequest {
        PublishRequest {
            volume_id: format!("csi-{uid}"),
            target_path: self.target(uid),
            volume_context: VolumeContext::new(
                [
                    (keys::POD_NAME, "pod"),
                    (keys::POD_NAMESPACE, "default"),
                    (keys::POD_UID, uid),
                    (keys::SERVICE_ACCOUNT_NAME, "default"),
                    (keys::SECRET_PROVIDER_CLASS, class),
                ]
                .map(|(k, v)| (k.to_owned(), v.to_owned())),
            ),
            secrets: SecretMap::default(),
            mount_group: Some(2000),
            mount_flags: vec![],
        }
    }

    pub async fn unpublish(&self, uid: &str) {
        self.driver
            .unpublish(UnpublishRequest {
                volume_id: format!("csi-{uid}"),
                target_path: self.target(uid),
            })
            .await
            .unwrap();
    }
}

pub fn is_mounted(target: &Path) -> bool {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
    mounts
        .lines()
        .any(|l| l.split(' ').nth(1) == Some(target.to_str().unwrap()))
}
