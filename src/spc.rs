//! SecretProviderClass: the CRD types (group `secrets-store.csi.x-k8s.io`,
//! served as v1 and v1alpha1 with one schema) and where the driver reads
//! them from: the Kubernetes API, or a directory of manifests (`--spc-dir`)
//! when there is no cluster.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use secretfs_csi::Readiness;

/// The CRD group.
pub const GROUP: &str = "secrets-store.csi.x-k8s.io";

/// `SecretProviderClass.spec` (identical in v1 and v1alpha1).
#[derive(CustomResource, Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "secrets-store.csi.x-k8s.io",
    version = "v1",
    kind = "SecretProviderClass",
    plural = "secretproviderclasses",
    namespaced
)]
#[serde(rename_all = "camelCase")]
pub struct SecretProviderClassSpec {
    /// Provider name (`azure`, or an external provider's socket name).
    #[serde(default)]
    pub provider: String,
    /// Provider parameters, opaque to the driver.
    #[serde(default)]
    pub parameters: BTreeMap<String, String>,
    /// Kubernetes Secrets to mirror from the mounted files.
    #[serde(default)]
    pub secret_objects: Vec<SecretObject>,
}

/// One Kubernetes Secret to keep in sync with mounted files.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretObject {
    #[serde(default)]
    pub secret_name: String,
    #[serde(default, rename = "type")]
    pub secret_type: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    #[serde(default)]
    pub data: Vec<SecretObjectData>,
}

/// One key of a synced Secret: which mounted file (alias or vault object
/// name) goes under which key.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretObjectData {
    #[serde(default)]
    pub object_name: String,
    #[serde(default)]
    pub key: String,
}

/// Why a SecretProviderClass could not be read.
#[derive(Debug, Error)]
pub enum SpcError {
    #[error("cannot read SecretProviderClass manifests in {path:?}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path:?}, document {document}: {message}")]
    Parse {
        path: PathBuf,
        document: usize,
        message: String,
    },
    #[error("the Kubernetes API is unavailable: {0}")]
    Api(String),
}

/// Where SecretProviderClasses come from.
#[async_trait::async_trait]
pub trait SpcSource: Send + Sync + 'static {
    /// The class `name` in `namespace`, or `None` if there is none.
    async fn get(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<SecretProviderClass>, SpcError>;
    /// Whether lookups can be answered now.
    async fn readiness(&self) -> Readiness;
}

/// Manifests in a directory (`*.yaml`, `*.yml`, `*.json`, several documents
/// per file allowed), read again on every lookup so edits apply at once.
/// A manifest without a namespace is in `default`.
#[derive(Debug, Clone)]
pub struct SpcDir {
    dir: PathBuf,
}

impl SpcDir {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// Every SecretProviderClass in the directory.
    pub fn load(&self) -> Result<Vec<SecretProviderClass>, SpcError> {
        let read = |source| SpcError::Read {
            path: self.dir.clone(),
            source,
        };
        let mut paths: Vec<PathBuf> = std::fs::read_dir(&self.dir)
            .map_err(read)?
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|p| {
                matches!(
                    p.extension().and_then(|e| e.to_str()),
                    Some("yaml" | "yml" | "json")
                )
            })
            .collect();
        paths.sort();
        let mut classes = Vec::new();
        for path in paths {
            let text = std::fs::read_to_string(&path).map_err(|source| SpcError::Read {
                path: path.clone(),
                source,
            })?;
            classes.extend(parse_manifests(&path, &text)?);
        }
        Ok(classes)
    }
}

