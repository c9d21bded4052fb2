"""What the secretfs chart must render, checked offline (pytest; run by charts/check.sh).

Every test renders the real chart through Helm's Go SDK (chartlib) with some
values and asserts what a cluster operator or kubelet would notice.
"""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path
from typing import Any

import helm_python as helm
import jsonschema
import pytest
import yaml

import chartlib
from chartlib import container, daemonset, find, manifests

ALL_FEATURES = chartlib.load_values_file(chartlib.CHART / "ci" / "all-features-values.yaml")
MINIMAL = chartlib.load_values_file(chartlib.CHART / "ci" / "minimal-values.yaml")

# The metric names the driver exports (the contract with src/metrics.rs).
METRICS = [
    "node_publish_total",
    "node_publish_error_total",
    "node_unpublish_total",
    "node_unpublish_error_total",
    "rotation_reconcile_total",
    "rotation_reconcile_error_total",
    "sync_k8s_secret_total",
    "secretfs_vault_requests_total",
    "secretfs_vault_request_duration_seconds",
    "secretfs_cache_hits_total",
    "secretfs_cache_misses_total",
    "secretfs_cache_bytes",
    "secretfs_sync_errors_total",
    "secretfs_fuse_requests_total",
    "secretfs_fuse_errors_total",
    "secretfs_object_expiry_timestamp_seconds",
    "secretfs_unread_files",
    "secretfs_audited_reads_total",
    "secretfs_audit_unattributed_reads_total",
    "secretfs_audit_can_attribute",
]


@pytest.fixture(scope="module")
def default_docs() -> list[dict[str, Any]]:
    return manifests()


@pytest.fixture(scope="module")
def all_docs() -> list[dict[str, Any]]:
    return manifests(ALL_FEATURES)


def pod_spec(docs: list[dict[str, Any]]) -> dict[str, Any]:
    return daemonset(docs)["spec"]["template"]["spec"]


def volume(docs: list[dict[str, Any]], name: str) -> dict[str, Any]:
    return next(v for v in pod_spec(docs)["volumes"] if v["name"] == name)


def mount(c: dict[str, Any], name: str) -> dict[str, Any]:
    return next(m for m in c["volumeMounts"] if m["name"] == name)


def args_dict(c: dict[str, Any]) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for a in c["args"]:
        key, _, value = a.partition("=")
        out[key] = value if _ else None
    return out


# ---------------------------------------------------------------- objects


def test_default_install_objects(default_docs):
    kinds = sorted((d["kind"], d["metadata"]["name"]) for d in default_docs)
    assert kinds == [
        ("CSIDriver", "secrets-store.csi.k8s.io"),
        ("ClusterRole", "secretfs-node"),
        ("ClusterRoleBinding", "secretfs-node"),
        ("DaemonSet", "secretfs"),
        ("DaemonSet", "secretfs-keeper"),
        ("ServiceAccount", "secretfs"),
    ]
    for d in default_docs:
        if d["kind"] in ("DaemonSet", "ServiceAccount"):
            assert d["metadata"]["namespace"] == chartlib.NAMESPACE


def test_all_features_objects(all_docs):
    kinds = sorted(d["kind"] for d in all_docs)
    assert kinds == sorted(
        [
            "CSIDriver",
            "ClusterRole",
            "ClusterRole",
            "ClusterRoleBinding",
            "ClusterRoleBinding",
            "ConfigMap",
            "DaemonSet",
            "DaemonSet",
            "PrometheusRule",
            "Service",
            "ServiceAccount",
            "ServiceMonitor",
        ]
    )


def test_selector_matches_pod_labels_and_service_account(default_docs):
    ds = daemonset(default_docs)
    selector = ds["spec"]["selector"]["matchLabels"]
    labels = ds["spec"]["template"]["metadata"]["labels"]
    assert selector.items() <= labels.items()
    assert ds["spec"]["template"]["spec"]["serviceAccountName"] == find(default_docs, "ServiceAccount")["metadata"]["name"]


def test_existing_service_account_is_used_not_created():
    docs = manifests(MINIMAL)
    assert not [d for d in docs if d["kind"] == "ServiceAccount"]
    assert pod_spec(docs)["serviceAccountName"] == "secretfs-preexisting"
    for b in (d for d in docs if d["kind"] == "ClusterRoleBinding"):
        assert b["subjects"] == [{"kind": "ServiceAccount", "name": "secretfs-preexisting", "namespace": "kube-system"}]


# ---------------------------------------------------------------- the driver container


def test_driver_is_privileged_root_and_sidecars_are_not(default_docs):
    driver = container(default_docs, "secrets-store")
    assert driver["securityContext"]["privileged"] is True
    assert driver["securityContext"]["runAsUser"] == 0
    for name in ("node-driver-registrar", "liveness-probe"):
        sc = container(default_docs, name)["securityContext"]
        assert not sc.get("privileged", False)
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"]["drop"] == ["ALL"]


def test_driver_args_with_defaults(default_docs):
    assert container(default_docs, "secrets-store")["args"] == [
        "node",
        "--endpoint=unix:///csi/csi.sock",
        "--nodeid=$(NODE_NAME)",
        "--drivername=secrets-store.csi.k8s.io",
        "--metrics-addr=:8095",
        "--enable-secret-rotation=true",
        "--rotation-poll-interval=2m",
        "--expiry-warning=168h",
        "--unread-threshold=24h",
        "--log=info",
        "--read-mode=page-cache",
        "--sync-secrets=false",
        "--admin-socket=/var/run/secretfs/admin.sock",
        "--provider-volume=/var/run/secrets-store-csi-providers",
        "--additional-provider-volume-paths=/etc/kubernetes/secrets-store-csi-providers",
        "--state-dir=/csi/state",
        "--keeper-socket=/keeper/keeper.sock",
    ]


def test_audit_runs_the_node_in_the_host_pid_namespace(default_docs, all_docs):
    # Off by default: no host PID namespace, and no --audit-log (the
    # binary's default, standard output, applies).
    assert "hostPID" not in pod_spec(default_docs)
    assert "--audit-log" not in args_dict(container(default_docs, "secrets-store"))
    assert pod_spec(all_docs)["hostPID"] is True
    only_audit = manifests({"audit": {"enabled": True, "log": "-"}})
    assert pod_spec(only_audit)["hostPID"] is True
    assert args_dict(container(only_audit, "secrets-store"))["--audit-log"] == "-"
    # The keeper never needs it.
    keeper = [d for d in only_audit if d.get("kind") == "DaemonSet" and d is not daemonset(only_audit)]
    for d in keeper:
        assert "hostPID" not in d["spec"]["template"]["spec"]


