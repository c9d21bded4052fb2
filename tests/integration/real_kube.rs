//! The real Kubernetes control plane: kube-apiserver on etcd, with
//! kube-controller-manager and its garbage collector, built from
//! `k8s.io/kubernetes` (e2e/k8s/). `scripts/test.sh` starts one for the whole
//! run (`e2e/k8s/control-plane.sh`) and names its kubeconfig in
//! `SECRETFS_TEST_KUBECONFIG`; each test works in a namespace of its own.
//!
//! Used wherever what the API server does matters: server-side apply of
//! `ownerReferences` (a list keyed by uid, per field manager) and garbage
//! collection, which the fake API server does not have.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Namespace, Pod, Secret};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, DynamicObject, GroupVersionKind};
use serde_json::{Value, json};

/// A namespace of its own on the run's control plane.
pub struct RealKube {
    pub client: kube::Client,
    pub kubeconfig: PathBuf,
    pub namespace: String,
}

/// The run's kubeconfig; panics with what to do when there is none: these
/// tests are not skipped, they need the real API server.
pub fn kubeconfig() -> PathBuf {
    match std::env::var_os("SECRETFS_TEST_KUBECONFIG") {
        Some(path) => PathBuf::from(path),
        None => panic!(
            "this test needs a real kube-apiserver: run scripts/test.sh, or \
             `e2e/k8s/control-plane.sh start DIR` and export \
             SECRETFS_TEST_KUBECONFIG=DIR/kubeconfig (see e2e/k8s/README.md)"
        ),
    }
}

fn status_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(
            "secrets-store.csi.x-k8s.io",
            "v1",
            "SecretProviderClassPodStatus",
        ),
        "secretproviderclasspodstatuses",
    )
}

impl RealKube {
    /// Connects and makes a new namespace `<prefix>-<random>`.
    pub async fn namespace(prefix: &str) -> RealKube {
        let kubeconfig = kubeconfig();
        let config = kube::Config::from_custom_kubeconfig(
            kube::config::Kubeconfig::read_from(&kubeconfig).unwrap(),
            &kube::config::KubeConfigOptions::default(),
        )
        .await
        .unwrap();
        let client = kube::Client::try_from(config).unwrap();
        let suffix: u32 = rand_suffix();
        let namespace = format!("{prefix}-{suffix:08x}");
        kube::Api::<Namespace>::all(client.clone())
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({"metadata": {"name": namespace}})).unwrap(),
            )
            .await
            .unwrap();
        // Pods are admitted once the namespace's default service account
        // exists (the service-account controller makes it).
        let accounts = kube::Api::<k8s_openapi::api::core::v1::ServiceAccount>::namespaced(
            client.clone(),
            &namespace,
        );
        wait_until(
            Duration::from_secs(30),
            "the default service account",
            async || accounts.get_opt("default").await.unwrap().is_some(),
        )
        .await;
        RealKube {
            client,
            kubeconfig,
            namespace,
        }
    }

    /// Applies a manifest (YAML) into this namespace, server-side, as a
    /// user's `kubectl apply --server-side` would.
    pub async fn apply(&self, manifest: &str) -> DynamicObject {
        let mut object: Value = serde_yaml::from_str(manifest).unwrap();
        object["metadata"]["namespace"] = json!(self.namespace);
        let (group, version) = match object["apiVersion"].as_str().unwrap().split_once('/') {
            Some((g, v)) => (g.to_owned(), v.to_owned()),
            None => (
                String::new(),
                object["apiVersion"].as_str().unwrap().to_owned(),
            ),
        };
        let kind = object["kind"].as_str().unwrap().to_owned();
        let plural = format!("{}s", kind.to_lowercase())
            .replace("classs", "classes")
            .replace("statuss", "statuses");
        let resource = ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk(&group, &version, &kind),
            &plural,
        );
        let name = object["metadata"]["name"].as_str().unwrap().to_owned();
        kube::Api::<DynamicObject>::namespaced_with(self.client.clone(), &self.namespace, &resource)
            .patch(
                &name,
                &PatchParams::apply("e2e-test").force(),
                &Patch::Apply(&object),
            )
            .await
            .unwrap_or_else(|e| panic!("applying {kind} {name}: {e}"))
    }

    /// Creates a pod from `manifest` under `name`; it stays Pending (no
    /// scheduler, no kubelet): the kubelet stand-in publishes its volume.
    pub async fn create_pod(&self, manifest: &str, name: &str) -> Pod {
        let mut pod: Value = serde_yaml::from_str(manifest).unwrap();
        pod["metadata"]["name"] = json!(name);
        pod["metadata"]["namespace"] = json!(self.namespace);
        self.pods()
            .create(
                &PostParams::default(),
                &serde_json::from_value(pod).unwrap(),
            )
            .await
            .unwrap()
    }

    pub fn pods(&self) -> kube::Api<Pod> {
        kube::Api::namespaced(self.client.clone(), &self.namespace)
    }

    pub fn secrets(&self) -> kube::Api<Secret> {
        kube::Api::namespaced(self.client.clone(), &self.namespace)
    }

    pub fn statuses(&self) -> kube::Api<DynamicObject> {
        kube::Api::namespaced_with(self.client.clone(), &self.namespace, &status_resource())
    }

    /// Deletes a pod at once (no kubelet would confirm a graceful one).
    pub async fn delete_pod(&self, name: &str) {
        self.pods()
            .delete(name, &DeleteParams::default().grace_period(0))
            .await
            .unwrap();
    }

    /// The uids of a Secret's owners; `None` if it does not exist.
    pub async fn secret_owners(&self, name: &str) -> Option<BTreeSet<String>> {
        let secret = self.secrets().get_opt(name).await.unwrap()?;
        Some(
            secret
                .metadata
                .owner_references
                .unwrap_or_default()
                .into_iter()
                .map(|o| o.uid)
                .collect(),
        )
    }

    /// The uid of a pod's SecretProviderClassPodStatus for `class`.
    pub async fn status_uid(&self, pod: &str, class: &str) -> Option<String> {
        let name = format!("{pod}-{}-{class}", self.namespace);
        self.statuses().get_opt(&name).await.unwrap()?.metadata.uid
    }

    /// Waits until `check` holds, panicking with `what` after `limit`.
    pub async fn until(&self, limit: Duration, what: &str, check: impl AsyncFnMut() -> bool) {
        wait_until(limit, what, check).await;
    }

    /// Deletes the namespace (and so everything in it).
    pub async fn delete(self) {
        let _ = kube::Api::<Namespace>::all(self.client.clone())
            .delete(&self.namespace, &DeleteParams::default())
            .await;
    }
}

/// Waits until `check` holds, polling every 100 ms; panics naming `what`
/// after `limit`.
pub async fn wait_until(limit: Duration, what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + limit;
    loop {
        if check().await {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn rand_suffix() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos(),
    );
    hasher.write_u32(std::process::id());
    hasher.finish() as u32
}