/// The SecretProviderClasses among the YAML documents of `text`; other
/// kinds are skipped.
pub fn parse_manifests(path: &Path, text: &str) -> Result<Vec<SecretProviderClass>, SpcError> {
    let mut classes = Vec::new();
    for (index, document) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let parse_error = |message: String| SpcError::Parse {
            path: path.to_owned(),
            document: index + 1,
            message,
        };
        let value =
            serde_yaml::Value::deserialize(document).map_err(|e| parse_error(e.to_string()))?;
        if value.is_null() {
            continue;
        }
        let field = |name: &str| value.get(name).and_then(|v| v.as_str()).unwrap_or("");
        if field("kind") != "SecretProviderClass" {
            continue;
        }
        let api_version = field("apiVersion");
        if api_version != format!("{GROUP}/v1") && api_version != format!("{GROUP}/v1alpha1") {
            return Err(parse_error(format!(
                "apiVersion {api_version:?} is not served: use {GROUP}/v1 (or the deprecated {GROUP}/v1alpha1)"
            )));
        }
        let name = value
            .get("metadata")
            .and_then(|m| m.get("name"))
            .and_then(|n| n.as_str());
        if name.unwrap_or("").is_empty() {
            return Err(parse_error("metadata.name is missing".into()));
        }
        let mut class: SecretProviderClass = serde_yaml::from_value(value)
            .map_err(|e| parse_error(format!("invalid SecretProviderClass: {e}")))?;
        class
            .metadata
            .namespace
            .get_or_insert_with(|| "default".to_owned());
        classes.push(class);
    }
    Ok(classes)
}

