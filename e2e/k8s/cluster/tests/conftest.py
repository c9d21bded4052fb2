"""Helpers of the real-cluster tests (run by e2e/k8s/cluster/cluster.sh inside
the cluster's namespaces, with KUBECONFIG set to the cluster's admin).

Everything goes through the real components: kubectl against the API server,
`kubectl exec` into containers that containerd runs, the Key Vault
emulator's admin API for what happens in the vault.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml

REPO = Path(os.environ.get("REPO", Path(__file__).resolve().parents[4]))
SEED = REPO / "tests" / "fixtures" / "seed"
RUN = Path(os.environ.get("K8S_E2E_RUN", "/run/secretfs-k8s-e2e"))
NODE = os.environ.get("K8S_E2E_NODE", "k8s-e2e-node")
NODE_IP = os.environ.get("K8S_E2E_NODE_IP", "10.222.0.1")
ADMIN = f"http://{NODE_IP}:8080/admin"
CLUSTER_SH = REPO / "e2e" / "k8s" / "cluster" / "cluster.sh"
TENANT = "9c0d2e7b-1a3f-4b6c-8d5e-7f1a2b3c4d5e"
NODE_MI = "5a1d3e0c-6f0e-4c55-9a57-3c2f1b7d9e21"
SEED_VALUE = "Sql-Passw0rd-from-kv-demo"
DRIVER_LABELS = "app.kubernetes.io/name=secretfs,app.kubernetes.io/instance=secretfs"
SPC_API = "secrets-store.csi.x-k8s.io/v1"


class CommandFailed(AssertionError):
    pass


def kubectl(*args: str, input: str | None = None, check: bool = True, timeout: float = 60) -> str:
    proc = subprocess.run(["kubectl", *args], input=input, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise CommandFailed(f"kubectl {' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc.stdout


def kjson(*args: str) -> Any:
    return json.loads(kubectl(*args, "-o", "json"))


def apply(manifest: str | dict | list) -> None:
    if isinstance(manifest, (dict, list)):
        docs = manifest if isinstance(manifest, list) else [manifest]
        manifest = yaml.safe_dump_all(docs)
    kubectl("apply", "-f", "-", input=manifest)


def delete(kind: str, name: str, namespace: str = "default", wait: bool = True) -> None:
    kubectl("delete", kind, name, "-n", namespace, "--ignore-not-found", f"--wait={str(wait).lower()}", timeout=180)


def eventually(what: str, check: Callable[[], Any], timeout: float = 60, interval: float = 0.2) -> Any:
    """Polls `check` until it returns a truthy value (returned) or raises no
    AssertionError; fails with the last reason after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            value = check()
            if value:
                return value
            last = value
        except (AssertionError, CommandFailed, subprocess.TimeoutExpired) as e:
            last = e
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout}s; last: {last}")
        time.sleep(interval)


def pod(name: str, namespace: str = "default") -> dict:
    return kjson("get", "pod", name, "-n", namespace)


def wait_running(name: str, namespace: str = "default", timeout: float = 120) -> dict:
    def running():
        p = pod(name, namespace)
        statuses = p["status"].get("containerStatuses") or []
        if p["status"].get("phase") == "Running" and statuses and all(s.get("ready") for s in statuses):
            return p
        return None

    try:
        return eventually(f"pod {namespace}/{name} Running", running, timeout)
    except AssertionError as e:
        events = kubectl("get", "events", "-n", namespace, "--field-selector", f"involvedObject.name={name}", check=False)
        raise AssertionError(f"{e}\nevents:\n{events}") from None


def exec_in(name: str, *command: str, namespace: str = "default", container: str | None = None) -> str:
    args = ["exec", name, "-n", namespace]
    if container:
        args += ["-c", container]
    return kubectl(*args, "--", *command)


def env_of(name: str, variable: str, namespace: str = "default") -> str:
    """A variable of the container's environment (as the shell sees it)."""
    return exec_in(name, "sh", "-c", f'printf %s "${variable}"', namespace=namespace)


def events_of(name: str, namespace: str = "default") -> list[dict]:
    return kjson("get", "events", "-n", namespace, "--field-selector", f"involvedObject.name={name}")["items"]


# ---------------------------------------------------------------- emulator