def test_driver_args_follow_values(all_docs):
    args = args_dict(container(all_docs, "secrets-store"))
    assert args["--metrics-addr"] == ":9095"
    assert args["--rotation-poll-interval"] == "90s"
    assert args["--expiry-warning"] == "72h"
    assert args["--unread-threshold"] == "168h"
    assert args["--audit-log"] == "/var/run/secretfs/audit.log"
    assert args["--log"] == "secretfs=debug,info"
    assert "--log-format-json" in args and args["--log-format-json"] is None
    assert args["--read-mode"] == "atomic"
    assert args["--sync-secrets"] == "true"
    assert args["--provider-volume"] == "/var/run/secrets-store-csi-providers"
    # the duplicate of providersDir is dropped, order kept
    assert args["--additional-provider-volume-paths"] == "/etc/kubernetes/secrets-store-csi-providers,/opt/providers"


def host_dirs(docs: list[dict[str, Any]]) -> dict[str, str]:
    """Where the driver's socket, registration path and keeper socket live on the host."""
    registrar = args_dict(container(docs, "node-driver-registrar"))
    return {
        "plugin": volume(docs, "plugin-dir")["hostPath"]["path"],
        "registration": registrar["--kubelet-registration-path"],
        "keeper-node": volume(docs, "keeper-dir")["hostPath"]["path"],
        "keeper": next(v for v in keeper_spec(docs)["volumes"] if v["name"] == "keeper-dir")["hostPath"]["path"],
    }


def test_driver_name_is_passed_everywhere():
    docs = manifests({"driverName": "secretfs.example.com"})
    assert args_dict(container(docs, "secrets-store"))["--drivername"] == "secretfs.example.com"
    assert find(docs, "CSIDriver")["metadata"]["name"] == "secretfs.example.com"
    # its own socket directory: next to the upstream driver, the two must
    # not share (and overwrite) plugins/csi-secrets-store/csi.sock
    assert host_dirs(docs) == {
        "plugin": "/var/lib/kubelet/plugins/secretfs.example.com/",
        "registration": "/var/lib/kubelet/plugins/secretfs.example.com/csi.sock",
        "keeper-node": "/var/lib/kubelet/plugins/secretfs.example.com-keeper",
        "keeper": "/var/lib/kubelet/plugins/secretfs.example.com-keeper",
    }


@pytest.mark.parametrize("values", [None, {"driverName": "secrets-store.csi.k8s.io"}], ids=["default", "explicit"])
def test_upstream_driver_name_keeps_upstream_socket_dir(values):
    # in-place replacement of the upstream driver: same registration path
    assert host_dirs(manifests(values)) == {
        "plugin": "/var/lib/kubelet/plugins/csi-secrets-store/",
        "registration": "/var/lib/kubelet/plugins/csi-secrets-store/csi.sock",
        "keeper-node": "/var/lib/kubelet/plugins/csi-secrets-store-keeper",
        "keeper": "/var/lib/kubelet/plugins/csi-secrets-store-keeper",
    }


def test_two_driver_names_share_no_host_dir():
    a = host_dirs(manifests())
    b = host_dirs(manifests({"driverName": "secretfs.csi.example.com", "kubeletRootDir": "/var/lib/kubelet/"}))
    for key in ("plugin", "keeper"):
        assert a[key].rstrip("/") != b[key].rstrip("/")
        assert not b[key].startswith(a[key].rstrip("/") + "/") and not a[key].startswith(b[key].rstrip("/") + "/")


def test_without_external_providers_no_provider_flags_or_mounts():
    docs = manifests(MINIMAL)
    driver = container(docs, "secrets-store")
    assert not [a for a in driver["args"] if "provider" in a]
    assert not [v for v in pod_spec(docs)["volumes"] if v["name"].startswith("providers-dir")]
    assert "--log-format-json" not in driver["args"]


def test_provider_dirs_mounted_at_their_host_paths(all_docs):
    driver = container(all_docs, "secrets-store")
    mounts = {m["name"]: m["mountPath"] for m in driver["volumeMounts"] if m["name"].startswith("providers-dir")}
    hosts = {v["name"]: v["hostPath"]["path"] for v in pod_spec(all_docs)["volumes"] if v["name"].startswith("providers-dir")}
    assert mounts == hosts
    assert sorted(hosts.values()) == [
        "/etc/kubernetes/secrets-store-csi-providers",
        "/opt/providers",
        "/var/run/secrets-store-csi-providers",
    ]


