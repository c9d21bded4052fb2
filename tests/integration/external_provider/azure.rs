//! Our client against our server: `secretfs provider`'s service (the Azure
//! provider, aimed at the Key Vault emulator) on a real socket serves the
//! seed SecretProviderClass with the same files as the built-in path.

use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use secretfs::cmd::demo::emulator_azure_config;
use secretfs::cmd::provider::ProviderService;
use secretfs::provider::azure::AzureProvider;
use secretfs::provider::external::{ExternalClient, ExternalProvider, ProviderVolume};
use secretfs::provider::{FileMode, MountRequest, PodRef, Provider};
use secretfs::spc::{SpcDir, SpcSource};
use secretfs_csi::ErrorCode;
use secretfs_csi::proto::health::health_client::HealthClient;
use secretfs_csi::proto::health::{HealthCheckRequest, health_check_response::ServingStatus};
use secretfs_e2e::test_provider::TestProvider;
use secretfs_e2e::{CounterFilter, Emulator, EmulatorConfig, EmulatorHandle, Route, Seed};
use secretfs_secrets::SecretMap;
use tokio::net::UnixStream;
use tokio::sync::oneshot;
use tonic::transport::{Endpoint, Uri};

use super::common::*;

const SEED_CLASS: &str = include_str!("../../fixtures/seed/secretproviderclass.yaml");

/// The seed class, and a copy named `missing` whose object does not exist.
fn manifests() -> String {
    let missing = SEED_CLASS
        .replace("name: azure-kvname", "name: missing")
        .replace("objectName: sql-password", "objectName: no-such-secret");
    format!("{SEED_CLASS}\n---\n{missing}")
}

struct Server {
    stop: Option<oneshot::Sender<()>>,
    done: tokio::task::JoinHandle<()>,
}

/// `secretfs provider`'s service on `socket`, answering from cached
/// objects up to `max_age` old.
fn serve(emu: &EmulatorHandle, socket: &std::path::Path, max_age: Duration) -> Server {
    let listener = secretfs_csi::bind(socket).unwrap();
    let provider = Arc::new(AzureProvider::new(emulator_azure_config(emu)).unwrap());
    let (stop, stopped) = oneshot::channel::<()>();
    let done = tokio::spawn(async move {
        let service = ProviderService::new(provider, "node-1", max_age);
        secretfs::cmd::provider::serve(listener, service, async {
            let _ = stopped.await;
        })
        .await
        .unwrap();
    });
    Server {
        stop: Some(stop),
        done,
    }
}

impl Server {
    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = self.done.await;
    }
}

