//! The driver's side of the Secret lifecycle, over real mounts and the real
//! kube-apiserver (`crate::real_kube`): pods publishing one Secret add their
//! owners, a Secret deleted while pods use it comes back at the re-check of
//! a refresh, an unpublished pod's owner is left out of the node's next
//! apply (server-side apply drops what this manager no longer lists), and
//! the garbage collector deletes the Secret with its last owner.

use std::sync::Arc;
use std::time::Duration;

use secretfs::node::driver::{Driver, DriverConfig};
use secretfs::node::sync::Syncer;
use secretfs::provider::{
    MountError, MountRequest, MountResponse, MountedFile, ObjectVersion, Provider,
};
use secretfs::spc::SpcDir;
use secretfs_csi::{PublishRequest, UnpublishRequest, VolumeContext, VolumeManager, keys};
use secretfs_e2e::prereq::fuse_available;
use secretfs_fuse::ReadMode;
use secretfs_secrets::{SecretBytes, SecretMap};

use crate::real_kube::RealKube;

// Long enough for the steps before a re-check on a busy machine.
const RECHECK: Duration = Duration::from_secs(2);

/// One object, `SECRET_1`, always the same value.
struct OneSecret;

#[async_trait::async_trait]
impl Provider for OneSecret {
    fn name(&self) -> &str {
        "fake"
    }

    async fn mount(&self, request: &MountRequest) -> Result<MountResponse, MountError> {
        Ok(MountResponse {
            files: vec![MountedFile {
                path: "SECRET_1".into(),
                mode: request.default_mode,
                contents: Arc::new(SecretBytes::from_slice(b"Sql-Passw0rd")),
                object_id: "secret/sql-password".into(),
            }],
            versions: vec![ObjectVersion {
                id: "secret/sql-password".into(),
                version: "v1".into(),
            }],
            ..Default::default()
        })
    }
}

const CLASS: &str = "apiVersion: secrets-store.csi.x-k8s.io/v1
kind: SecretProviderClass
metadata:
  name: azure-kvname
  namespace: NAMESPACE
spec:
  provider: fake
  secretObjects:
  - secretName: sqlserver
    type: Opaque
    data:
    - objectName: SECRET_1
      key: dbpassword
";

struct Node {
    driver: Driver,
    kubelet: tempfile::TempDir,
    namespace: String,
    /// Pod name → uid.
    uids: std::collections::HashMap<String, String>,
    _classes: tempfile::TempDir,
}

impl Node {
    fn target(&self, pod: &str) -> std::path::PathBuf {
        crate::kubelet::target_path(self.kubelet.path(), &self.uids[pod])
    }

    async fn publish(&self, pod: &str) {
        let uid = &self.uids[pod];
        self.driver
            .publish(PublishRequest {
                volume_id: format!("csi-{pod}"),
                target_path: self.target(pod),
                volume_context: VolumeContext::new(
                    [
                        (keys::POD_NAME, pod),
                        (keys::POD_NAMESPACE, &self.namespace),
                        (keys::POD_UID, uid),
                        (keys::SERVICE_ACCOUNT_NAME, "default"),
                        (keys::SECRET_PROVIDER_CLASS, "azure-kvname"),
                    ]
                    .map(|(k, v)| (k.to_owned(), v.to_owned())),
                ),
                secrets: SecretMap::default(),
                mount_group: None,
                mount_flags: vec![],
            })
            .await
            .unwrap();
    }

    async fn unpublish(&self, pod: &str) {
        self.driver
            .unpublish(UnpublishRequest {
                volume_id: format!("csi-{pod}"),
                target_path: self.target(pod),
            })
            .await
            .unwrap();
    }

    /// A scheduled refresh (nothing changed in the vault).
    async fn refresh(&self, pod: &str) {
        let outcome = self
            .driver
            .refresh_with(&self.target(pod), None)
            .await
            .unwrap();
        assert!(!outcome.changed());
    }
}

/// A ConfigMap standing for a pod's owner (a ReplicaSet would make and
/// delete pods of its own); its uid.
async fn owner(kube: &RealKube, name: &str) -> String {
    kube.apply(&format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n"
    ))
    .await
    .metadata
    .uid
    .unwrap()
}

