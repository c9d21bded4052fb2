"""Issue item 3: the SecretProviderClassPodStatus a mount writes; a rotation
written into the vault reaching `cat` in the pod, a subPath mount of the
file and the synced Secret within the class's interval + 1 s, with no
container restart; an fsGroup pod reading as a non-root user."""

import base64
import time
from pathlib import Path

from conftest import (
    NODE, SEED_VALUE, apply, azure_class, bare_pod, eventually, exec_in, kjson, pod, set_secret,
    status_object_name, wait_running,
)

INTERVAL = 5  # seconds: the class's secretfs.io/rotation-poll-interval


def test_status_object_fields(cleanup):
    cleanup("secretproviderclass", "status-fields")
    apply(azure_class("status-fields", [
        {"objectName": "sql-password", "objectAlias": "SECRET_1", "objectType": "secret"},
        {"objectName": "api-key", "objectType": "secret"},
    ]))
    cleanup("pod", "status-fields")
    apply(bare_pod("status-fields", "status-fields"))
    p = wait_running("status-fields")
    uid = p["metadata"]["uid"]

    status = kjson("get", "secretproviderclasspodstatus", status_object_name("status-fields", "default", "status-fields"))
    meta = status["metadata"]
    assert meta["labels"]["internal.secrets-store.csi.k8s.io/node-name"] == NODE
    assert [(o["kind"], o["name"], o["uid"]) for o in meta["ownerReferences"]] == [("Pod", "status-fields", uid)]
    s = status["status"]
    assert s["podName"] == "status-fields"
    assert s["secretProviderClassName"] == "status-fields"
    assert s["mounted"] is True
    assert s["targetPath"] == f"/var/lib/kubelet/pods/{uid}/volumes/kubernetes.io~csi/secrets/mount"
    ids = [o["id"] for o in s["objects"]]
    assert ids == ["secret/api-key", "secret/sql-password"], s["objects"]
    # Versions are the vault's: 32 hex digits each.
    for o in s["objects"]:
        assert len(o["version"]) == 32 and int(o["version"], 16) >= 0, o


# Watches both paths in the container every 0.1 s and appends
# "<uptime> <path> <value>" to /tmp/changes whenever a value changes; uptime
# is the kernel's (no time namespace), so it compares with the test's.
WATCHER = r"""
trap 'exit 0' TERM INT
a=; b=
while :; do
  read up rest </proc/uptime
  v=$(cat /mnt/secrets-store/rotating); [ "$v" != "$a" ] && { a=$v; echo "$up cat $v" >>/tmp/changes; }
  v=$(cat /etc/rotating-file); [ "$v" != "$b" ] && { b=$v; echo "$up subpath $v" >>/tmp/changes; }
  sleep 0.1
done
"""


def uptime():
    return float(Path("/proc/uptime").read_text().split()[0])


def test_rotation_reaches_cat_subpath_and_secret_within_interval_without_restart(cleanup):
    cleanup("secretproviderclass", "rotating")
    apply(azure_class(
        "rotating",
        [{"objectName": "rotating", "objectType": "secret"}],
        secret_objects=[{"secretName": "rotating", "type": "Opaque", "data": [{"objectName": "rotating", "key": "value"}]}],
        parameters={"secretfs.io/rotation-poll-interval": f"{INTERVAL}s"},
    ))
    cleanup("pod", "rotating")
    sub = [{"name": "secrets", "mountPath": "/etc/rotating-file", "subPath": "rotating", "readOnly": True}]
    apply(bare_pod("rotating", "rotating", extra_mounts=sub, command=WATCHER))
    before = wait_running("rotating")
    eventually("the watcher saw both paths", lambda: len(exec_in("rotating", "cat", "/tmp/changes").splitlines()) >= 2, 30)

    new_value = f"rotated-at-{time.time_ns()}"
    set_secret("kv-demo", "rotating", new_value)
    written = uptime()
    bound = INTERVAL + 1

    def changed(kind):
        for line in exec_in("rotating", "cat", "/tmp/changes").splitlines():
            at, what, value = line.split(" ", 2)
            if what == kind and value == new_value:
                return (float(at) - written,)  # a tuple: a delay of 0.0 is an answer
        return None

    (took_cat,) = eventually("cat in the pod shows the new value", lambda: changed("cat"), bound + 30, interval=0.5)
    (took_sub,) = eventually("the subPath mount shows the new value", lambda: changed("subpath"), 30, interval=0.5)

    # The Secret is read through the API, from after the pod's paths were
    # seen (so the first read may come later than the change): what proves
    # a late sync is a read that began after the bound and still got the
    # old value.
    old_seen = [None]

    def secret_value():
        start = uptime() - written
        value = base64.b64decode(kjson("get", "secret", "rotating")["data"]["value"]).decode()
        if value == new_value:
            return (uptime() - written,)
        old_seen[0] = start
        return None

    (took_secret,) = eventually("the synced Secret has the new value", secret_value, bound + 30, interval=0.2)
    assert took_cat <= bound, f"cat saw the rotation after {took_cat:.1f}s (interval {INTERVAL}s)"
    assert took_sub <= bound, f"the subPath mount saw it after {took_sub:.1f}s"
    assert old_seen[0] is None or old_seen[0] <= bound, \
        f"the Secret still had the old value {old_seen[0]:.1f}s after the write (seen new at {took_secret:.1f}s)"

    after = pod("rotating")
    b, a = before["status"]["containerStatuses"][0], after["status"]["containerStatuses"][0]
    assert a["restartCount"] == 0
    assert a["containerID"] == b["containerID"]


def test_fsgroup_pod_reads_as_non_root(cleanup):
    cleanup("secretproviderclass", "fsgroup")
    apply(azure_class("fsgroup", [{"objectName": "sql-password", "objectAlias": "SECRET_1", "objectType": "secret"}]))
    cleanup("pod", "fsgroup")
    security = {"runAsUser": 1000, "runAsGroup": 3000, "fsGroup": 2000, "runAsNonRoot": True}
    apply(bare_pod("fsgroup", "fsgroup", security=security))
    wait_running("fsgroup")
    assert exec_in("fsgroup", "id", "-u").strip() == "1000"
    listing = exec_in("fsgroup", "ls", "-ln", "/mnt/secrets-store")
    line = next(line for line in listing.splitlines() if line.endswith("SECRET_1"))
    mode, _, owner, group = line.split()[:4]
    assert (mode, owner, group) == ("-rw-r-----", "0", "2000"), listing
    assert exec_in("fsgroup", "cat", "/mnt/secrets-store/SECRET_1") == SEED_VALUE
