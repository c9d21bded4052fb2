"""Issue item 5: restarts while readers `cat` in a loop inside pods: the node
plugin's pod deleted (its DaemonSet brings it back), a `helm upgrade` to a
new image tag, the keeper's pod deleted, kubelet restarted. No read may
fail; afterwards every synced Secret is still owned by every pod that uses
it (the ReplicaSet of a Deployment's pods, the status object of a bare
pod), and new pods mount."""

import base64
import os
import subprocess
import sys
import time
from pathlib import Path

from conftest import (
    CLUSTER_SH, DRIVER_LABELS, KEEPER_LABELS, NODE, apply, azure_class, bare_pod, deployment,
    eventually, exec_in, node_ready, kjson, kubectl, pods_of, set_secret, status_object_name, wait_running,
)

HELM_PY = Path(__file__).resolve().parents[1] / "helm.py"
CLASS = "restarts"
SECRET = "restarts"

# Reads the file in a loop (a new open each time), counting reads that
# returned the expected bytes and reads that failed or returned anything
# else; /tmp/counts holds "<ok> <failed>", /tmp/failures what went wrong.
READER_LOOP = r"""
trap 'exit 0' TERM INT
ok=0; failed=0
while :; do
  if v=$(cat /mnt/secrets-store/SECRET_1 2>/tmp/err) && { [ "$v" = "$EXPECTED" ] || [ "$v" = "$EXPECTED_NEXT" ]; }; then
    ok=$((ok+1))
  else
    failed=$((failed+1)); echo "$(date +%T) read failed: [$v] $(cat /tmp/err)" >>/tmp/failures
  fi
  echo "$ok $failed" >/tmp/counts.new && mv /tmp/counts.new /tmp/counts
  sleep 0.05
done
"""
FIRST_VALUE = "restarts-version-1"  # the seed's (emulator-seed.yaml)
NEXT_VALUE = "restarts-version-2"


def counts(name):
    ok, failed = exec_in(name, "cat", "/tmp/counts").split()
    return int(ok), int(failed)


def failures(name):
    return exec_in(name, "sh", "-c", "cat /tmp/failures 2>/dev/null || true")


def readers():
    return [p["metadata"]["name"] for p in pods_of("restarts-reader=yes") if p["status"].get("phase") == "Running"]


def expect_reads_continue(step, names, before):
    """Every reader made progress since `before` and none failed."""
    seen = {}

    def progressed():
        now = {n: counts(n) for n in names}
        seen.update(now)
        return now if all(now[n][0] > before[n][0] + 20 for n in names) else None

    try:
        now = eventually(f"readers keep reading after {step}", progressed, 60, interval=0.5)
    except AssertionError as e:
        detail = {n: (before[n], seen.get(n), failures(n)[-500:]) for n in names}
        raise AssertionError(f"{e}\n(ok, failed) before -> last seen, failures: {detail}") from None
    bad = {n: (c, failures(n)) for n, c in now.items() if c[1] != 0}
    assert not bad, f"failed reads after {step}: {bad}"
    return now


def expected_owners(bare_names):
    rs = kjson("get", "replicasets", "-l", "app=restarts-deploy")["items"]
    owners = {r["metadata"]["uid"] for r in rs if (r["status"].get("replicas") or 0) > 0}
    for name in bare_names:
        status = kjson("get", "secretproviderclasspodstatus", status_object_name(name, "default", CLASS))
        owners.add(status["metadata"]["uid"])
    return owners


def secret_owners():
    return {o["uid"] for o in kjson("get", "secret", SECRET)["metadata"].get("ownerReferences") or []}


def driver_name():
    pods = [p for p in pods_of(DRIVER_LABELS, "kube-system") if not p["metadata"].get("deletionTimestamp")]
    return pods[0]["metadata"]["name"] if len(pods) == 1 else None


def wait_driver_ready(old=None, image_tag=None):
    def ready():
        pods = [p for p in pods_of(DRIVER_LABELS, "kube-system") if not p["metadata"].get("deletionTimestamp")]
        if len(pods) != 1 or pods[0]["metadata"]["name"] == old:
            return None
        p = pods[0]
        if image_tag and not p["spec"]["containers"][1]["image"].endswith(":" + image_tag):
            return None
        st = p["status"].get("containerStatuses") or []
        return p if st and all(s.get("ready") for s in st) else None

    return eventually("node plugin pod Ready", ready, 180, interval=0.5)


