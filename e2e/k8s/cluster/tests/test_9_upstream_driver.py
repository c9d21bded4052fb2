"""Ours served to theirs, on the real cluster (issue 19): the upstream Secrets
Store CSI Driver's node plugin (sigs.k8s.io/secrets-store-csi-driver, built
by e2e/peers/build.sh, image by images.py), installed with its own Helm chart
and e2e/peers/cluster/driver-values.yaml, with each of two providers as its
provider `azure`, one after the other:

- `secretfs provider` (e2e/peers/cluster/secretfs-provider.yaml, secretfs's
  image);
- the upstream Azure provider v1.8.2 (built by e2e/peers/build.sh, image by
  images.py), installed with its own Helm chart and
  e2e/peers/cluster/azure-provider-values.yaml: the reference the first is
  held to.

For each, the seed class and pod, unchanged, through kubelet and
containerd: the file in the container, rotation, `secretObjects`, and
unpublish.

Both charts register the CSI driver name `secrets-store.csi.k8s.io` and own
a CSIDriver object of that name, so they cannot be installed side by side:
this module uninstalls secretfs's release, installs upstream's and the
provider, and uninstalls both at its end without reinstalling secretfs's.
scripts/k8s-e2e.sh therefore runs it in a phase of its own after every other
test (marker `upstream_driver`; cluster.sh, "peers" phase).
"""

from __future__ import annotations

import base64
import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import (
    DRIVER_LABELS,
    KEEPER_LABELS,
    NODE,
    REPO,
    SEED,
    SEED_VALUE,
    NODE_MI,
    apply,
    counter,
    delete,
    env_of,
    eventually,
    exec_in,
    kjson,
    kubectl,
    pods_of,
    set_secret,
    wait_running,
)

pytestmark = pytest.mark.upstream_driver

HELM_PY = REPO / "e2e" / "k8s" / "cluster" / "helm.py"
VALUES = REPO / "e2e" / "peers" / "cluster" / "driver-values.yaml"
PROVIDER = REPO / "e2e" / "peers" / "cluster" / "secretfs-provider.yaml"
AZURE_VALUES = REPO / "e2e" / "peers" / "cluster" / "azure-provider-values.yaml"
UPSTREAM_LABELS = "app=secrets-store-csi-driver"
# The provider `azure` of each run: its pods' labels and image.
PROVIDERS = {
    "secretfs-provider": ("app=secretfs-provider-azure", "localhost:5000/secretfs:e2e-1"),
    "upstream-azure-provider": ("app=csi-secrets-store-provider-azure", "localhost:5000/provider-azure:v1.8.2"),
}
DRIVER_NAME = "secrets-store.csi.k8s.io"
POD = "nginx-secrets-store-inline"
VOLUME = "secrets-store-inline"
SECRETFS_IMAGE = PROVIDERS["secretfs-provider"][1]


def digest(value: str | bytes) -> str:
    """What assertions compare: the vault's values are never printed."""
    if isinstance(value, str):
        value = value.encode()
    return hashlib.sha256(value).hexdigest()[:16]