/// Pod `name` owned by the ConfigMap `owner` (uid `owner_uid`); its uid.
async fn pod_owned_by(kube: &RealKube, name: &str, owner: &str, owner_uid: &str) -> String {
    let manifest = format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  ownerReferences:\n  - {{apiVersion: v1, kind: ConfigMap, name: {owner}, uid: {owner_uid}}}\nspec:\n  containers:\n  - {{name: app, image: busybox}}\n"
    );
    kube.create_pod(&manifest, name).await.metadata.uid.unwrap()
}

fn owners(uids: &[&String]) -> Option<std::collections::BTreeSet<String>> {
    Some(uids.iter().map(|u| (*u).clone()).collect())
}

#[tokio::test]
async fn the_driver_adds_owners_re_creates_a_deleted_secret_and_forgets_unpublished_pods() {
    if !fuse_available() {
        return;
    }
    let kube = RealKube::namespace("sync-driver").await;
    let (rs1, rs2) = (owner(&kube, "rs-1").await, owner(&kube, "rs-2").await);
    let uids = [
        (
            "web-a".to_owned(),
            pod_owned_by(&kube, "web-a", "rs-1", &rs1).await,
        ),
        (
            "web-b".to_owned(),
            pod_owned_by(&kube, "web-b", "rs-2", &rs2).await,
        ),
    ]
    .into();
    let classes = tempfile::tempdir().unwrap();
    std::fs::write(
        classes.path().join("classes.yaml"),
        CLASS.replace("NAMESPACE", &kube.namespace),
    )
    .unwrap();
    let node = Node {
        driver: Driver::new(
            DriverConfig {
                node_name: "node-1".into(),
                read_mode: ReadMode::Atomic,
                rotation_interval: Duration::from_secs(120),
            },
            Arc::new(SpcDir::new(classes.path())),
            [Arc::new(OneSecret) as Arc<dyn Provider>],
        )
        .with_syncer(Arc::new(
            Syncer::new(kube.client.clone(), "node-1").with_recheck(RECHECK),
        )),
        kubelet: tempfile::tempdir().unwrap(),
        namespace: kube.namespace.clone(),
        uids,
        _classes: classes,
    };

    node.publish("web-a").await;
    assert_eq!(
        kube.secret_owners("sqlserver").await,
        owners(&[&rs1]),
        "synced at publish"
    );
    node.publish("web-b").await;
    assert_eq!(
        kube.secret_owners("sqlserver").await,
        owners(&[&rs1, &rs2]),
        "b's owner added"
    );

    // Deleted while both pods use it: an unchanged refresh before the
    // re-check writes nothing; the first one after it re-creates it.
    kube.secrets()
        .delete("sqlserver", &Default::default())
        .await
        .unwrap();
    node.refresh("web-a").await;
    assert_eq!(kube.secret_owners("sqlserver").await, None);
    tokio::time::sleep(RECHECK).await;
    node.refresh("web-a").await;
    assert_eq!(
        kube.secret_owners("sqlserver").await,
        owners(&[&rs1, &rs2]),
        "re-created"
    );
    let secret = kube.secrets().get("sqlserver").await.unwrap();
    assert_eq!(secret.data.unwrap()["dbpassword"].0, b"Sql-Passw0rd");

    // a goes: nothing is written then; b's next re-check lists b's owner
    // only, and the API server takes a's off.
    node.unpublish("web-a").await;
    assert_eq!(kube.secret_owners("sqlserver").await, owners(&[&rs1, &rs2]));
    tokio::time::sleep(RECHECK).await;
    node.refresh("web-b").await;
    assert_eq!(kube.secret_owners("sqlserver").await, owners(&[&rs2]));
    node.unpublish("web-b").await;

    // Its last owner goes: the garbage collector deletes the Secret.
    kube::Api::<k8s_openapi::api::core::v1::ConfigMap>::namespaced(
        kube.client.clone(),
        &kube.namespace,
    )
    .delete("rs-2", &Default::default())
    .await
    .unwrap();
    kube.until(
        Duration::from_secs(30),
        "the Secret is collected",
        async || kube.secret_owners("sqlserver").await.is_none(),
    )
    .await;
    kube.delete().await;
}
