//! The CSI services over a real Unix socket, with a fake VolumeManager.

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use hyper_util::rt::TokioIo;
use secretfs_csi::proto::csi::{
    self, NodePublishVolumeRequest, NodeUnpublishVolumeRequest, VolumeCapability,
    identity_client::IdentityClient, node_client::NodeClient, volume_capability,
};
use secretfs_csi::{
    ErrorCode, PublishRequest, Readiness, UnpublishRequest, VolumeError, VolumeManager,
};
use tokio::net::UnixStream;
use tonic::Code;
use tonic::transport::{Channel, Endpoint, Uri};

#[derive(Default)]
struct Fake {
    published: Mutex<Vec<PublishRequest>>,
    unpublished: Mutex<Vec<UnpublishRequest>>,
    fail_with: Mutex<Option<VolumeError>>,
    not_ready: Mutex<Option<String>>,
}

#[async_trait::async_trait]
impl VolumeManager for Fake {
    async fn publish(&self, request: PublishRequest) -> Result<(), VolumeError> {
        if let Some(err) = self.fail_with.lock().unwrap().clone() {
            return Err(err);
        }
        self.published.lock().unwrap().push(request);
        Ok(())
    }
    async fn unpublish(&self, request: UnpublishRequest) -> Result<(), VolumeError> {
        self.unpublished.lock().unwrap().push(request);
        Ok(())
    }
    async fn readiness(&self) -> Readiness {
        match self.not_ready.lock().unwrap().clone() {
            Some(why) => Readiness::NotReady(why),
            None => Readiness::Ready,
        }
    }
}