def helm(*args: str) -> None:
    proc = subprocess.run([sys.executable, str(HELM_PY), *args], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"helm.py {' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()}"


def peers_inputs() -> tuple[Path, Path, Path]:
    """The upstream binaries' directory (their images were pushed by
    cluster.sh), the driver's chart and the Azure provider's chart."""
    missing = ("the upstream driver is not built: run e2e/peers/build.sh (CI runs it in .ci/run before the "
               "tests); scripts/k8s-e2e.sh takes its cached bin directory from `e2e/peers/build.sh --cached`")
    bin_dir = os.environ.get("PEERS_BIN", "")
    chart = os.environ.get("PEERS_CHART", "")
    if not bin_dir or not (Path(bin_dir) / "secrets-store-csi-driver").is_file():
        pytest.fail(f"{missing} (PEERS_BIN={bin_dir!r})", pytrace=False)
    if not chart or not (Path(chart) / "Chart.yaml").is_file():
        pytest.fail(f"{missing} (PEERS_CHART={chart!r}: the chart comes with the driver's Go module)", pytrace=False)
    azure_chart = os.environ.get("PEERS_AZURE_CHART", "")
    if not azure_chart or not (Path(azure_chart) / "Chart.yaml").is_file():
        pytest.fail(f"{missing} (PEERS_AZURE_CHART={azure_chart!r}: the chart comes with the provider's Go module)",
                    pytrace=False)
    return Path(bin_dir), Path(chart), Path(azure_chart)


def registered_drivers() -> list[str]:
    return [d["name"] for d in kjson("get", "csinode", NODE)["spec"].get("drivers") or []]


def live(label: str) -> list[dict]:
    return [p for p in pods_of(label, "kube-system") if p["metadata"].get("deletionTimestamp") is None]


def provider_daemonset() -> dict:
    """secretfs-provider.yaml with the cluster's secretfs image, plus what this
    cluster needs: the Key Vault emulator's CA (the ConfigMap cluster.sh
    made for secretfs's chart) and a vault cache shorter than the driver's
    10 s rotation poll of driver-values.yaml."""
    ds = yaml.safe_load(PROVIDER.read_text().replace("IMAGE", SECRETFS_IMAGE))
    spec = ds["spec"]["template"]["spec"]
    container = spec["containers"][0]
    container["args"] += ["--azure-ca-file=/etc/secretfs/azure-ca/ca.crt", "--cache-max-age=5s", "--log=info"]
    container["volumeMounts"].append({"name": "azure-ca", "mountPath": "/etc/secretfs/azure-ca", "readOnly": True})
    spec["volumes"].append({"name": "azure-ca", "configMap": {"name": "kv-emulator-ca"}})
    return ds


@pytest.fixture(scope="module")
def secretfs_out():
    """secretfs's chart out, once for both runs (it is not reinstalled)."""
    helm("uninstall")
    eventually("secretfs's node plugin and keeper pods gone",
               lambda: not pods_of(DRIVER_LABELS, "kube-system") and not pods_of(KEEPER_LABELS, "kube-system"),
               timeout=120, interval=1)
    eventually("secretfs's registration removed from the node", lambda: DRIVER_NAME not in registered_drivers(),
               timeout=60, interval=1)


@pytest.fixture(scope="module", params=list(PROVIDERS))
def upstream_driver(request, secretfs_out):
    """The upstream chart and one provider in (the parameter); all of it
    removed at the end. Yields the provider's name."""
    _, chart, azure_chart = peers_inputs()
    provider_labels = PROVIDERS[request.param][0]
    installed = []
    try:
        if request.param == "secretfs-provider":
            apply(provider_daemonset())
        else:
            helm("install-azure-provider", "--chart", str(azure_chart), "--values", str(AZURE_VALUES))
        installed.append("provider")
        helm("install-upstream", "--chart", str(chart), "--values", str(VALUES))
        installed.append("chart")

        def ready(label: str, containers: int):
            pods = live(label)
            return len(pods) == 1 and pods[0]["status"].get("phase") == "Running" and \
                len(pods[0]["status"].get("containerStatuses") or []) == containers and \
                all(s.get("ready") for s in pods[0]["status"]["containerStatuses"])

        eventually(f"{request.param} pod ready", lambda: ready(provider_labels, 1), timeout=120, interval=1)
        eventually("upstream driver pod ready (driver, registrar, liveness probe)",
                   lambda: ready(UPSTREAM_LABELS, 3), timeout=180, interval=1)
        eventually("upstream driver registered with kubelet", lambda: DRIVER_NAME in registered_drivers(),
                   timeout=120, interval=1)
        yield request.param
    finally:
        save_logs(provider_labels)
        if "chart" in installed:
            helm("uninstall-upstream")
        if "provider" in installed:
            if request.param == "secretfs-provider":
                delete("daemonset", "secretfs-provider-azure", "kube-system")
            else:
                helm("uninstall-azure-provider")
        eventually("upstream driver and provider pods gone",
                   lambda: not pods_of(UPSTREAM_LABELS, "kube-system") and not pods_of(provider_labels, "kube-system"),
                   timeout=120, interval=1)
        eventually("upstream driver's registration removed from the node",
                   lambda: DRIVER_NAME not in registered_drivers(), timeout=60, interval=1)


def save_logs(provider_labels: str) -> None:
    """The upstream driver's and the provider's logs, kept with the run's
    (cluster.sh's teardown saves those of the pods still there; these are
    gone by then)."""
    logs = os.environ.get("LOGS")
    if not logs:
        return
    Path(logs, "pods").mkdir(parents=True, exist_ok=True)
    for label in (UPSTREAM_LABELS, provider_labels):
        for p in pods_of(label, "kube-system"):
            name = p["metadata"]["name"]
            out = kubectl("logs", "-n", "kube-system", name, "--all-containers", "--prefix", "--timestamps", check=False)
            Path(logs, "pods", f"kube-system_{name}.log").write_text(out)


def vault_reads() -> int:
    """Reads of the seed's secret by the node's managed identity (the
    emulator's counters): only a provider fetches from the vault."""
    return counter(route="secrets.get", vault="kv-demo", object="sql-password", identity=NODE_MI, status="200")


def volume_mount(pod_uid: str) -> tuple[str, str] | None:
    """(mount point, file system type) of the pod's CSI volume in the
    cluster's mount namespace (the tests run in it), as kubelet's target
    path: <root>/pods/<uid>/volumes/kubernetes.io~csi/<volume>/mount."""
    suffix = f"/pods/{pod_uid}/volumes/kubernetes.io~csi/{VOLUME}/mount"
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        if fields[4].endswith(suffix):
            sep = fields.index("-")
            return fields[4], fields[sep + 1]
    return None


def test_upstream_driver_with_each_provider_mounts_rotates_and_syncs(upstream_driver):
    provider_labels, provider_image = PROVIDERS[upstream_driver]
    spc_file = SEED / "secretproviderclass.yaml"
    pod_file = SEED / "pod.yaml"
    rotated = "rotated-through-upstream-" + os.urandom(6).hex()
    reads_before = vault_reads()
    try:
        kubectl("apply", "-f", str(spc_file))
        kubectl("apply", "-f", str(pod_file))
        pod = wait_running(POD, timeout=180)
        uid = pod["metadata"]["uid"]

        # Served by upstream's node plugin: its volume is the tmpfs it
        # mounts itself (secretfs's node plugin mounts FUSE).
        mount = volume_mount(uid)
        assert mount is not None and mount[1] == "tmpfs", mount
        # ... with the provider behind the socket `azure.sock`: this run's,
        # the only provider on the node.
        provider = live(provider_labels)[0]
        assert provider["spec"]["containers"][0]["image"] == provider_image
        assert exec_in(POD, "ls", "/mnt/secrets-store").split() == ["SECRET_1"]
        assert digest(exec_in(POD, "cat", "/mnt/secrets-store/SECRET_1")) == digest(SEED_VALUE)
        reads_mounted = vault_reads()
        assert reads_mounted > reads_before, (reads_before, reads_mounted)

        # Upstream's status object and its Secret sync (secretObjects): the
        # Secret `sqlserver` exists and the pod's env came from it.
        status = kjson("get", "secretproviderclasspodstatus", f"{POD}-default-azure-kvname")
        assert status["status"]["mounted"] is True, status["status"]
        assert status["status"]["secretProviderClassName"] == "azure-kvname"
        secret = kjson("get", "secret", "sqlserver")
        assert secret["type"] == "Opaque"
        assert secret["metadata"]["labels"].get("secrets-store.csi.k8s.io/managed") == "true", secret["metadata"]
        assert digest(base64.b64decode(secret["data"]["dbpassword"])) == digest(SEED_VALUE)
        assert digest(env_of(POD, "dbpassword")) == digest(SEED_VALUE)

        # Rotation: a new latest version in the vault reaches the file in
        # the running container and the synced Secret. In v1.6.1 rotation is
        # kubelet's republish (the chart sets requiresRepublish with
        # enableSecretRotation): at each republish of the running pod
        # (kubelet's pod sync, every 60-90 s) the driver asks the provider
        # again when its last mount is older than --rotation-poll-interval
        # (10 s here), rewrites its tmpfs and re-syncs the Secret; `secretfs
        # provider`'s vault cache lives 5 s, the upstream provider has none.
        set_secret("kv-demo", "sql-password", rotated)

        def file_rotated():
            return digest(exec_in(POD, "cat", "/mnt/secrets-store/SECRET_1")) == digest(rotated)

        eventually("the rotated value in the pod's file", file_rotated, timeout=180, interval=1)
        assert vault_reads() > reads_mounted

        def secret_rotated():
            data = kjson("get", "secret", "sqlserver")["data"]["dbpassword"]
            return digest(base64.b64decode(data)) == digest(rotated)

        eventually("the rotated value in the synced Secret", secret_rotated, timeout=60, interval=1)

        # Unpublish: deleting the pod makes kubelet call upstream's
        # NodeUnpublishVolume, which unmounts its tmpfs; the garbage
        # collector removes the status object and then the Secret it owns.
        delete("pod", POD)
        eventually("the pod's volume unmounted", lambda: volume_mount(uid) is None, timeout=60, interval=1)
        eventually("the status object gone",
                   lambda: not kubectl("get", "secretproviderclasspodstatus", "-n", "default", "-o", "name").strip(),
                   timeout=60, interval=1)
        eventually("the synced Secret gone",
                   lambda: not kubectl("get", "secret", "sqlserver", "--ignore-not-found", "-o", "name").strip(),
                   timeout=60, interval=1)
    finally:
        delete("pod", POD)
        kubectl("delete", "-f", str(spc_file), "--ignore-not-found")
        # The seed's value back as the latest version, for any later run.
        set_secret("kv-demo", "sql-password", SEED_VALUE)
