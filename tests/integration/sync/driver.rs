//! The driver's side of the Secret lifecycle, over real mounts and the fake
//! API server: pods publishing one Secret add their owners, a Secret
//! deleted while pods use it comes back at the re-check of a refresh, and
//! an unpublished pod's owner is left out of the node's next apply.

use std::sync::Arc;
use std::time::Duration;

use secretfs::provider::{
    MountError, MountRequest, MountResponse, MountedFile, ObjectVersion, Provider, SecretBytes,
};
use secretfs::spc::SpcDir;
use secretfs::sync::Syncer;
use secretfs::volume::{Driver, DriverConfig};
use secretfs_csi::{
    PublishRequest, SecretMap, UnpublishRequest, VolumeContext, VolumeManager, keys,
};
use secretfs_e2e::fake_apiserver::FakeApiServer;
use secretfs_e2e::prereq::fuse_available;
use secretfs_fuse::ReadMode;

use crate::sync::{SECRET_PATH, owner_uids, pod_reply_of};

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
  namespace: default
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
    _classes: tempfile::TempDir,
}

impl Node {
    fn target(&self, pod: &str) -> std::path::PathBuf {
        crate::kubelet::target_path(self.kubelet.path(), &format!("uid-{pod}"))
    }

    async fn publish(&self, pod: &str) {
        let uid = format!("uid-{pod}");
        self.driver
            .publish(PublishRequest {
                volume_id: format!("csi-{pod}"),
                target_path: self.target(pod),
                volume_context: VolumeContext::new(
                    [
                        (keys::POD_NAME, pod),
                        (keys::POD_NAMESPACE, "default"),
                        (keys::POD_UID, &uid),
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

fn secret_writes(api: &FakeApiServer) -> usize {
    api.requests()
        .iter()
        .filter(|r| r.method == "PATCH" && r.path == SECRET_PATH)
        .count()
}

#[tokio::test]
async fn the_driver_adds_owners_re_creates_a_deleted_secret_and_forgets_unpublished_pods() {
    if !fuse_available() {
        return;
    }
    let api = FakeApiServer::start().await.unwrap();
    api.put("pods", pod_reply_of("web-a", "rs-1"));
    api.put("pods", pod_reply_of("web-b", "rs-2"));
    let client = kube::Client::try_from(kube::Config::new(api.url().parse().unwrap())).unwrap();
    let classes = tempfile::tempdir().unwrap();
    std::fs::write(classes.path().join("classes.yaml"), CLASS).unwrap();
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
            Syncer::new(client, "node-1").with_recheck(RECHECK),
        )),
        kubelet: tempfile::tempdir().unwrap(),
        _classes: classes,
    };

    node.publish("web-a").await;
    let secret = api.get(SECRET_PATH).expect("synced at publish");
    assert_eq!(owner_uids(&secret), ["uid-rs-1"]);
    node.publish("web-b").await;
    let secret = api.get(SECRET_PATH).unwrap();
    assert_eq!(
        owner_uids(&secret),
        ["uid-rs-1", "uid-rs-2"],
        "b's owner added"
    );
    assert_eq!(secret_writes(&api), 2);

    // Deleted while both pods use it: an unchanged refresh before the
    // re-check writes nothing; the first one after it re-creates it.
    api.remove(SECRET_PATH).unwrap();
    node.refresh("web-a").await;
    assert!(api.get(SECRET_PATH).is_none());
    tokio::time::sleep(RECHECK).await;
    node.refresh("web-a").await;
    let secret = api.get(SECRET_PATH).expect("re-created");
    assert_eq!(owner_uids(&secret), ["uid-rs-1", "uid-rs-2"]);
    assert_eq!(secret["data"]["dbpassword"], "U3FsLVBhc3N3MHJk");
    assert_eq!(secret_writes(&api), 3);

    // a goes: nothing is written then; b's next re-check lists b's owner only.
    node.unpublish("web-a").await;
    assert_eq!(secret_writes(&api), 3);
    tokio::time::sleep(RECHECK).await;
    node.refresh("web-b").await;
    let secret = api.get(SECRET_PATH).unwrap();
    assert_eq!(owner_uids(&secret), ["uid-rs-2"]);
    assert_eq!(secret_writes(&api), 4);
    node.unpublish("web-b").await;
}