struct Server {
    fake: Arc<Fake>,
    channel: Channel,
    socket: PathBuf,
    _dir: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("plugin/csi.sock");
        let fake = Arc::new(Fake::default());
        let listener = secretfs_csi::bind(&socket).unwrap();
        let (identity, node) = secretfs_csi::services(
            "secrets-store.csi.k8s.io",
            "0.1.0-test",
            "node-1",
            fake.clone(),
        );
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            secretfs_csi::serve(listener, identity, node, async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
        });
        let channel = connect(&socket).await;
        Self {
            fake,
            channel,
            socket,
            _dir: dir,
            stop: Some(stop),
            task,
        }
    }

    fn node(&self) -> NodeClient<Channel> {
        NodeClient::new(self.channel.clone())
    }

    fn identity(&self) -> IdentityClient<Channel> {
        IdentityClient::new(self.channel.clone())
    }

    /// Stops the server; returns its directory (the socket file is left
    /// behind, as after a crash).
    async fn stop(mut self) -> tempfile::TempDir {
        let _ = self.stop.take().unwrap().send(());
        self.task.await.unwrap();
        self._dir
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

fn publish_request() -> NodePublishVolumeRequest {
    NodePublishVolumeRequest {
        volume_id: "csi-abc".into(),
        target_path: "/var/lib/kubelet/pods/uid-1/volumes/kubernetes.io~csi/secrets/mount".into(),
        volume_capability: Some(VolumeCapability {
            access_type: Some(volume_capability::AccessType::Mount(
                volume_capability::MountVolume {
                    fs_type: String::new(),
                    mount_flags: vec![],
                    volume_mount_group: "2000".into(),
                },
            )),
            access_mode: Some(volume_capability::AccessMode {
                mode: volume_capability::access_mode::Mode::SingleNodeReaderOnly as i32,
            }),
        }),
        readonly: true,
        secrets: [("clientsecret".to_owned(), "very-secret-value".to_owned())].into(),
        volume_context: [
            ("secretProviderClass".to_owned(), "azure-kvname".to_owned()),
            (
                "csi.storage.k8s.io/serviceAccount.tokens".to_owned(),
                r#"{"api://AzureADTokenExchange":{"token":"eyJ.secret-token.x"}}"#.to_owned(),
            ),
        ]
        .into(),
        ..Default::default()
    }
}

#[tokio::test]
async fn identity_reports_name_version_no_capabilities_and_readiness() {
    let server = Server::start().await;
    let info = server
        .identity()
        .get_plugin_info(csi::GetPluginInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(info.name, "secrets-store.csi.k8s.io");
    assert_eq!(info.vendor_version, "0.1.0-test");
    let caps = server
        .identity()
        .get_plugin_capabilities(csi::GetPluginCapabilitiesRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(caps.capabilities.is_empty());
    let probe = server
        .identity()
        .probe(csi::ProbeRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(probe.ready, Some(true));

    *server.fake.not_ready.lock().unwrap() = Some("SecretProviderClass cache not synced".into());
    let err = server
        .identity()
        .probe(csi::ProbeRequest {})
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);
    assert!(err.message().contains("not synced"), "{}", err.message());
    server.stop().await;
}

#[tokio::test]
async fn node_advertises_volume_mount_group_and_its_id() {
    let server = Server::start().await;
    let caps = server
        .node()
        .node_get_capabilities(csi::NodeGetCapabilitiesRequest {})
        .await
        .unwrap()
        .into_inner();
    let types: Vec<i32> = caps
        .capabilities
        .iter()
        .filter_map(|c| {
            c.r#type
                .as_ref()
                .map(|csi::node_service_capability::Type::Rpc(rpc)| rpc.r#type)
        })
        .collect();
    assert_eq!(
        types,
        [csi::node_service_capability::rpc::Type::VolumeMountGroup as i32]
    );
    let info = server
        .node()
        .node_get_info(csi::NodeGetInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(info.node_id, "node-1");
    server.stop().await;
}

#[tokio::test]
async fn a_valid_publish_reaches_the_manager_typed() {
    let server = Server::start().await;
    server
        .node()
        .node_publish_volume(publish_request())
        .await
        .unwrap();
    let published = server.fake.published.lock().unwrap().clone();
    assert_eq!(published.len(), 1);
    let req = &published[0];
    assert_eq!(req.volume_id, "csi-abc");
    assert_eq!(req.mount_group, Some(2000));
    assert_eq!(req.secrets.get("clientsecret"), Some("very-secret-value"));
    assert_eq!(
        req.volume_context.get("secretProviderClass"),
        Some("azure-kvname")
    );
    let shown = format!("{req:?}");
    assert!(!shown.contains("very-secret-value"), "{shown}");
    assert!(!shown.contains("secret-token"), "{shown}");
    server.stop().await;
}

#[tokio::test]
async fn invalid_publishes_are_refused_before_the_manager() {
    let server = Server::start().await;
    type Break = fn(&mut NodePublishVolumeRequest);
    let cases: Vec<(Break, &str)> = vec![
        (|r| r.volume_id.clear(), "volume_id"),
        (|r| r.target_path.clear(), "target_path"),
        (|r| r.volume_capability = None, "volume_capability"),
        (
            |r| {
                r.volume_capability.as_mut().unwrap().access_type = Some(
                    volume_capability::AccessType::Block(volume_capability::BlockVolume {}),
                )
            },
            "block",
        ),
        (|r| r.readonly = false, "Readonly is not true"),
        (|r| r.volume_context.clear(), "secretProviderClass"),
        (
            |r| {
                if let Some(volume_capability::AccessType::Mount(m)) =
                    &mut r.volume_capability.as_mut().unwrap().access_type
                {
                    m.volume_mount_group = "staff".into();
                }
            },
            "fsGroup",
        ),
    ];
    for (break_it, mention) in cases {
        let mut req = publish_request();
        break_it(&mut req);
        let err = server.node().node_publish_volume(req).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{mention}: {err:?}");
        assert!(
            err.message().contains(mention),
            "{mention} not in {:?}",
            err.message()
        );
    }
    assert!(server.fake.published.lock().unwrap().is_empty());
    server.stop().await;
}

#[tokio::test]
async fn manager_errors_keep_their_code_and_message() {
    let server = Server::start().await;
    for (code, want) in [
        (ErrorCode::NotFound, Code::NotFound),
        (ErrorCode::PermissionDenied, Code::PermissionDenied),
        (ErrorCode::Unavailable, Code::Unavailable),
        (ErrorCode::DeadlineExceeded, Code::DeadlineExceeded),
        (ErrorCode::Internal, Code::Internal),
    ] {
        *server.fake.fail_with.lock().unwrap() = Some(VolumeError::new(
            code,
            "SecretProviderClassNotFound",
            "secretproviderclass default/missing not found",
        ));
        let err = server
            .node()
            .node_publish_volume(publish_request())
            .await
            .unwrap_err();
        assert_eq!(err.code(), want);
        assert_eq!(
            err.message(),
            "secretproviderclass default/missing not found"
        );
    }
    server.stop().await;
}

#[tokio::test]
async fn unpublish_is_validated_and_delegated() {
    let server = Server::start().await;
    let err = server
        .node()
        .node_unpublish_volume(NodeUnpublishVolumeRequest {
            volume_id: "v".into(),
            target_path: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    server
        .node()
        .node_unpublish_volume(NodeUnpublishVolumeRequest {
            volume_id: "v".into(),
            target_path: "/t".into(),
        })
        .await
        .unwrap();
    assert_eq!(server.fake.unpublished.lock().unwrap().len(), 1);
    server.stop().await;
}

#[tokio::test]
async fn rpcs_we_do_not_serve_are_unimplemented() {
    let server = Server::start().await;
    let mut grpc = tonic::client::Grpc::new(server.channel.clone());
    grpc.ready().await.unwrap();
    let path = http::uri::PathAndQuery::from_static("/csi.v1.Node/NodeStageVolume");
    let codec =
        tonic_prost::ProstCodec::<csi::NodeGetInfoRequest, csi::NodeGetInfoResponse>::default();
    let err = grpc
        .unary(tonic::Request::new(csi::NodeGetInfoRequest {}), path, codec)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unimplemented);
    server.stop().await;
}

#[tokio::test]
async fn the_socket_is_private_and_a_stale_one_is_replaced() {
    let server = Server::start().await;
    let meta = std::fs::metadata(&server.socket).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let socket = server.socket.clone();
    let _dir = server.stop().await;
    // The old socket file is still there (a crash would leave it too).
    assert!(std::fs::symlink_metadata(&socket).is_ok());
    let again = secretfs_csi::bind(&socket).unwrap();
    drop(again);
}

#[test]
fn a_non_socket_at_the_path_is_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("csi.sock");
    std::fs::write(&path, b"not a socket").unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let _guard = rt.enter();
    let err = secretfs_csi::bind(&path).unwrap_err();
    assert!(
        matches!(err, secretfs_csi::ServerError::NotASocket { .. }),
        "{err}"
    );
    assert_eq!(std::fs::read(&path).unwrap(), b"not a socket");
}

#[test]
fn endpoints_parse_like_upstream() {
    use secretfs_csi::socket_path;
    assert_eq!(
        socket_path("unix:///csi/csi.sock").unwrap(),
        PathBuf::from("/csi/csi.sock")
    );
    assert_eq!(
        socket_path("/csi/csi.sock").unwrap(),
        PathBuf::from("/csi/csi.sock")
    );
    assert_eq!(
        socket_path("unix://tmp/csi.sock").unwrap(),
        PathBuf::from("tmp/csi.sock")
    );
    assert!(socket_path("tcp://0.0.0.0:10000").is_err());
    assert!(socket_path("unix://").is_err());
}

/// Log lines written while the returned guard lives (this thread: the
/// tests' runtime runs the server on it too), debug level included.
struct Logs(Arc<Mutex<Vec<u8>>>);

impl Logs {
    fn capture() -> (Self, tracing::subscriber::DefaultGuard) {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let writer = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_max_level(tracing::Level::DEBUG)
            .with_writer(move || LogWriter(writer.clone()))
            .finish();
        (Self(buffer), tracing::subscriber::set_default(subscriber))
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }

    fn failures(&self) -> Vec<String> {
        self.text()
            .lines()
            .filter(|l| l.contains("CSI call failed"))
            .map(str::to_owned)
            .collect()
    }
}

struct LogWriter(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Calls `path` with `message` (any message type) and returns the status.
async fn raw_call<M>(server: &Server, path: &'static str, message: M) -> tonic::Status
where
    M: prost::Message + Default + Send + Sync + 'static,
{
    let mut grpc = tonic::client::Grpc::new(server.channel.clone());
    grpc.ready().await.unwrap();
    let codec = tonic_prost::ProstCodec::<M, csi::NodeGetInfoResponse>::default();
    grpc.unary(
        tonic::Request::new(message),
        http::uri::PathAndQuery::from_static(path),
        codec,
    )
    .await
    .unwrap_err()
}

#[tokio::test]
async fn every_failed_call_is_logged_once_with_its_method_and_code() {
    let (logs, _guard) = Logs::capture();
    let server = Server::start().await;
    // A method we do not serve.
    let err = raw_call(
        &server,
        "/csi.v1.Node/NodeStageVolume",
        csi::NodeGetInfoRequest {},
    )
    .await;
    assert_eq!(err.code(), Code::Unimplemented);
    let failures = logs.failures();
    assert_eq!(failures.len(), 1, "{failures:#?}");
    assert!(
        failures[0].contains("csi.v1.Node/NodeStageVolume")
            && failures[0].contains("Unimplemented"),
        "{failures:#?}"
    );
    // A service we do not serve.
    let err = raw_call(
        &server,
        "/csi.v1.Controller/CreateVolume",
        csi::NodeGetInfoRequest {},
    )
    .await;
    assert_eq!(err.code(), Code::Unimplemented);
    // A request that does not decode (field 2 of NodePublishVolumeRequest
    // is a map; this sends a number there).
    let err = raw_call(
        &server,
        "/csi.v1.Node/NodePublishVolume",
        csi::NodeGetInfoResponse {
            node_id: String::new(),
            max_volumes_per_node: 5,
            accessible_topology: None,
        },
    )
    .await;
    assert_ne!(err.code(), Code::Ok);
    let decode_code = format!("{:?}", err.code());
    // Probe while not ready.
    *server.fake.not_ready.lock().unwrap() = Some("classes not listed yet".into());
    let err = server
        .identity()
        .probe(csi::ProbeRequest {})
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);
    // Successful calls are not failures.
    *server.fake.not_ready.lock().unwrap() = None;
    server.identity().probe(csi::ProbeRequest {}).await.unwrap();
    server
        .node()
        .node_get_info(csi::NodeGetInfoRequest {})
        .await
        .unwrap();

    let failures = logs.failures();
    assert_eq!(failures.len(), 4, "{failures:#?}");
    assert!(
        failures[1].contains("csi.v1.Controller/CreateVolume")
            && failures[1].contains("Unimplemented"),
        "{failures:#?}"
    );
    assert!(
        failures[2].contains("csi.v1.Node/NodePublishVolume") && failures[2].contains(&decode_code),
        "{failures:#?}"
    );
    assert!(
        failures[3].contains("csi.v1.Identity/Probe")
            && failures[3].contains("Unavailable")
            && failures[3].contains("classes not listed yet"),
        "{failures:#?}"
    );
    server.stop().await;
}

#[tokio::test]
async fn failed_publishes_are_logged_with_their_pod_and_never_a_secret() {
    let (logs, _guard) = Logs::capture();
    let server = Server::start().await;
    let mut request = publish_request();
    request.volume_context.extend(
        [
            ("csi.storage.k8s.io/pod.name", "web-0"),
            ("csi.storage.k8s.io/pod.namespace", "shop"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned())),
    );
    // A successful publish (logged at debug, redacted).
    server
        .node()
        .node_publish_volume(request.clone())
        .await
        .unwrap();
    // A provider that echoes the secret and the token in its error.
    *server.fake.fail_with.lock().unwrap() = Some(VolumeError::new(
        ErrorCode::PermissionDenied,
        "GRPCProviderError",
        "provider \"vault\" failed: login with very-secret-value and {\"token\":\"eyJ.secret-token.x\"} refused",
    ));
    let err = server
        .node()
        .node_publish_volume(request)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    // Nor in what kubelet shows in the pod's events.
    assert!(
        !err.message().contains("very-secret-value") && !err.message().contains("secret-token"),
        "{}",
        err.message()
    );
    assert!(
        err.message().contains("provider \"vault\" failed"),
        "{}",
        err.message()
    );

    let failures = logs.failures();
    assert_eq!(failures.len(), 1, "{failures:#?}");
    let line = &failures[0];
    for part in [
        "csi.v1.Node/NodePublishVolume",
        "PermissionDenied",
        "GRPCProviderError",
        "shop/web-0",
        "csi-abc",
        "kubernetes.io~csi/secrets/mount",
        "***stripped***",
    ] {
        assert!(line.contains(part), "{part} not in {line}");
    }
    let all = logs.text();
    assert!(all.contains("NodePublishVolume"), "{all}");
    for secret in ["very-secret-value", "secret-token", "eyJ."] {
        assert!(!all.contains(secret), "{secret} logged:\n{all}");
    }
    server.stop().await;
}
