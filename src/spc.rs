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
    #[error("{path:?}, document {document}{}: {message}", line.map(|l| format!(", line {l}")).unwrap_or_default())]
    Parse {
        path: PathBuf,
        document: usize,
        /// The line of the problem, when the YAML parser knows it.
        line: Option<usize>,
        message: String,
    },
    /// A class not found in any readable manifest, while some manifest
    /// could not be read: it may be the one that defines it.
    #[error(
        "SecretProviderClass {namespace}/{name} is not in --spc-dir, and {problems} could not be read (it may define it): fix the file"
    )]
    MaybeInBrokenFile {
        namespace: String,
        name: String,
        /// Each unreadable file with its line and reason.
        problems: String,
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

    /// Every SecretProviderClass in the directory. One bad file fails the
    /// whole load: see [`SpcDir::load_each`] for what the driver uses.
    pub fn load(&self) -> Result<Vec<SecretProviderClass>, SpcError> {
        let loaded = self.load_each()?;
        match loaded.problems.into_iter().next() {
            Some(problem) => Err(problem.error),
            None => Ok(loaded.classes),
        }
    }

    /// Every SecretProviderClass of every manifest that reads, and what is
    /// wrong with the others: one bad document fails only the class it
    /// defines (when its name can be read), one bad file only the classes
    /// that are not found elsewhere.
    pub fn load_each(&self) -> Result<LoadedClasses, SpcError> {
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
        let mut loaded = LoadedClasses::default();
        for path in paths {
            let text = match std::fs::read_to_string(&path) {
                Ok(text) => text,
                Err(source) => {
                    loaded.problems.push(ManifestProblem {
                        class: None,
                        error: SpcError::Read { path, source },
                    });
                    continue;
                }
            };
            let (classes, problems) = parse_manifests_each(&path, &text);
            loaded.classes.extend(classes);
            loaded.problems.extend(problems);
        }
        Ok(loaded)
    }
}

/// What [`SpcDir::load_each`] found.
#[derive(Debug, Default)]
pub struct LoadedClasses {
    pub classes: Vec<SecretProviderClass>,
    pub problems: Vec<ManifestProblem>,
}

/// A manifest, or one document of it, that could not be read.
#[derive(Debug)]
pub struct ManifestProblem {
    /// `(namespace, name)` of the class the document defines, when that
    /// much could be read.
    pub class: Option<(String, String)>,
    pub error: SpcError,
}

