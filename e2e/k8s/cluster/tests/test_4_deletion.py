"""Issue item 4: deleting a pod removes its FUSE mount, its status object, its
Secret (through the real garbage collector: the Secret's owner is the status
object, whose owner is the pod) and the node plugin's state record."""

from pathlib import Path

from conftest import (
    CommandFailed, apply, azure_class, bare_pod, delete, eventually, fuse_mounts, kjson, kubectl,
    status_object_name, wait_running,
)

# The chart's --state-dir=/csi/state, on the host (the node's plugin dir).
STATE_DIR = Path("/var/lib/kubelet/plugins/csi-secrets-store/state")


def gone(*args):
    try:
        kjson(*args)
    except CommandFailed as e:
        return "NotFound" in str(e)
    return False


def test_pod_deletion_removes_mount_status_secret_and_state(cleanup):
    cleanup("secretproviderclass", "deletion")
    apply(azure_class(
        "deletion",
        [{"objectName": "sql-password", "objectAlias": "SECRET_1", "objectType": "secret"}],
        secret_objects=[{"secretName": "deletion", "type": "Opaque", "data": [{"objectName": "SECRET_1", "key": "k"}]}],
    ))
    cleanup("pod", "deletion")
    apply(bare_pod("deletion", "deletion"))
    uid = wait_running("deletion")["metadata"]["uid"]
    status_name = status_object_name("deletion", "default", "deletion")

    mounts = [m for m in fuse_mounts() if uid in m]
    assert len(mounts) >= 1, fuse_mounts()  # kubelet's target path (and the container's bind of it)
    kjson("get", "secretproviderclasspodstatus", status_name)
    kjson("get", "secret", "deletion")
    records = lambda: [f for f in STATE_DIR.glob("*.json") if uid in f.read_text()]  # noqa: E731
    assert len(records()) == 1, list(STATE_DIR.iterdir())

    delete("pod", "deletion", wait=True)

    eventually("no FUSE mount of the pod", lambda: not [m for m in fuse_mounts() if uid in m], 30)
    eventually("status object collected", lambda: gone("get", "secretproviderclasspodstatus", status_name), 60)
    eventually("Secret collected", lambda: gone("get", "secret", "deletion"), 60)
    eventually("state record removed", lambda: not records(), 30)
    # Nothing of the pod is left under kubelet's pods directory either.
    assert not Path(f"/var/lib/kubelet/pods/{uid}").exists() or not any(
        Path(f"/var/lib/kubelet/pods/{uid}").rglob("mount")
    ), kubectl("get", "pods", "-A")
