//! Clients other than gRPC-Go on the real Unix socket: gRPC C-core's
//! Python client (grpcio, pinned in `tests/python/requirements.txt`, in a
//! venv under `target/`), which sends the socket path, percent-encoded, as
//! `:authority` — and the path itself, as grpc-java does. Needs python3
//! with venv, and PyPI the first time.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use secretfs_csi::{PublishRequest, Readiness, UnpublishRequest, VolumeError, VolumeManager};

struct Nothing;

#[async_trait::async_trait]
impl VolumeManager for Nothing {
    async fn publish(&self, _: PublishRequest) -> Result<(), VolumeError> {
        Ok(())
    }
    async fn unpublish(&self, _: UnpublishRequest) -> Result<(), VolumeError> {
        Ok(())
    }
    async fn readiness(&self) -> Readiness {
        Readiness::Ready
    }
}

/// The venv with grpcio, made (or brought up to the requirements) once.
fn python() -> PathBuf {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| here.join("../target"));
    let venv = target.join("grpc-venv");
    let python = venv.join("bin/python");
    let requirements = here.join("tests/python/requirements.txt");
    let wanted = std::fs::read_to_string(&requirements).unwrap();
    let stamp = venv.join(".requirements");
    if std::fs::read_to_string(&stamp).ok().as_deref() != Some(wanted.as_str()) {
        if !python.exists() {
            let made = Command::new("python3")
                .args(["-m", "venv"])
                .arg(&venv)
                .status()
                .expect("python3 is needed for this test (with venv)");
            assert!(made.success(), "python3 -m venv {venv:?} failed");
        }
        let installed = Command::new(&python)
            .args([
                "-m",
                "pip",
                "install",
                "--disable-pip-version-check",
                "-q",
                "-r",
            ])
            .arg(&requirements)
            .status()
            .unwrap();
        assert!(
            installed.success(),
            "pip install -r {requirements:?} failed"
        );
        std::fs::write(&stamp, wanted).unwrap();
    }
    python
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_grpcio_client_is_served_whatever_authority_it_sends() {
    let python = tokio::task::spawn_blocking(python).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("csi/node/csi.sock");
    let listener = secretfs_csi::bind(&socket).unwrap();
    let (identity, node) = secretfs_csi::services(
        "secrets-store.csi.k8s.io",
        "0.1.0-test",
        "node-1",
        Arc::new(Nothing),
    );
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        secretfs_csi::serve(listener, identity, node, async {
            let _ = stopped.await;
        })
        .await
        .unwrap();
    });
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/csi_client.py");
    let out = tokio::task::spawn_blocking(move || {
        Command::new(python)
            .arg(script)
            .arg(&socket)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines,
        [
            "default\tok\tsecrets-store.csi.k8s.io",
            "percent-encoded\tok\tsecrets-store.csi.k8s.io",
            "path\tok\tnode-1",
            "localhost\tok\tnode-1",
            "publish\terror\tINVALID_ARGUMENT\tvolume_id is missing from the NodePublishVolume request",
        ],
        "{stdout}"
    );
    let _ = stop.send(());
    server.await.unwrap();
}