async fn emulator() -> EmulatorHandle {
    Emulator::start(EmulatorConfig::with_seed(Seed::demo()))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seed_class_gives_the_same_files_through_our_server() {
    let emu = emulator().await;
    let builtin = Arc::new(AzureProvider::new(emulator_azure_config(&emu)).unwrap());
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("azure.sock");
    let server = serve(&emu, &socket, Duration::from_secs(60));

    let classes = tempfile::tempdir().unwrap();
    std::fs::write(classes.path().join("c.yaml"), SEED_CLASS).unwrap();
    let class = SpcDir::new(classes.path())
        .get("default", "azure-kvname")
        .await
        .unwrap()
        .unwrap();
    let request = MountRequest {
        parameters: class.spec.parameters.clone(),
        pod: PodRef {
            name: "nginx-secrets-store-inline".into(),
            namespace: "default".into(),
            uid: "7f3c1b2a-0d4e-4f5a-9b6c-8d7e6f5a4b3c".into(),
            service_account: "default".into(),
        },
        service_account_tokens: None,
        secrets: SecretMap::default(),
        default_mode: FileMode::DEFAULT,
        current: Vec::new(),
        node_name: "node-1".into(),
        max_age: std::time::Duration::ZERO,
        fresh_since: None,
    };
    let client = Arc::new(ExternalClient::new(
        "azure",
        &socket,
        Arc::new(config(vec![dir.path().to_owned()])),
    ));
    let external = ExternalProvider::new(
        client.clone(),
        ProviderVolume::new("azure-kvname", std::path::Path::new("/t"), []),
    );
    let direct = builtin.mount(&request).await.unwrap();
    emu.reset_counters();
    let over_socket = external.mount(&request).await.unwrap();
    // The server's object cache: a second Mount within --cache-max-age
    // does not reach the vault.
    let again = external.mount(&request).await.unwrap();
    assert_eq!(again.versions, over_socket.versions);
    let gets = CounterFilter::route(Route::SecretGet)
        .object("sql-password")
        .status(200);
    assert_eq!(emu.count(&gets), 1, "one vault GET for two Mounts");
    let files = |r: &secretfs::provider::MountResponse| {
        r.files
            .iter()
            .map(|f| (f.path.clone(), f.mode, f.contents.expose().to_vec()))
            .collect::<Vec<_>>()
    };
    assert_eq!(files(&over_socket), files(&direct));
    assert_eq!(over_socket.versions, direct.versions);
    assert_eq!(files(&direct)[0].0, "SECRET_1");
    assert_eq!(over_socket.versions[0].id, "secret/sql-password");

    let version = client.version().await.unwrap().unwrap();
    assert_eq!(version.runtime_name, "secretfs-provider-azure");
    assert_eq!(version.version, "v1alpha1");
    assert!(
        version.runtime_version.starts_with('v'),
        "{}",
        version.runtime_version
    );

    let path = socket.clone();
    let channel = Endpoint::from_static("http://localhost")
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(path).await?)) }
        }))
        .await
        .unwrap();
    let health = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(health.status, ServingStatus::Serving as i32);

    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the provider socket is root-only");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_through_our_server_mounts_what_the_builtin_mounts() {
    if !fuse_available() {
        return;
    }
    let emu = emulator().await;
    let builtin: Arc<dyn Provider> =
        Arc::new(AzureProvider::new(emulator_azure_config(&emu)).unwrap());
    // Built in: a socket named azure.sock is ignored.
    let with_builtin = setup_with(vec![builtin], &manifests(), |_| {});
    let decoy = TestProvider::start(&with_builtin.dirs[0].path().join("azure.sock"))
        .await
        .unwrap();
    // External only: our server on azure.sock in the additional directory.
    let external_only = setup_with(vec![], &manifests(), |c| {
        c.timeout = std::time::Duration::from_secs(30)
    });
    let server = serve(
        &emu,
        &external_only.dirs[1].path().join("azure.sock"),
        Duration::ZERO,
    );

    with_builtin.publish("b1", "azure-kvname").await.unwrap();
    external_only.publish("e1", "azure-kvname").await.unwrap();
    assert!(
        decoy.calls().is_empty(),
        "built-in providers win over sockets"
    );
    let expected = tree(&with_builtin.target("b1"));
    assert_eq!(
        expected.keys().collect::<Vec<_>>(),
        ["SECRET_1"],
        "the seed mounts SECRET_1"
    );
    assert_eq!(tree(&external_only.target("e1")), expected);

    // Rotation through the server: a new version reaches the volume.
    emu.control()
        .set_secret("kv-demo", "sql-password", "rotated-over-the-socket")
        .unwrap();
    let outcome = external_only
        .driver
        .refresh(&external_only.target("e1"))
        .await
        .unwrap();
    assert_eq!(outcome.replaced, 1);
    assert_eq!(
        std::fs::read(external_only.target("e1").join("SECRET_1")).unwrap(),
        b"rotated-over-the-socket"
    );

    // A vault error keeps its reason and kind across the socket.
    let err = external_only.publish("e2", "missing").await.unwrap_err();
    assert_eq!(err.code, ErrorCode::NotFound, "{}", err.message);
    assert!(err.message.contains("no-such-secret"), "{}", err.message);
    assert!(!is_mounted(&external_only.target("e2")));

    with_builtin.unpublish("b1").await;
    external_only.unpublish("e1").await;
    server.stop().await;
}
