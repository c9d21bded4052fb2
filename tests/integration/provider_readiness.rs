//! Readiness follows the external providers the node's volumes use: CSI
//! `Probe` (over the plugin's socket) and the driver's readiness turn not
//! ready, naming the provider, when a provider a mounted volume uses stops
//! answering, and ready again when it is back. Mounts a FUSE volume: needs
//! root and /dev/fuse (SECRETFS_SKIP_FUSE_TESTS=1 skips it).

use std::path::Path;
use std::sync::Arc;

use hyper_util::rt::TokioIo;
use secretfs::node::driver::{Driver, DriverConfig};
use secretfs::provider::ProviderRegistry;
use secretfs::provider::external::ExternalConfig;
use secretfs::spc::SpcDir;
use secretfs_csi::proto::csi::{ProbeRequest, identity_client::IdentityClient};
use secretfs_csi::{
    PublishRequest, Readiness, UnpublishRequest, VolumeContext, VolumeManager, keys,
};
use secretfs_e2e::prereq::fuse_available;
use secretfs_e2e::test_provider::TestProvider;
use secretfs_secrets::SecretMap;
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint, Uri};

const CLASS: &str = "apiVersion: secrets-store.csi.x-k8s.io/v1
kind: SecretProviderClass
metadata:
  name: v
  namespace: default
spec:
  provider: vault
  parameters:
    objects: foo
";

const UID: &str = "0e0e0e0e-0e0e-4e0e-8e0e-0e0e0e0e0e0e";

fn request(target: &Path) -> PublishRequest {
    PublishRequest {
        volume_id: "csi-readiness".into(),
        target_path: target.to_owned(),
        volume_context: VolumeContext::new(
            [
                (keys::POD_NAME, "pod"),
                (keys::POD_NAMESPACE, "default"),
                (keys::POD_UID, UID),
                (keys::SERVICE_ACCOUNT_NAME, "default"),
                (keys::EPHEMERAL, "true"),
                (keys::SECRET_PROVIDER_CLASS, "v"),
            ]
            .map(|(k, v)| (k.to_owned(), v.to_owned())),
        ),
        secrets: SecretMap::default(),
        mount_group: None,
        mount_flags: vec![],
    }
}

async fn connect(socket: &Path) -> Channel {
    let socket = socket.to_owned();
    Endpoint::try_from("http://[::]:50051")
        .unwrap()
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let socket = socket.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(socket).await?)) }
        }))
        .await
        .unwrap()
}

/// CSI `Probe`: `Ok(())` when ready, else the error's message.
async fn probe(identity: &mut IdentityClient<Channel>) -> Result<(), String> {
    match identity.probe(ProbeRequest {}).await {
        Ok(response) => {
            assert_eq!(response.into_inner().ready, Some(true));
            Ok(())
        }
        Err(status) => {
            assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
            Err(status.message().to_owned())
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_in_use_that_stops_answering_makes_the_node_unready_until_it_is_back() {
    if !fuse_available() {
        return;
    }
    let providers = tempfile::tempdir().unwrap();
    let classes = tempfile::tempdir().unwrap();
    let kubelet = tempfile::tempdir().unwrap();
    std::fs::write(classes.path().join("classes.yaml"), CLASS).unwrap();
    let driver = Arc::new(Driver::new(
        DriverConfig {
            node_name: "node-1".into(),
            read_mode: secretfs_fuse::ReadMode::Atomic,
            rotation_interval: std::time::Duration::from_secs(120),
        },
        Arc::new(SpcDir::new(classes.path())),
        ProviderRegistry::new([]).with_external(ExternalConfig {
            dirs: vec![providers.path().to_owned()],
            ..ExternalConfig::default()
        }),
    ));
    let csi_socket = kubelet.path().join("plugin/csi.sock");
    let listener = secretfs_csi::bind(&csi_socket).unwrap();
    let (identity, node) =
        secretfs_csi::services("secrets-store.csi.k8s.io", "test", "node-1", driver.clone());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(secretfs_csi::serve(listener, identity, node, async {
        let _ = stopped.await;
    }));
    let mut identity = IdentityClient::new(connect(&csi_socket).await);

    // No provider installed and none used: ready.
    assert_eq!(probe(&mut identity).await, Ok(()));
    let socket = providers.path().join("vault.sock");
    let provider = TestProvider::start(&socket).await.unwrap();
    let target = kubelet.path().join(format!(
        "pods/{UID}/volumes/kubernetes.io~csi/secrets/mount"
    ));
    driver.publish(request(&target)).await.unwrap();
    assert_eq!(std::fs::read(target.join("foo")).unwrap(), b"secret");
    assert_eq!(probe(&mut identity).await, Ok(()));

    // The provider the volume uses goes away: not ready, naming it.
    provider.stop().await;
    let why = probe(&mut identity).await.unwrap_err();
    assert!(
        why.contains("not ready") && why.contains("\"vault\""),
        "{why}"
    );
    match driver.readiness().await {
        Readiness::NotReady(reason) => assert!(reason.contains("\"vault\""), "{reason}"),
        Readiness::Ready => panic!("ready without the provider the volume uses"),
    }
    // The volume still serves its last contents meanwhile.
    assert_eq!(std::fs::read(target.join("foo")).unwrap(), b"secret");

    // Back: ready again.
    let provider = TestProvider::start(&socket).await.unwrap();
    assert_eq!(probe(&mut identity).await, Ok(()));

    // Once nothing uses it, its absence is no reason to be unready.
    driver
        .unpublish(UnpublishRequest {
            volume_id: "csi-readiness".into(),
            target_path: target.clone(),
        })
        .await
        .unwrap();
    provider.stop().await;
    assert_eq!(probe(&mut identity).await, Ok(()));
    assert_eq!(driver.readiness().await, Readiness::Ready);

    let _ = stop.send(());
    server.await.unwrap().unwrap();
}