def test_node_name_from_downward_api(default_docs):
    env = container(default_docs, "secrets-store")["env"]
    assert {"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}} in env


@pytest.mark.parametrize(
    "root, expected",
    [
        (None, "/var/lib/kubelet"),
        ("/var/snap/microk8s/common/var/lib/kubelet/", "/var/snap/microk8s/common/var/lib/kubelet"),
        ("/opt/rke/var/lib/kubelet", "/opt/rke/var/lib/kubelet"),
    ],
)
def test_kubelet_dirs_and_bidirectional_mount(root, expected):
    docs = manifests(None if root is None else {"kubeletRootDir": root})
    driver = container(docs, "secrets-store")
    pods = mount(driver, "mountpoint-dir")
    # target paths arrive as host paths, so the mount must sit at the same path
    assert pods["mountPath"] == f"{expected}/pods"
    assert pods["mountPropagation"] == "Bidirectional"
    assert volume(docs, "mountpoint-dir")["hostPath"]["path"] == f"{expected}/pods"
    assert volume(docs, "plugin-dir")["hostPath"]["path"] == f"{expected}/plugins/csi-secrets-store/"
    assert volume(docs, "registration-dir")["hostPath"]["path"] == f"{expected}/plugins_registry/"
    registrar = container(docs, "node-driver-registrar")
    assert f"--kubelet-registration-path={expected}/plugins/csi-secrets-store/csi.sock" in registrar["args"]
    assert mount(registrar, "registration-dir")["mountPath"] == "/registration"
    # only the driver propagates mounts
    for c in pod_spec(docs)["containers"]:
        if c["name"] != "secrets-store":
            assert all("mountPropagation" not in m for m in c["volumeMounts"])


def test_dev_fuse_is_the_host_char_device(default_docs):
    assert volume(default_docs, "fuse-device")["hostPath"] == {"path": "/dev/fuse", "type": "CharDevice"}
    assert mount(container(default_docs, "secrets-store"), "fuse-device")["mountPath"] == "/dev/fuse"


def test_csi_socket_dir_shared_by_the_three_containers(default_docs):
    for name in ("secrets-store", "node-driver-registrar", "liveness-probe"):
        assert mount(container(default_docs, name), "plugin-dir")["mountPath"] == "/csi"


def test_probes(default_docs):
    driver = container(default_docs, "secrets-store")
    ports = {p["name"]: p["containerPort"] for p in driver["ports"]}
    assert ports == {"metrics": 8095}
    # the driver's own /healthz (src/node/endpoints.rs, on --metrics-addr): not
    # the sidecar's CSI Probe, which fails until the API watch has listed
    live = driver["livenessProbe"]
    assert live["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert args_dict(driver)["--metrics-addr"] == f":{ports['metrics']}"
    assert (live["failureThreshold"], live["initialDelaySeconds"], live["timeoutSeconds"], live["periodSeconds"]) == (5, 30, 10, 15)
    assert driver["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    endpoints = (chartlib.REPO / "src" / "node" / "endpoints.rs").read_text()
    assert '"/healthz" =>' in endpoints and '"/readyz" =>' in endpoints
    # the livenessprobe sidecar stays, as upstream: CSI Probe over the socket
    # on its own port
    lp = container(default_docs, "liveness-probe")
    lp_ports = {p["name"]: p["containerPort"] for p in lp["ports"]}
    assert lp_ports == {"healthz": 9808}
    assert lp["args"] == ["--csi-address=/csi/csi.sock", "--probe-timeout=3s", "--http-endpoint=0.0.0.0:9808"]


def binary_default_admin_socket() -> str:
    src = (chartlib.REPO / "src" / "node" / "admin.rs").read_text()
    m = re.search(r'pub const DEFAULT_SOCKET: &str = "([^"]+)";', src)
    assert m, "DEFAULT_SOCKET not found in src/node/admin.rs"
    cli = (chartlib.REPO / "src" / "cmd" / "cli.rs").read_text()
    # `secretfs node` and `secretfs status`/`refresh` default to it
    assert len(re.findall(r"default_value = crate::node::admin::DEFAULT_SOCKET\)\]\s*pub admin_socket", cli)) == 2
    return m.group(1)


@pytest.mark.parametrize("values", [None, ALL_FEATURES, MINIMAL], ids=["defaults", "all", "minimal"])
def test_admin_socket_dir_is_a_writable_mount(values):
    """`secretfs status` / `refresh` reach the node over its admin socket; the
    root filesystem is read-only, so the socket's directory must be a
    writable volume of the driver container, at the path the bare commands
    use (`kubectl exec ... -- secretfs status` passes no flag)."""
    docs = manifests(values)
    driver = container(docs, "secrets-store")
    assert driver["securityContext"]["readOnlyRootFilesystem"] is True
    socket = args_dict(driver).get("--admin-socket") or binary_default_admin_socket()
    assert socket == binary_default_admin_socket() == "/var/run/secretfs/admin.sock"
    directory = str(Path(socket).parent)
    holding = [m for m in driver["volumeMounts"] if m["mountPath"].rstrip("/") == directory]
    assert len(holding) == 1, f"nothing mounted at {directory}"
    assert not holding[0].get("readOnly", False)
    vol = volume(docs, holding[0]["name"])
    assert "emptyDir" in vol, vol
    # only the driver container reaches the socket
    for c in pod_spec(docs)["containers"]:
        if c["name"] != "secrets-store":
            assert all(m["name"] != holding[0]["name"] for m in c["volumeMounts"])


def test_sidecar_images(default_docs):
    assert container(default_docs, "node-driver-registrar")["image"] == "registry.k8s.io/sig-storage/csi-node-driver-registrar:v2.16.0"
    assert container(default_docs, "liveness-probe")["image"] == "registry.k8s.io/sig-storage/livenessprobe:v2.18.0"


def test_image_reference(default_docs, all_docs):
    assert container(default_docs, "secrets-store")["image"] == "secretfs:0.1.0"
    assert container(all_docs, "secrets-store")["image"] == (
        "registry.example.com/secretfs:0.1.0@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
    )
    assert container(all_docs, "secrets-store")["imagePullPolicy"] == "Always"
    assert pod_spec(all_docs)["imagePullSecrets"] == [{"name": "regcred"}]


def test_resources_default_to_upstream(default_docs):
    expected = {
        "secrets-store": ({"cpu": "200m", "memory": "200Mi"}, {"cpu": "50m", "memory": "100Mi"}),
        "node-driver-registrar": ({"cpu": "100m", "memory": "100Mi"}, {"cpu": "10m", "memory": "20Mi"}),
        "liveness-probe": ({"cpu": "100m", "memory": "100Mi"}, {"cpu": "10m", "memory": "20Mi"}),
    }
    for name, (limits, requests) in expected.items():
        res = container(default_docs, name)["resources"]
        assert (res["limits"], res["requests"]) == (limits, requests), name


def test_placement_defaults(default_docs):
    spec = pod_spec(default_docs)
    assert spec["tolerations"] == [{"operator": "Exists"}]
    assert spec["nodeSelector"] == {"kubernetes.io/os": "linux"}
    assert spec["priorityClassName"] == "system-node-critical"
    assert spec["terminationGracePeriodSeconds"] == 30
    assert daemonset(default_docs)["spec"]["updateStrategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}}
    assert "hostNetwork" not in spec


def test_placement_overrides(all_docs):
    ds = daemonset(all_docs)
    spec = ds["spec"]["template"]["spec"]
    assert spec["hostNetwork"] is True and spec["dnsPolicy"] == "ClusterFirstWithHostNet"
    assert spec["terminationGracePeriodSeconds"] == 60
    assert ds["spec"]["updateStrategy"]["rollingUpdate"]["maxUnavailable"] == "10%"
    meta = ds["spec"]["template"]["metadata"]
    assert meta["labels"]["team"] == "platform"
    assert meta["annotations"]["example.com/owner"] == "platform"
    minimal = pod_spec(manifests(MINIMAL))
    assert "tolerations" not in minimal and "affinity" not in minimal and "priorityClassName" not in minimal


# ---------------------------------------------------------------- restart survival (keeper)


def keeper_spec(docs: list[dict[str, Any]]) -> dict[str, Any]:
    return daemonset(docs, chartlib.KEEPER_DS)["spec"]["template"]["spec"]


def keeper(docs: list[dict[str, Any]]) -> dict[str, Any]:
    return container(docs, "keeper", ds=chartlib.KEEPER_DS)


def test_extra_ca_is_mounted_and_passed_to_the_driver_only(default_docs, all_docs):
    default_driver = container(default_docs, "secrets-store")
    assert not any(a.startswith("--azure-ca-file") for a in default_driver["args"])
    assert "azure-ca" not in {v["name"] for v in daemonset(default_docs)["spec"]["template"]["spec"]["volumes"]}

    ds = daemonset(all_docs)
    driver = container(all_docs, "secrets-store")
    assert "--azure-ca-file=/etc/secretfs/azure-ca/bundle.pem" in driver["args"]
    mount = next(m for m in driver["volumeMounts"] if m["name"] == "azure-ca")
    assert mount == {"name": "azure-ca", "mountPath": "/etc/secretfs/azure-ca", "readOnly": True}
    volume = next(v for v in ds["spec"]["template"]["spec"]["volumes"] if v["name"] == "azure-ca")
    assert volume["configMap"] == {"name": "corporate-ca", "items": [{"key": "bundle.pem", "path": "bundle.pem"}]}
    for name in ("node-driver-registrar", "liveness-probe"):
        assert "azure-ca" not in {m["name"] for m in container(all_docs, name)["volumeMounts"]}


def test_keeper_daemonset_with_defaults(default_docs):
    ds = daemonset(default_docs, chartlib.KEEPER_DS)
    assert ds["metadata"]["namespace"] == chartlib.NAMESPACE
    # a rollout must never replace a keeper: its pod holds the node's volumes
    assert ds["spec"]["updateStrategy"] == {"type": "OnDelete"}
    spec = keeper_spec(default_docs)
    assert [c["name"] for c in spec["containers"]] == ["keeper"]
    assert "initContainers" not in spec
    assert spec["priorityClassName"] == "system-node-critical"
    assert spec["terminationGracePeriodSeconds"] == 30
    # no API access: no token, and no ServiceAccount of the chart's
    assert spec["automountServiceAccountToken"] is False
    assert "serviceAccountName" not in spec
    assert "hostNetwork" not in spec and "hostPID" not in spec
    k = keeper(default_docs)
    assert k["args"] == ["keeper", "--socket=/keeper/keeper.sock", "--log=info"]
    assert k["image"] == container(default_docs, "secrets-store")["image"] == "secretfs:0.1.0"
    assert k["resources"] == {"limits": {"memory": "256Mi"}, "requests": {"cpu": "10m", "memory": "32Mi"}}
    # it serves no HTTP endpoint: nothing to probe, no port
    assert not {"livenessProbe", "readinessProbe", "startupProbe", "ports"} & k.keys()


def test_keeper_is_unprivileged_root_with_ipc_lock(default_docs):
    sc = keeper(default_docs)["securityContext"]
    # root: it accepts only peers of its own uid (SO_PEERCRED), and the node
    # plugin is root; IPC_LOCK for mlockall; nothing else
    assert sc["runAsUser"] == 0
    assert sc["privileged"] is False
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"] == {"drop": ["ALL"], "add": ["IPC_LOCK"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container(default_docs, "secrets-store")["securityContext"]["runAsUser"] == sc["runAsUser"]
    # no device, no propagation, only its socket directory
    spec = keeper_spec(default_docs)
    assert [v["name"] for v in spec["volumes"]] == ["keeper-dir"]
    assert all("mountPropagation" not in m for m in keeper(default_docs)["volumeMounts"])


@pytest.mark.parametrize(
    "root, expected",
    [
        (None, "/var/lib/kubelet"),
        ("/var/snap/microk8s/common/var/lib/kubelet/", "/var/snap/microk8s/common/var/lib/kubelet"),
    ],
)
def test_node_and_keeper_share_the_keeper_socket_on_the_host(root, expected):
    docs = manifests(None if root is None else {"kubeletRootDir": root})
    host = {"path": f"{expected}/plugins/csi-secrets-store-keeper", "type": "DirectoryOrCreate"}
    keeper_vol = next(v for v in keeper_spec(docs)["volumes"] if v["name"] == "keeper-dir")
    assert keeper_vol["hostPath"] == host
    assert volume(docs, "keeper-dir")["hostPath"] == host
    assert mount(keeper(docs), "keeper-dir")["mountPath"] == "/keeper"
    driver = container(docs, "secrets-store")
    node_mount = mount(driver, "keeper-dir")
    assert node_mount["mountPath"] == "/keeper"
    # the driver only connects to the socket
    assert node_mount.get("readOnly") is True
    socket = args_dict(keeper(docs))["--socket"]
    assert args_dict(driver)["--keeper-socket"] == socket == "/keeper/keeper.sock"
    # the state records land in the plugin directory, a host directory
    state = args_dict(driver)["--state-dir"]
    assert state == "/csi/state"
    assert mount(driver, "plugin-dir")["mountPath"] == "/csi"
    assert volume(docs, "plugin-dir")["hostPath"]["path"] == f"{expected}/plugins/csi-secrets-store/"


def test_keeper_follows_values(all_docs):
    k = keeper(all_docs)
    assert k["args"] == ["keeper", "--socket=/keeper/keeper.sock", "--log=secretfs=debug,info", "--log-format-json"]
    assert k["image"] == container(all_docs, "secrets-store")["image"]
    assert k["imagePullPolicy"] == "Always"
    assert k["resources"] == {"limits": {"memory": "512Mi"}, "requests": {"cpu": "20m", "memory": "64Mi"}}
    spec = keeper_spec(all_docs)
    assert spec["priorityClassName"] == "system-cluster-critical"
    # the node plugin's pod settings stay its own
    assert spec["terminationGracePeriodSeconds"] == 30
    assert "hostNetwork" not in spec


@pytest.mark.parametrize("values", [None, ALL_FEATURES, {**MINIMAL, "restartSurvival": {"enabled": True}}], ids=["defaults", "all", "minimal"])
def test_keeper_runs_where_the_node_plugin_runs(values):
    docs = manifests(values)
    node, kept = pod_spec(docs), keeper_spec(docs)
    for key in ("nodeSelector", "tolerations", "affinity", "imagePullSecrets"):
        assert node.get(key) == kept.get(key), key


def test_keeper_priority_class_can_be_unset():
    docs = manifests({"restartSurvival": {"keeper": {"priorityClassName": ""}}})
    assert "priorityClassName" not in keeper_spec(docs)
    assert pod_spec(docs)["priorityClassName"] == "system-node-critical"


@pytest.mark.parametrize("values", [None, ALL_FEATURES, {"podLabels": {"app.kubernetes.io/component": "keeper"}}], ids=["defaults", "all", "podLabels"])
def test_selectors_do_not_overlap(values):
    """The node DaemonSet's selector (immutable) must not claim keeper pods,
    nor the keeper's node plugin pods, nor the metrics Service keeper pods."""
    docs = manifests(values)
    node, kept = daemonset(docs), daemonset(docs, chartlib.KEEPER_DS)
    node_sel, keeper_sel = node["spec"]["selector"]["matchLabels"], kept["spec"]["selector"]["matchLabels"]
    node_pod, keeper_pod = node["spec"]["template"]["metadata"]["labels"], kept["spec"]["template"]["metadata"]["labels"]
    assert node_sel.items() <= node_pod.items()
    assert keeper_sel.items() <= keeper_pod.items()
    assert not node_sel.items() <= keeper_pod.items()
    assert not keeper_sel.items() <= node_pod.items()
    # the node selector is the one released before the keeper existed
    assert node_sel == {"app.kubernetes.io/name": "secretfs", "app.kubernetes.io/instance": chartlib.RELEASE}
    assert keeper_pod["app.kubernetes.io/component"] == "keeper"
    assert keeper_pod["app.kubernetes.io/part-of"] == node_pod["app.kubernetes.io/part-of"] == "secretfs"
    for svc in (d for d in docs if d["kind"] == "Service"):
        assert not svc["spec"]["selector"].items() <= keeper_pod.items()


@pytest.mark.parametrize("values", [{"restartSurvival": {"enabled": False}}, MINIMAL], ids=["off", "minimal"])
def test_restart_survival_off_renders_no_keeper_and_no_flags(values):
    docs = manifests(values)
    assert [d["metadata"]["name"] for d in docs if d["kind"] == "DaemonSet"] == [chartlib.NODE_DS]
    driver = container(docs, "secrets-store")
    assert not [a for a in driver["args"] if a.startswith(("--state-dir", "--keeper-socket"))]
    assert not [m for m in driver["volumeMounts"] if m["name"] == "keeper-dir"]
    assert not [v for v in pod_spec(docs)["volumes"] if v["name"] == "keeper-dir"]
    assert "keeper" not in chartlib.notes(values)


def test_keeper_subcommand_exists_in_the_binary():
    src = (chartlib.REPO / "src" / "cmd" / "cli.rs").read_text()
    assert re.search(r"^\s*Keeper\(KeeperArgs\),", src, re.M), "no `secretfs keeper` subcommand in src/cmd/cli.rs"


# ---------------------------------------------------------------- CSIDriver


def test_csidriver_fields(default_docs):
    spec = find(default_docs, "CSIDriver")["spec"]
    assert spec["attachRequired"] is False
    assert spec["podInfoOnMount"] is True
    assert spec["volumeLifecycleModes"] == ["Ephemeral"]
    assert spec["requiresRepublish"] is True
    assert spec["fsGroupPolicy"] == "File"
    assert spec["tokenRequests"] == [{"audience": "api://AzureADTokenExchange"}]


def test_rotation_off_means_no_republish_and_no_refresh():
    docs = manifests({"enableSecretRotation": False})
    assert find(docs, "CSIDriver")["spec"]["requiresRepublish"] is False
    assert args_dict(container(docs, "secrets-store"))["--enable-secret-rotation"] == "false"


@pytest.mark.parametrize("version", chartlib.KUBE_VERSIONS)
def test_token_in_secrets_only_from_1_35(version):
    spec = find(manifests(kube_version=version), "CSIDriver")["spec"]
    on = tuple(map(int, version.split("."))) >= (1, 35)
    assert spec.get("serviceAccountTokenInSecrets") is (True if on else None)


@pytest.mark.parametrize("version", ["1.35", "1.37"])
def test_token_in_secrets_needs_token_requests(version):
    spec = find(manifests({"tokenRequests": []}, kube_version=version), "CSIDriver")["spec"]
    assert "tokenRequests" not in spec
    assert "serviceAccountTokenInSecrets" not in spec


def test_token_requests_passed_through(all_docs):
    assert find(all_docs, "CSIDriver")["spec"]["tokenRequests"] == [
        {"audience": "api://AzureADTokenExchange"},
        {"audience": "api://AKSIdentityBinding", "expirationSeconds": 3600},
    ]


# ---------------------------------------------------------------- RBAC


def rules(docs: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    return [(d["metadata"]["name"], r) for d in docs if d["kind"] in ("ClusterRole", "Role") for r in d["rules"]]


def grants(docs, resource: str) -> set[str]:
    verbs: set[str] = set()
    for _, r in rules(docs):
        if resource in r["resources"] or "*" in r["resources"]:
            verbs |= set(r["verbs"])
    return verbs


@pytest.mark.parametrize("values", [None, MINIMAL, {"syncSecret": {"enabled": False}}])
def test_no_secret_access_without_sync(values):
    docs = manifests(values)
    assert grants(docs, "secrets") == set()
    assert not [r for _, r in rules(docs) if "*" in r["verbs"] or "*" in r["resources"] or "*" in r["apiGroups"]]


def test_sync_adds_secret_access_in_its_own_bound_role():
    docs = manifests({"syncSecret": {"enabled": True}})
    # src/node/sync/mod.rs: one server-side apply per Secret (PATCH; `create` when
    # the Secret does not exist yet); it never reads, lists or deletes one
    assert grants(docs, "secrets") == {"create", "patch"}
    role = find(docs, "ClusterRole", "-sync")
    assert [r["resources"] for r in role["rules"]] == [["secrets"]]
    binding = find(docs, "ClusterRoleBinding", "-sync")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"][0]["name"] == pod_spec(docs)["serviceAccountName"]


# What the driver's code calls, by (API group, resource), and the verbs each
# call needs. A server-side apply is a PATCH that the API server authorises
# as `create` when the object does not exist yet and as `patch` otherwise
# (kubernetes.io/docs/reference/using-api/api-concepts/#patch-and-apply), so
# every apply needs both.
NODE_CALLS = {
    # src/spc.rs: reflector(watcher(Api::all)) lists and watches; get_opt
    # reads a class the cache does not hold yet
    ("secrets-store.csi.x-k8s.io", "secretproviderclasses"): ["get", "list", "watch"],
    # src/node/sync/mod.rs: Patch::Apply of the status; get of its uid when it
    # owns a Secret. Deletion is the garbage collector's (owner: the pod).
    ("secrets-store.csi.x-k8s.io", "secretproviderclasspodstatuses"): ["create", "get", "patch"],
    # src/node/sync/mod.rs: the pod's owner references for a synced Secret
    ("", "pods"): ["get"],
    # kube-runtime's events::Recorder: events.k8s.io/v1, create then patch
    ("events.k8s.io", "events"): ["create", "patch"],
}
SYNC_CALLS = {
    # src/node/sync/mod.rs: Patch::Apply of each Secret
    ("", "secrets"): ["create", "patch"],
}


def role_grants(role: dict[str, Any]) -> dict[tuple[str, str], list[str]]:
    got: dict[tuple[str, str], list[str]] = {}
    for r in role["rules"]:
        assert "resourceNames" not in r, r
        for group in r["apiGroups"]:
            for res in r["resources"]:
                assert (group, res) not in got, f"{(group, res)} granted twice"
                got[(group, res)] = sorted(r["verbs"])
    return got


def test_node_role_is_least_privilege(default_docs):
    assert role_grants(find(default_docs, "ClusterRole", "-node")) == NODE_CALLS
    binding = find(default_docs, "ClusterRoleBinding", "-node")
    assert binding["roleRef"]["name"] == find(default_docs, "ClusterRole", "-node")["metadata"]["name"]


def test_sync_role_is_least_privilege():
    docs = manifests({"syncSecret": {"enabled": True}})
    assert role_grants(find(docs, "ClusterRole", "-sync")) == SYNC_CALLS
    assert role_grants(find(docs, "ClusterRole", "-node")) == NODE_CALLS


def test_rbac_covers_every_resource_the_code_calls():
    """Each Kubernetes resource type src/ builds an Api for (or records events
    through) has a rule, and no rule names a resource nothing calls: a new
    call site without a grant fails here, not with a 403 in a cluster."""
    kinds: set[str] = set()
    events = False
    status_plural = False
    for path in sorted((chartlib.REPO / "src").rglob("*.rs")):
        text = path.read_text()
        kinds |= {m.split("::")[-1] for m in re.findall(r"\bApi::<\s*([\w:]+)\s*>", text)}
        kinds |= {m.split("::")[-1] for m in re.findall(r"\bApi<\s*([\w:]+)\s*>", text)}
        events |= "Recorder::new(" in text
        status_plural |= '"secretproviderclasspodstatuses"' in text
    resources = {
        "SecretProviderClass": ("secrets-store.csi.x-k8s.io", "secretproviderclasses"),
        "Pod": ("", "pods"),
        "Secret": ("", "secrets"),
    }
    assert kinds <= set(resources) | {"DynamicObject"}, f"Api of an unknown kind in src/: {kinds - set(resources)}"
    called = {resources[k] for k in kinds if k in resources}
    if "DynamicObject" in kinds:
        # the only dynamic resource is the pod status (src/node/sync/mod.rs)
        assert status_plural
        called.add(("secrets-store.csi.x-k8s.io", "secretproviderclasspodstatuses"))
    if events:
        called.add(("events.k8s.io", "events"))
    assert called == set(NODE_CALLS) | set(SYNC_CALLS)


def test_rbac_can_be_left_to_the_operator():
    docs = manifests({"rbac": {"create": False}, "syncSecret": {"enabled": True}})
    assert not [d for d in docs if d["kind"].startswith("ClusterRole")]


# ---------------------------------------------------------------- values schema


@pytest.mark.parametrize(
    "bad",
    [
        {"readMode": "mmap"},
        {"rotationPollInterval": "2 minutes"},
        {"rotationPollInterval": 120},
        {"kubeletRootDir": "var/lib/kubelet"},
        {"tokenRequests": [{"audience": "api://x", "expirationSeconds": 60}]},
        {"tokenRequests": [{"expirationSeconds": 3600}]},
        {"metrics": {"port": 70000}},
        {"image": {"digest": "latest"}},
        {"syncSecret": {"enabled": "yes"}},
        {"logFormatJSON": "true"},
        {"enableSecretRotaton": True},  # typo of a real key
        {"driverName": "Secrets_Store"},
        {"additionalProvidersDirs": ["/a,/b"]},
        {"restartSurvival": {"enabled": "true"}},
        {"restartSurvival": {"enabled": 1}},
        {"restartSurvival": True},
        {"restartSurvival": {"keeper": {"priorityClassName": 5}}},
        {"restartSurvival": {"keeper": {"resources": {"limits": {"memroy": "1Gi"}}}}},
        {"restartSurvival": {"stateDir": "/var/lib/secretfs"}},  # not a value
    ],
    ids=lambda v: json.dumps(v),
)
def test_schema_rejects_bad_values(bad):
    with pytest.raises(helm.HelmValuesError):
        chartlib.render_files(bad)


def test_every_values_file_passes_the_schema():
    with helm.Chart.load(chartlib.CHART) as chart:
        for path in chartlib.CI_VALUES:
            chart.validate_schema(chartlib.load_values_file(path))
        chart.validate_schema(None)


def test_every_value_is_documented():
    """Each top-level key, and each key of a nested block, has a comment above it (or its block has)."""
    lines = (chartlib.CHART / "values.yaml").read_text().splitlines()
    undocumented = []
    for i, line in enumerate(lines):
        m = re.match(r"^(\s*)([A-Za-z][\w.-]*):", line)
        if not m or m.group(1):
            continue
        prev = next((lines[j] for j in range(i - 1, -1, -1) if lines[j].strip()), "")
        block = []
        for nxt in lines[i + 1 :]:
            if nxt and not nxt.startswith(" "):
                break
            block.append(nxt)
        if not prev.lstrip().startswith("#") and not any(b.strip().startswith("#") for b in block):
            undocumented.append(m.group(2))
    assert undocumented == []
    schema = json.loads((chartlib.CHART / "values.schema.json").read_text())
    assert sorted(yaml.safe_load((chartlib.CHART / "values.yaml").read_text())) == sorted(schema["properties"])


# ---------------------------------------------------------------- CRDs


@pytest.fixture(scope="module")
def crds() -> dict[str, dict[str, Any]]:
    return {c["metadata"]["name"]: c for c in chartlib.crds()}


def version(crd: dict[str, Any], name: str) -> dict[str, Any]:
    return next(v for v in crd["spec"]["versions"] if v["name"] == name)


DEPRECATION = "secrets-store.csi.x-k8s.io/v1alpha1 is deprecated. Use secrets-store.csi.x-k8s.io/v1 instead."


def test_crd_versions(crds):
    assert sorted(crds) == [
        "secretproviderclasses.secrets-store.csi.x-k8s.io",
        "secretproviderclasspodstatuses.secrets-store.csi.x-k8s.io",
    ]
    for crd in crds.values():
        assert crd["spec"]["group"] == "secrets-store.csi.x-k8s.io"
        assert crd["spec"]["scope"] == "Namespaced"
        v1, v1alpha1 = version(crd, "v1"), version(crd, "v1alpha1")
        assert (v1["served"], v1["storage"]) == (True, True)
        assert v1.get("deprecated") is not True
        assert (v1alpha1["served"], v1alpha1["storage"], v1alpha1["deprecated"]) == (True, False, True)
        assert v1alpha1["deprecationWarning"] == DEPRECATION


def test_crd_printer_columns(crds):
    spc = crds["secretproviderclasses.secrets-store.csi.x-k8s.io"]
    spcps = crds["secretproviderclasspodstatuses.secrets-store.csi.x-k8s.io"]
    for v in ("v1", "v1alpha1"):
        assert [(c["name"], c["jsonPath"]) for c in version(spc, v)["additionalPrinterColumns"]] == [
            ("Provider", ".spec.provider"),
            ("Age", ".metadata.creationTimestamp"),
        ]
        # pod, class, mounted and object count at a glance; the versions
        # only with -o wide (priority 1)
        assert [(c["name"], c["type"], c["jsonPath"], c.get("priority", 0)) for c in version(spcps, v)["additionalPrinterColumns"]] == [
            ("Pod", "string", ".status.podName", 0),
            ("Class", "string", ".status.secretProviderClassName", 0),
            ("Mounted", "boolean", ".status.mounted", 0),
            ("Objects", "integer", ".status.objectCount", 0),
            ("Age", "date", ".metadata.creationTimestamp", 0),
            ("Versions", "string", ".status.objects", 1),
        ]


def test_object_count_column_is_written_by_the_driver(crds):
    """The Objects column reads status.objectCount: the CRD declares it (or
    the API server would prune it) and src/node/sync/status.rs writes it as the
    length of the objects list it writes next to it."""
    spcps = crds["secretproviderclasspodstatuses.secrets-store.csi.x-k8s.io"]
    for v in ("v1", "v1alpha1"):
        field = schema_of(spcps, v)["properties"]["status"]["properties"]["objectCount"]
        assert (field["type"], field["minimum"]) == ("integer", 0)
    src = (chartlib.REPO / "src" / "node" / "sync" / "status.rs").read_text()
    assert re.search(r'"objects": objects\.iter\(\)', src)
    assert re.search(r'"objectCount": objects\.len\(\)', src)


def schema_of(crd: dict[str, Any], v: str) -> dict[str, Any]:
    return version(crd, v)["schema"]["openAPIV3Schema"]


SEED_SPC = chartlib.REPO / "tests" / "fixtures" / "seed" / "secretproviderclass.yaml"


@pytest.mark.parametrize("v", ["v1", "v1alpha1"])
def test_seed_and_notes_classes_fit_the_schema(crds, v):
    schema = schema_of(crds["secretproviderclasses.secrets-store.csi.x-k8s.io"], v)
    examples = [yaml.safe_load(SEED_SPC.read_text())]
    text = chartlib.notes()
    manifest = text.split("<<'YAML' | kubectl apply -f -\n", 1)[1].split("\n  YAML\n", 1)[0]
    examples += [d for d in yaml.safe_load_all(re.sub(r"(?m)^  ", "", manifest)) if d["kind"] == "SecretProviderClass"]
    assert len(examples) == 2
    for spc in examples:
        jsonschema.Draft7Validator(schema).validate(spc)
    bad = dict(examples[0], spec=dict(examples[0]["spec"], parameters={"keyvaultName": 3}))
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft7Validator(schema).validate(bad)


def test_spcps_schema(crds):
    schema = schema_of(crds["secretproviderclasspodstatuses.secrets-store.csi.x-k8s.io"], "v1")
    status = schema["properties"]["status"]["properties"]
    assert {k: v["type"] for k, v in status.items()} == {
        "podName": "string",
        "secretProviderClassName": "string",
        "mounted": "boolean",
        "targetPath": "string",
        "objects": "array",
        # ours, for the Objects printer column; upstream's CRD prunes it
        "objectCount": "integer",
    }
    assert sorted(status["objects"]["items"]["properties"]) == ["id", "version"]
    ok = {
        "apiVersion": "secrets-store.csi.x-k8s.io/v1",
        "kind": "SecretProviderClassPodStatus",
        "metadata": {"name": "nginx-default-azure-kvname"},
        "status": {
            "podName": "nginx",
            "secretProviderClassName": "azure-kvname",
            "mounted": True,
            "targetPath": "/var/lib/kubelet/pods/0b1c/volumes/kubernetes.io~csi/secrets-store-inline/mount",
            "objects": [{"id": "secret/sql-password", "version": "c55925c29c6743dcb9bb4bf091be03b0"}],
            "objectCount": 1,
        },
    }
    jsonschema.Draft7Validator(schema).validate(ok)
    for bad in ({"mounted": "yes"}, {"objectCount": "1"}, {"objectCount": -1}):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.Draft7Validator(schema).validate({**ok, "status": {**ok["status"], **bad}})


# ---------------------------------------------------------------- monitoring


def promql_metrics(expr: str) -> set[str]:
    names = set(re.findall(r"\b([a-z_][a-z0-9_]*)(?=\s*[{\[])", expr))
    return {re.sub(r"_(bucket|sum|count)$", "", n) for n in names} - {"rate", "increase", "sum", "by", "histogram_quantile"}


def test_service_monitor_scrapes_the_driver_pods(all_docs):
    svc = find(all_docs, "Service", "-metrics")
    sm = find(all_docs, "ServiceMonitor")
    ds = daemonset(all_docs)
    pod_labels = ds["spec"]["template"]["metadata"]["labels"]
    assert svc["spec"]["selector"].items() <= pod_labels.items()
    assert sm["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    assert sm["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert [e["port"] for e in sm["spec"]["endpoints"]] == [p["name"] for p in svc["spec"]["ports"]] == ["metrics"]
    assert svc["spec"]["ports"][0]["port"] == 9095
    driver_ports = {p["name"]: p["containerPort"] for p in container(all_docs, "secrets-store")["ports"]}
    assert driver_ports["metrics"] == 9095
    # the expiry series' own namespace label is kept (not exported_namespace)
    assert sm["spec"]["endpoints"][0]["honorLabels"] is True


def test_prometheus_rule_uses_exported_metrics(all_docs):
    rule = find(all_docs, "PrometheusRule")
    alerts = {r["alert"]: r for g in rule["spec"]["groups"] for r in g["rules"]}
    assert sorted(alerts) == [
        "SecretfsObjectExpired",
        "SecretfsObjectExpiringSoon",
        "SecretfsPublishErrors",
        "SecretfsRotationFailing",
        "SecretfsSyncFailing",
        "SecretfsVaultThrottled",
    ]
    used = set()
    for a in alerts.values():
        used |= promql_metrics(a["expr"])
        assert a["for"] == "5m"
        if "Expir" not in a["alert"]:
            assert "{{ $labels.pod }}" in a["annotations"]["summary"]
    assert used <= set(METRICS), used - set(METRICS)
    assert 'outcome="throttled"' in alerts["SecretfsVaultThrottled"]["expr"]
    # per object, across the node plugins; the threshold follows the values
    # (14 days in ci/all-features-values.yaml)
    for name in ("SecretfsObjectExpiringSoon", "SecretfsObjectExpired"):
        expr = alerts[name]["expr"]
        assert "min by (namespace, class, object, type) (secretfs_object_expiry_timestamp_seconds)" in expr
        assert "{{ $labels.object }}" in alerts[name]["annotations"]["summary"]
    assert "< 1209600 > 0" in alerts["SecretfsObjectExpiringSoon"]["expr"]
    assert alerts["SecretfsObjectExpired"]["labels"]["severity"] == "critical"


def test_dashboard_covers_every_metric_and_ships_in_a_configmap(all_docs):
    text = (chartlib.CHART / "dashboards" / "secretfs.json").read_text()
    dash = json.loads(text)
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    used = set().union(*(promql_metrics(e) for e in exprs))
    assert used == set(METRICS)
    by_title = {p["title"]: p for p in dash["panels"]}
    assert any("error_type" in t["expr"] for t in by_title["Publish errors /s by error_type"]["targets"])
    assert any('outcome="throttled"' in t["expr"] for t in by_title["Vault throttling (HTTP 429) /s"]["targets"])
    soonest = by_title["Soonest expiries"]
    assert soonest["type"] == "table" and soonest["fieldConfig"]["defaults"]["unit"] == "s"
    assert "bottomk(20, min by (namespace, class, object, type)" in soonest["targets"][0]["expr"]
    unused = by_title["Unused files by class"]
    assert "sum by (namespace, class) (secretfs_unread_files" in unused["targets"][0]["expr"]
    cm = find(all_docs, "ConfigMap", "-dashboard")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert cm["metadata"]["annotations"] == {"grafana_folder": "Secrets"}
    assert json.loads(cm["data"]["secretfs.json"]) == dash


def test_monitoring_off_by_default(default_docs):
    assert not [d for d in default_docs if d["kind"] in ("ServiceMonitor", "PrometheusRule", "ConfigMap", "Service")]


# ---------------------------------------------------------------- NOTES


def test_notes_tell_how_to_check():
    text = chartlib.notes()
    assert "DaemonSet secretfs-keeper" in text and "OnDelete" in text and "after draining the node" in text
    assert "kubectl get csidriver secrets-store.csi.k8s.io" in text
    assert "rollout status daemonset/secretfs" in text
    assert "port 8095" in text and "/metrics" in text
    assert "no access to Secrets" in text
    assert "secretfs-sync" in chartlib.notes({"syncSecret": {"enabled": True}})


def test_notes_show_status_and_refresh_in_the_driver_container(default_docs):
    text = chartlib.notes()
    lines = text.splitlines()
    pod_line = next(l for l in lines if "POD=$(kubectl" in l)
    selector = re.search(r"-l (\S+)", pod_line).group(1)
    labels = dict(kv.split("=", 1) for kv in selector.split(","))
    # the selector finds the node plugin's pod, never the keeper's
    node_pod = daemonset(default_docs)["spec"]["template"]["metadata"]["labels"]
    keeper_pod = daemonset(default_docs, chartlib.KEEPER_DS)["spec"]["template"]["metadata"]["labels"]
    assert labels.items() <= node_pod.items()
    assert not labels.items() <= keeper_pod.items()
    assert "--field-selector spec.nodeName=<node>" in pod_line and f"-n {chartlib.NAMESPACE}" in pod_line
    for command in ("status", "refresh"):
        line = next(l for l in lines if l.rstrip().endswith(f"-- secretfs {command}"))
        assert f"kubectl -n {chartlib.NAMESPACE} exec $POD -c secrets-store --" in line
    # `secretfs` is on the image's PATH and `status`/`refresh` are subcommands
    assert "/usr/local/bin/secretfs" in DOCKERFILE
    cli = (chartlib.REPO / "src" / "cmd" / "cli.rs").read_text()
    assert re.search(r"^\s*Status\(AdminArgs\),", cli, re.M) and re.search(r"^\s*Refresh\(RefreshArgs\),", cli, re.M)


# ---------------------------------------------------------------- Dockerfile


DOCKERFILE = (chartlib.REPO / "Dockerfile").read_text()


def dockerfile_instructions() -> list[tuple[str, str]]:
    joined = re.sub(r"\\\n", " ", DOCKERFILE)
    out = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            op, _, rest = line.partition(" ")
            out.append((op.upper(), rest.strip()))
    return out


def test_dockerfile_builds_without_demo_and_runs_as_root():
    ins = dockerfile_instructions()
    froms = [rest for op, rest in ins if op == "FROM"]
    assert froms[0] == "rust:1.95-bookworm AS builder"
    assert froms[-1].startswith("gcr.io/distroless/cc-debian12") and "nonroot" not in froms[-1]
    runs = " ".join(rest for op, rest in ins if op == "RUN")
    assert re.search(r"cargo build --release --locked --no-default-features -p secretfs\b", runs)
    # root: no USER after the last FROM (distroless/cc's default user is root)
    last_from = max(i for i, (op, _) in enumerate(ins) if op == "FROM")
    assert [rest for op, rest in ins[last_from:] if op == "USER"] in ([], ["0"], ["root"], ["0:0"])
    labels = " ".join(rest for op, rest in ins if op == "LABEL")
    assert "org.opencontainers.image.source" in labels and "org.opencontainers.image.licenses" in labels
    assert ("ENTRYPOINT", '["/usr/local/bin/secretfs"]') in ins and ("CMD", '["node"]') in ins


def test_docker_context_holds_the_whole_workspace():
    """A new workspace member or declared target must reach the build context,
    or `cargo build --locked` fails inside the image build."""
    manifest = tomllib.loads((chartlib.REPO / "Cargo.toml").read_text())
    needed = {m.split("/")[0] for m in manifest["workspace"]["members"] if m != "."}
    needed |= {"src", "Cargo.toml", "Cargo.lock"}
    for kind, default_dir in (("bench", "benches"), ("test", "tests"), ("example", "examples"), ("bin", "src/bin")):
        for target in manifest.get(kind, []):
            needed.add(target.get("path", f"{default_dir}/{target['name']}.rs").split("/")[0])
    copied = set()
    for op, rest in dockerfile_instructions():
        if op == "COPY" and not rest.startswith("--from"):
            copied |= {p.rstrip("/").lstrip("./") for p in rest.split()[:-1]}
    assert needed <= copied, f"not copied into the image build: {sorted(needed - copied)}"
    ignore = [l.strip() for l in (chartlib.REPO / ".dockerignore").read_text().splitlines() if l.strip() and not l.startswith("#")]
    assert ignore[0] == "*"
    allowed = {l[1:].rstrip("/") for l in ignore if l.startswith("!")}
    assert copied <= allowed, f"copied but excluded by .dockerignore: {sorted(copied - allowed)}"
    assert "**/target/" in ignore


# ---------------------------------------------------------------- contract with the binary


def cli_long_flags(*structs: str) -> set[str]:
    """Long flags `secretfs` defines (clap derive in src/cmd/cli.rs); with
    `structs`, only those of these argument structs."""
    src = (chartlib.REPO / "src" / "cmd" / "cli.rs").read_text()
    if structs:
        bodies = [re.search(rf"pub struct {s} \{{\n(.*?)\n\}}\n", src, re.S) for s in structs]
        assert all(bodies), f"not all of {structs} found in src/cmd/cli.rs"
        src = "\n".join(b.group(1) for b in bodies if b)
    flags = set()
    for attr, field in re.findall(r"#\[arg\(((?:[^()]|\([^()]*\))*)\)\]\s*(?:///[^\n]*\n\s*)*pub\s+(\w+)\s*:", src):
        if not re.search(r"\blong\b", attr):
            continue
        named = re.search(r'\blong\s*=\s*"([^"]+)"', attr)
        flags.add(named.group(1) if named else field.replace("_", "-"))
    return flags


def test_cli_parser_finds_known_flags():
    # guards the parser below: these flags exist today
    assert {"endpoint", "nodeid", "drivername", "read-mode", "log", "log-format-json"} <= cli_long_flags()


# Every flag the chart passes must exist in `secretfs node`: this keeps
# chart and binary in step.
def test_every_flag_the_chart_passes_exists_in_the_binary(all_docs, default_docs):
    passed = set()
    for docs in (default_docs, all_docs):
        for a in container(docs, "secrets-store")["args"][1:]:
            passed.add(a.split("=", 1)[0].removeprefix("--"))
    missing = sorted(passed - cli_long_flags())
    assert missing == [], f"flags the chart passes but `secretfs node` does not define: {missing}"


def test_every_flag_the_keeper_gets_exists_in_the_binary(all_docs, default_docs):
    passed = set()
    for docs in (default_docs, all_docs):
        args = keeper(docs)["args"]
        assert args[0] == "keeper"
        passed |= {a.split("=", 1)[0].removeprefix("--") for a in args[1:]}
    # `secretfs keeper` takes its own flags and the global logging ones
    defined = cli_long_flags("KeeperArgs", "LogArgs")
    assert {"socket", "log", "log-format-json"} <= defined
    missing = sorted(passed - defined)
    assert missing == [], f"flags the chart passes but `secretfs keeper` does not define: {missing}"