def test_restarts_keep_every_read_and_every_owner(cleanup):
    cleanup("secretproviderclass", CLASS)
    apply(azure_class(
        CLASS,
        [{"objectName": "restarts", "objectAlias": "SECRET_1", "objectType": "secret"}],
        secret_objects=[{"secretName": SECRET, "type": "Opaque", "data": [{"objectName": "SECRET_1", "key": "v"}]}],
        parameters={"secretfs.io/rotation-poll-interval": "10s"},
    ))
    env = [{"name": "EXPECTED", "value": FIRST_VALUE}, {"name": "EXPECTED_NEXT", "value": NEXT_VALUE}]
    cleanup("deployment", "restarts-deploy")
    dep = deployment("restarts-deploy", CLASS, replicas=2, command=READER_LOOP, env=env)
    dep["spec"]["template"]["metadata"]["labels"]["restarts-reader"] = "yes"
    apply(dep)
    for name in ("restarts-bare-1", "restarts-bare-2"):
        cleanup("pod", name)
        apply(bare_pod(name, CLASS, command=READER_LOOP, env=env,
                       labels={"app": name, "restarts-reader": "yes"}))
    names = eventually("four readers Running", lambda: (r := readers()) and len(r) == 4 and r, 180)
    for n in names:
        wait_running(n)
    owners = expected_owners(["restarts-bare-1", "restarts-bare-2"])
    assert len(owners) == 3
    eventually("Secret owned by the ReplicaSet and both bare pods' status objects",
               lambda: secret_owners() == owners, 30)
    before = {n: counts(n) for n in names}
    lost = {}

    new_pods = iter(range(1, 100))

    def watch_owners(step, expected, seconds):
        """Samples the Secret's owners for `seconds`: every one of `expected`
        must be there at every sample (a Secret may not lose, even for a
        moment, the owner of a pod still using it: the garbage collector
        acts within seconds)."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                missing = expected - secret_owners()
            except AssertionError as e:  # the Secret itself is gone
                missing = {f"Secret gone: {e}"}
            if missing:
                lost.setdefault(step, set()).update(missing)
            time.sleep(0.3)

    def step_done(step):
        nonlocal before
        before = expect_reads_continue(step, names, before)
        watch_owners(step, owners, 1)
        # A pod mounting right after the restart: the new process's first
        # apply of the Secret must keep every other pod's owner; and when
        # that pod goes, the Secret stays for the others.
        name = f"restarts-new-{next(new_pods)}"
        cleanup("pod", name)
        apply(bare_pod(name, CLASS))
        wait_running(name, timeout=90)
        with_new = owners | {kjson("get", "secretproviderclasspodstatus",
                                   status_object_name(name, "default", CLASS))["metadata"]["uid"]}
        watch_owners(f"{step}, then a new pod", with_new, 10)
        kubectl("delete", "pod", name, "--wait=true", timeout=120)
        watch_owners(f"{step}, then the new pod deleted", owners, 10)

    # 1. The node plugin's pod is deleted; the DaemonSet starts a new one.
    old = driver_name()
    kubectl("delete", "pod", old, "-n", "kube-system", "--wait=false")
    wait_driver_ready(old)
    step_done("node plugin pod deleted")

    # 2. helm upgrade to another image tag (a rolling update of the DaemonSet).
    old = driver_name()
    subprocess.run([sys.executable, str(HELM_PY), "upgrade", "--tag", "e2e-2"], check=True, env=os.environ)
    wait_driver_ready(old, image_tag="e2e-2")
    step_done("helm upgrade to e2e-2")

    # 3. The keeper's pod is deleted (a new keeper starts empty and is given
    # everything again at the node plugin's next change).
    keeper = pods_of(KEEPER_LABELS, "kube-system")[0]["metadata"]["name"]
    kubectl("delete", "pod", keeper, "-n", "kube-system", "--wait=false")
    eventually("new keeper Ready", lambda: any(
        p["metadata"]["name"] != keeper and all(s.get("ready") for s in p["status"].get("containerStatuses") or [{}])
        for p in pods_of(KEEPER_LABELS, "kube-system")), 120, interval=0.5)
    step_done("keeper pod deleted")

    # 4. Kubelet restarts: it reconstructs the volumes and publishes them again.
    subprocess.run([str(CLUSTER_SH), "restart-kubelet"], check=True)
    eventually("node Ready after the kubelet restart", lambda: node_ready(NODE), 120)
    step_done("kubelet restarted")

    # A change every node plugin writes: the vault value rotates, the Secret
    # follows, and its owners must still be all of them.
    set_secret("kv-demo", "restarts", NEXT_VALUE)
    eventually("Secret has the rotated value", lambda: base64.b64decode(
        kjson("get", "secret", SECRET)["data"]["v"]).decode() == NEXT_VALUE, 60)
    step_done("rotation after the restarts")
    # Kubelet's periodic republish (about every 60 s) comes and goes.
    time.sleep(70)
    step_done("a kubelet republish period")

    # New pods mount.
    cleanup("pod", "restarts-new")
    apply(bare_pod("restarts-new", CLASS))
    wait_running("restarts-new", timeout=90)
    assert exec_in("restarts-new", "cat", "/mnt/secrets-store/SECRET_1") == NEXT_VALUE
    owners = expected_owners(["restarts-bare-1", "restarts-bare-2", "restarts-new"])
    eventually("the new pod's owner added", lambda: secret_owners() == owners, 30)
    assert not lost, f"Secret {SECRET} lost owners of pods still using it: { {k: sorted(v) for k, v in lost.items()} }"
