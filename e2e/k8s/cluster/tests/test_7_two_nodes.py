"""Issue item 7: two node plugins on one API server writing the same Secret.
The chart's node plugin serves the real node; a second `secretfs node`
(the image's binary, node name node-b) is driven by the kubelet stand-in
(kubelet-standin) for a pod object bound to node-b. Each applies the Secret
with its own field manager; each node's owners must survive the other's
writes (server-side apply keeps ownerReferences per manager, keyed by uid)."""

import base64
import os
import subprocess
import time
from pathlib import Path

from conftest import (
    RUN, apply, azure_class, bare_pod, eventually, kjson, kubectl, set_secret, status_object_name,
    wait_running,
)

CLASS = "two-nodes"
SECRET = "two-nodes"
NODE_B = "node-b"
HERE = RUN / "node-b"
SOCKET = HERE / "csi.sock"
ROOT = HERE / "kubelet"


def secret():
    return kjson("get", "secret", SECRET)


def owner_uids():
    return {o["uid"] for o in secret()["metadata"].get("ownerReferences") or []}


def status_uid(pod_name):
    return kjson("get", "secretproviderclasspodstatus", status_object_name(pod_name, "default", CLASS))["metadata"]["uid"]


def standin(action, pod_file):
    subprocess.run([os.path.join(os.environ["E2E_BIN"], "kubelet-standin"), "--socket", str(SOCKET), "--root",
                    str(ROOT), action, str(pod_file)], check=True, timeout=60)


def test_two_node_plugins_keep_each_others_owners(cleanup, tmp_path):
    HERE.mkdir(parents=True, exist_ok=True)
    ROOT.mkdir(exist_ok=True)
    cleanup("secretproviderclass", CLASS)
    apply(azure_class(
        CLASS,
        [{"objectName": "two-nodes", "objectType": "secret"}],
        secret_objects=[{"secretName": SECRET, "type": "Opaque", "data": [{"objectName": "two-nodes", "key": "v"}]}],
        parameters={"secretfs.io/rotation-poll-interval": "5s"},
    ))
    # Node A: the real kubelet and the chart's node plugin.
    cleanup("pod", "two-nodes-a")
    apply(bare_pod("two-nodes-a", CLASS))
    wait_running("two-nodes-a")

    # Node B: a Node object, a pod bound to it, its own node plugin.
    cleanup("node", NODE_B)
    apply({"apiVersion": "v1", "kind": "Node", "metadata": {"name": NODE_B, "labels": {"secretfs-e2e": "stand-in"}}})
    cleanup("pod", "two-nodes-b")
    pod_b = bare_pod("two-nodes-b", CLASS)
    pod_b["spec"]["nodeName"] = NODE_B
    apply(pod_b)
    plugin = subprocess.Popen(
        [os.environ["SECRETFS_BIN"], "node", f"--endpoint=unix://{SOCKET}", f"--nodeid={NODE_B}",
         "--metrics-addr=", "--admin-socket=", "--sync-secrets=true",
         f"--azure-ca-file={RUN / 'emulator' / 'ca.pem'}", f"--provider-volume={HERE / 'providers'}",
         f"--additional-provider-volume-paths={HERE / 'providers'}"],
        stdout=open(os.environ["LOGS"] + "/node-b.log", "ab"), stderr=subprocess.STDOUT,
    )
    pod_file = tmp_path / "pod-b.yaml"
    try:
        eventually("node-b's plugin serves its socket", SOCKET.exists, 60)
        pod_file.write_text(kubectl("get", "pod", "two-nodes-b", "-o", "yaml"))
        standin("publish", pod_file)

        both = {status_uid("two-nodes-a"), status_uid("two-nodes-b")}
        eventually("the Secret is owned by both nodes' pods", lambda: owner_uids() == both, 30)
        fields = kjson("get", "secret", SECRET, "--show-managed-fields")["metadata"]["managedFields"]
        managers = {m["manager"] for m in fields}
        assert {"secretfs-k8s-e2e-node", f"secretfs-{NODE_B}"} <= managers, managers

        # Both nodes write the Secret again after a rotation; the owners of
        # each survive the other's apply.
        set_secret("kv-demo", "two-nodes", "two-nodes-version-2")
        eventually("the Secret has the rotated value", lambda: base64.b64decode(
            secret()["data"]["v"]).decode() == "two-nodes-version-2", 60)
        deadline = time.monotonic() + 15  # three refresh intervals of both nodes
        while time.monotonic() < deadline:
            assert owner_uids() == both, f"owners {owner_uids()} != {both}"
            time.sleep(0.5)
    finally:
        if pod_file.exists():
            subprocess.run([os.path.join(os.environ["E2E_BIN"], "kubelet-standin"), "--socket", str(SOCKET),
                            "--root", str(ROOT), "unpublish", str(pod_file)], timeout=60)
        plugin.terminate()
        plugin.wait(timeout=30)