#[async_trait::async_trait]
impl SpcSource for SpcDir {
    async fn get(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<SecretProviderClass>, SpcError> {
        let this = self.clone();
        let all = tokio::task::spawn_blocking(move || this.load())
            .await
            .map_err(|e| SpcError::Api(e.to_string()))??;
        Ok(all.into_iter().find(|c| {
            c.metadata.namespace.as_deref() == Some(namespace)
                && c.metadata.name.as_deref() == Some(name)
        }))
    }

    async fn readiness(&self) -> Readiness {
        if self.dir.is_dir() {
            Readiness::Ready
        } else {
            Readiness::NotReady(format!("--spc-dir {:?} is not a directory", self.dir))
        }
    }
}

/// SecretProviderClasses from the Kubernetes API: a watch cache of every
/// class in the cluster (classes are looked up in the pod's namespace), with
/// a live read when a class is not in the cache yet (just created).
#[derive(Clone)]
pub struct KubeSpcs {
    api: kube::Api<SecretProviderClass>,
    store: kube::runtime::reflector::Store<SecretProviderClass>,
    synced: Arc<AtomicBool>,
    /// Longest wait for a live read (kube's client retries a 503 or 429 on
    /// its own for minutes, and has no read timeout).
    timeout: std::time::Duration,
}

/// How long a publish waits for a SecretProviderClass the watch cache does
/// not hold yet: well inside kubelet's NodePublish deadline (~2 m), which
/// the provider's own deadline (100 s) shares.
pub const DEFAULT_LIVE_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

impl std::fmt::Debug for KubeSpcs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeSpcs")
            .field("cached", &self.store.state().len())
            .field("synced", &self.synced.load(Ordering::Relaxed))
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl KubeSpcs {
    /// Starts watching; must be called inside a Tokio runtime.
    pub fn start(client: kube::Client) -> Self {
        use futures::StreamExt;
        use kube::runtime::{WatchStreamExt, reflector, watcher};

        let api = kube::Api::<SecretProviderClass>::all(client);
        let (store, writer) = reflector::store();
        let synced = Arc::new(AtomicBool::new(false));
        let stream = reflector(writer, watcher(api.clone(), watcher::Config::default()))
            .default_backoff()
            .applied_objects();
        tokio::spawn(async move {
            futures::pin_mut!(stream);
            while let Some(event) = stream.next().await {
                if let Err(err) = event {
                    tracing::warn!(error = %err, "watching SecretProviderClasses");
                }
            }
        });
        let ready = store.clone();
        let flag = synced.clone();
        tokio::spawn(async move {
            if ready.wait_until_ready().await.is_ok() {
                flag.store(true, Ordering::Relaxed);
            }
        });
        Self {
            api,
            store,
            synced,
            timeout: DEFAULT_LIVE_READ_TIMEOUT,
        }
    }

    /// Sets the longest wait for a live read (default
    /// [`DEFAULT_LIVE_READ_TIMEOUT`]).
    pub fn with_timeout(mut self, timeout: std::time::Duration) -> Self {
        self.timeout = timeout;
        self
    }
}

#[async_trait::async_trait]
impl SpcSource for KubeSpcs {
    async fn get(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<SecretProviderClass>, SpcError> {
        let key = kube::runtime::reflector::ObjectRef::new(name).within(namespace);
        if let Some(class) = self.store.get(&key) {
            return Ok(Some((*class).clone()));
        }
        let api =
            kube::Api::<SecretProviderClass>::namespaced(self.api.clone().into_client(), namespace);
        match tokio::time::timeout(self.timeout, api.get_opt(name)).await {
            Ok(result) => result.map_err(|e| {
                SpcError::Api(format!(
                    "reading SecretProviderClass {namespace}/{name} (not in the watch cache yet): {e}"
                ))
            }),
            Err(_) => Err(SpcError::Api(format!(
                "reading SecretProviderClass {namespace}/{name} (not in the watch cache yet): no answer within {:?}",
                self.timeout
            ))),
        }
    }

    async fn readiness(&self) -> Readiness {
        if self.synced.load(Ordering::Relaxed) {
            Readiness::Ready
        } else {
            Readiness::NotReady("the SecretProviderClass watch has not listed yet".into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEED: &str = include_str!("../tests/fixtures/seed/secretproviderclass.yaml");

    #[test]
    fn the_seed_manifest_parses_unchanged() {
        let classes = parse_manifests(Path::new("seed.yaml"), SEED).unwrap();
        assert_eq!(classes.len(), 1);
        let spc = &classes[0];
        assert_eq!(spc.metadata.name.as_deref(), Some("azure-kvname"));
        assert_eq!(spc.metadata.namespace.as_deref(), Some("default"));
        assert_eq!(spc.spec.provider, "azure");
        assert_eq!(spc.spec.parameters["keyvaultName"], "kv-demo");
        assert!(spc.spec.parameters["objects"].contains("objectAlias: SECRET_1"));
        let synced = &spc.spec.secret_objects[0];
        assert_eq!(synced.secret_name, "sqlserver");
        assert_eq!(synced.secret_type, "Opaque");
        assert_eq!(synced.data[0].object_name, "SECRET_1");
        assert_eq!(synced.data[0].key, "dbpassword");
    }

    #[test]
    fn other_kinds_are_skipped_and_namespace_defaults() {
        let text = "kind: Pod\napiVersion: v1\nmetadata: {name: p}\n---\n\
                    apiVersion: secrets-store.csi.x-k8s.io/v1\nkind: SecretProviderClass\n\
                    metadata: {name: x}\nspec: {provider: azure}\n";
        let classes = parse_manifests(Path::new("m.yaml"), text).unwrap();
        assert_eq!(classes.len(), 1);
        assert_eq!(classes[0].metadata.namespace.as_deref(), Some("default"));
        assert!(classes[0].spec.parameters.is_empty());
    }

    #[test]
    fn bad_documents_name_the_file_document_and_fix() {
        let text = "apiVersion: secrets-store.csi.x-k8s.io/v2\nkind: SecretProviderClass\nmetadata: {name: x}\n";
        let err = parse_manifests(Path::new("bad.yaml"), text)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("bad.yaml") && err.contains("document 1") && err.contains("/v1"),
            "{err}"
        );
        let text =
            "apiVersion: secrets-store.csi.x-k8s.io/v1\nkind: SecretProviderClass\nmetadata: {}\n";
        let err = parse_manifests(Path::new("bad.yaml"), text)
            .unwrap_err()
            .to_string();
        assert!(err.contains("metadata.name"), "{err}");
        let text = "apiVersion: secrets-store.csi.x-k8s.io/v1\nkind: SecretProviderClass\nmetadata: {name: x}\nspec: {parameters: [1]}\n";
        let err = parse_manifests(Path::new("bad.yaml"), text)
            .unwrap_err()
            .to_string();
        assert!(err.contains("invalid SecretProviderClass"), "{err}");
    }

    #[tokio::test]
    async fn a_directory_source_finds_classes_by_namespace_and_name() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("spc.yaml"), SEED).unwrap();
        std::fs::write(dir.path().join("notes.txt"), "ignored").unwrap();
        let source = SpcDir::new(dir.path());
        assert_eq!(source.readiness().await, Readiness::Ready);
        assert!(
            source
                .get("default", "azure-kvname")
                .await
                .unwrap()
                .is_some()
        );
        assert!(source.get("other", "azure-kvname").await.unwrap().is_none());
        assert!(source.get("default", "nope").await.unwrap().is_none());
        let missing = SpcDir::new(dir.path().join("missing"));
        assert!(matches!(missing.readiness().await, Readiness::NotReady(_)));
    }
}