def admin(method: str, path: str, body: Any = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(f"{ADMIN}{path}", data=data, method=method, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        text = resp.read()
    return json.loads(text) if text else None


def set_secret(vault: str, name: str, value: str) -> str:
    """A new latest version in the emulator's vault; returns its version id."""
    return admin("POST", f"/vaults/{vault}/secrets/{name}", {"value": value})["version"]


def counter(**filters: str) -> int:
    query = "&".join(f"{k}={v}" for k, v in filters.items())
    return admin("GET", f"/counters?{query}")["count"]


# ---------------------------------------------------------------- manifests


def azure_class(name: str, objects: list[dict], *, vault: str = "kv-demo", secret_objects: list | None = None,
                parameters: dict | None = None, namespace: str = "default") -> dict:
    """A v1 SecretProviderClass of the built-in azure provider with the
    node's managed identity (the seed's), unless `parameters` say otherwise."""
    params = {
        "useVMManagedIdentity": "true",
        "userAssignedIdentityID": NODE_MI,
        "keyvaultName": vault,
        "tenantId": TENANT,
        "objects": yaml.safe_dump({"array": [yaml.safe_dump(o) for o in objects]}),
    }
    params.update(parameters or {})
    spec: dict[str, Any] = {"provider": "azure", "parameters": params}
    if secret_objects:
        spec["secretObjects"] = secret_objects
    return {"apiVersion": SPC_API, "kind": "SecretProviderClass", "metadata": {"name": name, "namespace": namespace}, "spec": spec}


READER = "trap 'exit 0' TERM INT; while :; do sleep 1; done"


def csi_volume(spc: str, name: str = "secrets") -> dict:
    return {"name": name, "csi": {"driver": "secrets-store.csi.k8s.io", "readOnly": True,
                                  "volumeAttributes": {"secretProviderClass": spc}}}


def pod_spec(spc: str, *, command: str = READER, env: list | None = None, extra_mounts: list | None = None,
             security: dict | None = None, service_account: str | None = None) -> dict:
    container: dict[str, Any] = {
        "name": "app",
        "image": "nginx",
        "command": ["/bin/sh", "-c", command],
        "volumeMounts": [{"name": "secrets", "mountPath": "/mnt/secrets-store", "readOnly": True}, *(extra_mounts or [])],
    }
    if env:
        container["env"] = env
    spec: dict[str, Any] = {"containers": [container], "volumes": [csi_volume(spc)], "terminationGracePeriodSeconds": 2}
    if security:
        spec["securityContext"] = security
    if service_account:
        spec["serviceAccountName"] = service_account
    return spec


def bare_pod(name: str, spc: str, namespace: str = "default", labels: dict | None = None, **kw: Any) -> dict:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace, "labels": labels or {"app": name}},
            "spec": pod_spec(spc, **kw)}


def deployment(name: str, spc: str, replicas: int = 1, namespace: str = "default", **kw: Any) -> dict:
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": namespace},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}}, "spec": pod_spec(spc, **kw)}}}


def pods_of(label: str, namespace: str = "default") -> list[dict]:
    return kjson("get", "pods", "-n", namespace, "-l", label)["items"]


def status_object_name(pod_name: str, namespace: str, spc: str) -> str:
    return f"{pod_name}-{namespace}-{spc}"


def owner_uids(obj: dict) -> set[str]:
    return {o["uid"] for o in obj["metadata"].get("ownerReferences") or []}


def fuse_mounts() -> list[str]:
    """Mount points of FUSE file systems in the cluster's mount namespace
    (the tests run in it)."""
    out = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        sep = fields.index("-")
        if fields[sep + 1].startswith("fuse"):
            out.append(fields[4])
    return out


def node_ready(name: str) -> bool:
    conditions = kjson("get", "node", name)["status"].get("conditions") or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def driver_pod() -> dict:
    pods = [p for p in pods_of(DRIVER_LABELS, "kube-system") if p["metadata"].get("deletionTimestamp") is None
            and "keeper" not in p["metadata"]["name"]]
    assert len(pods) == 1, [p["metadata"]["name"] for p in pods]
    return pods[0]


@pytest.fixture
def cleanup():
    """Objects to delete after the test: call cleanup(kind, name[, ns])."""
    items: list[tuple[str, str, str]] = []

    def add(kind: str, name: str, namespace: str = "default") -> None:
        items.append((kind, name, namespace))

    yield add
    for kind, name, namespace in reversed(items):
        delete(kind, name, namespace, wait=False)
    for kind, name, namespace in reversed(items):
        if kind in ("pod", "deployment"):
            delete(kind, name, namespace, wait=True)


KEEPER_LABELS = "app.kubernetes.io/name=secretfs-keeper,app.kubernetes.io/instance=secretfs"


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "upstream_driver: runs with the upstream driver's chart in place of secretfs's (uninstalls it); "
        "cluster.sh runs these in their own phase after the others",
    )