impl LoadedClasses {
    /// The class `namespace/name`: found in a readable document, or the
    /// error of the document that defines it, or, when it is nowhere and
    /// some manifest could not be read at all, an error naming those.
    pub fn find(
        self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<SecretProviderClass>, SpcError> {
        if let Some(class) = self.classes.into_iter().find(|c| {
            c.metadata.namespace.as_deref() == Some(namespace)
                && c.metadata.name.as_deref() == Some(name)
        }) {
            return Ok(Some(class));
        }
        let mut unnamed = Vec::new();
        for problem in self.problems {
            match &problem.class {
                Some((ns, n)) if ns == namespace && n == name => return Err(problem.error),
                Some(_) => {}
                None => unnamed.push(problem.error.to_string()),
            }
        }
        if unnamed.is_empty() {
            Ok(None)
        } else {
            Err(SpcError::MaybeInBrokenFile {
                namespace: namespace.to_owned(),
                name: name.to_owned(),
                problems: unnamed.join("; "),
            })
        }
    }
}

/// The SecretProviderClasses among the YAML documents of `text`; other
/// kinds are skipped. The first bad document fails all.
pub fn parse_manifests(path: &Path, text: &str) -> Result<Vec<SecretProviderClass>, SpcError> {
    let (classes, problems) = parse_manifests_each(path, text);
    match problems.into_iter().next() {
        Some(problem) => Err(problem.error),
        None => Ok(classes),
    }
}

/// [`parse_manifests`], keeping the classes of the good documents and a
/// problem per bad one (a YAML syntax error ends the file: what follows it
/// cannot be read).
pub fn parse_manifests_each(
    path: &Path,
    text: &str,
) -> (Vec<SecretProviderClass>, Vec<ManifestProblem>) {
    let mut classes = Vec::new();
    let mut problems = Vec::new();
    for (index, document) in serde_yaml::Deserializer::from_str(text).enumerate() {
        match parse_document(path, index, document) {
            Ok(Some(class)) => classes.push(class),
            Ok(None) => {}
            Err(problem) => {
                let syntax = problem.class.is_none();
                problems.push(*problem);
                if syntax {
                    break;
                }
            }
        }
    }
    (classes, problems)
}

/// One YAML document: a class, `None` for another kind, or the problem.
fn parse_document(
    path: &Path,
    index: usize,
    document: serde_yaml::Deserializer<'_>,
) -> Result<Option<SecretProviderClass>, Box<ManifestProblem>> {
    let error = |line: Option<usize>, message: String| SpcError::Parse {
        path: path.to_owned(),
        document: index + 1,
        line,
        message,
    };
    let value = serde_yaml::Value::deserialize(document).map_err(|e| {
        Box::new(ManifestProblem {
            class: None,
            error: error(e.location().map(|l| l.line()), e.to_string()),
        })
    })?;
    if value.is_null() {
        return Ok(None);
    }
    let name = value
        .get("metadata")
        .and_then(|m| m.get("name"))
        .and_then(|n| n.as_str())
        .filter(|n| !n.is_empty())
        .map(|name| {
            let namespace = value
                .get("metadata")
                .and_then(|m| m.get("namespace"))
                .and_then(|n| n.as_str())
                .unwrap_or("default");
            (namespace.to_owned(), name.to_owned())
        });
    parse_value(value).map_err(|message| {
        Box::new(ManifestProblem {
            error: error(None, message),
            class: name,
        })
    })
}

/// A document's value as a class (`None` for another kind), or what is
/// wrong with it.
fn parse_value(value: serde_yaml::Value) -> Result<Option<SecretProviderClass>, String> {
    let field = |name: &str| value.get(name).and_then(|v| v.as_str()).unwrap_or("");
    if field("kind") != "SecretProviderClass" {
        return Ok(None);
    }
    let api_version = field("apiVersion");
    if api_version != format!("{GROUP}/v1") && api_version != format!("{GROUP}/v1alpha1") {
        return Err(format!(
            "apiVersion {api_version:?} is not served: use {GROUP}/v1 (or the deprecated {GROUP}/v1alpha1)"
        ));
    }
    let name = value
        .get("metadata")
        .and_then(|m| m.get("name"))
        .and_then(|n| n.as_str());
    if name.unwrap_or("").is_empty() {
        return Err("metadata.name is missing".into());
    }
    let mut class: SecretProviderClass =
        serde_yaml::from_value(value).map_err(|e| format!("invalid SecretProviderClass: {e}"))?;
    class
        .metadata
        .namespace
        .get_or_insert_with(|| "default".to_owned());
    Ok(Some(class))
}

#[async_trait::async_trait]
impl SpcSource for SpcDir {
    async fn get(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<SecretProviderClass>, SpcError> {
        let this = self.clone();
        let loaded = tokio::task::spawn_blocking(move || this.load_each())
            .await
            .map_err(|e| SpcError::Api(e.to_string()))??;
        for problem in &loaded.problems {
            tracing::warn!(error = %problem.error, "--spc-dir: a manifest is skipped; the classes of the other files are served");
        }
        loaded.find(namespace, name)
    }

    /// Not ready while a manifest cannot be read (the message names each
    /// file and line); the classes of the other files are served all the
    /// same.
    async fn readiness(&self) -> Readiness {
        if !self.dir.is_dir() {
            return Readiness::NotReady(format!("--spc-dir {:?} is not a directory", self.dir));
        }
        let this = self.clone();
        match tokio::task::spawn_blocking(move || this.load_each()).await {
            Ok(Ok(loaded)) if loaded.problems.is_empty() => Readiness::Ready,
            Ok(Ok(loaded)) => Readiness::NotReady(format!(
                "--spc-dir: {} (the classes of the other manifests are served)",
                loaded
                    .problems
                    .iter()
                    .map(|p| p.error.to_string())
                    .collect::<Vec<_>>()
                    .join("; ")
            )),
            Ok(Err(e)) => Readiness::NotReady(e.to_string()),
            Err(e) => Readiness::NotReady(e.to_string()),
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
