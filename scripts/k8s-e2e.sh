#!/usr/bin/env bash
# The real-Kubernetes tests: a single-node cluster (etcd, kube-apiserver,
# kube-controller-manager, kube-scheduler, containerd, kubelet and an image
# registry) started in private mount, network and PID namespaces, the chart
# installed with Helm's SDK, the tests of e2e/k8s/cluster/tests run against
# it, and everything torn down. Root, /dev/fuse, Go (the Kubernetes build),
# Debian's apt, PyPI. See README.md ("Real Kubernetes").
#
#   scripts/k8s-e2e.sh            # whole run; ends with `k8s-e2e: N passed, M failed`
#   K8S_E2E_PYTEST_ARGS='-k seed' scripts/k8s-e2e.sh     # some tests only
#   K8S_E2E_PEERS=0 scripts/k8s-e2e.sh       # without the upstream driver phase
#   K8S_E2E_PEERS=only scripts/k8s-e2e.sh    # that phase alone
#
# Phases (each timed): Debian packages, Go build of Kubernetes (cached
# outside the repository by e2e/k8s/build.sh), Rust release build of the
# image's binary and debug build of the emulator, Python venv, then inside
# the namespaces (e2e/k8s/cluster/cluster.sh): cluster start, images, chart,
# tests, the upstream driver phase (its own chart in place of secretfs's,
# with `secretfs provider`: e2e/peers/README.md, "On the real cluster"),
# teardown; then a check that nothing is left on the host.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)

started=$(date +%s)
phase_start=$started
phase() { # name: prints the time since the previous phase
    local now; now=$(date +%s)
    printf 'k8s-e2e phase: %-28s %4ss\n' "$1" "$((now - phase_start))"
    phase_start=$now
}
summary() { # passed failed
    printf 'k8s-e2e: total %ss\n' "$(($(date +%s) - started))"
    echo "k8s-e2e: $1 passed, $2 failed"
}

[ "$(id -u)" = 0 ] || { echo "k8s-e2e: needs root (namespaces, mounts, FUSE)"; summary 0 1; exit 1; }
[ -c /dev/fuse ] || { echo "k8s-e2e: needs /dev/fuse"; summary 0 1; exit 1; }

# ---------------------------------------------------------------- packages
# Installed without starting their services (policy-rc.d answers 101 while
# apt runs): the cluster starts its own copies inside its namespaces, and no
# packaged daemon may hold their ports or sockets on the host.
PACKAGES=(containerd runc busybox-static docker-registry containernetworking-plugins etcd-server iptables openssl curl python3-venv)
missing=()
for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    policy_added=
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        policy_added=1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    [ -n "$policy_added" ] && rm -f /usr/sbin/policy-rc.d
fi
# A packaged service started anyway (a machine whose init runs them) would
# own the ports the cluster uses: stop it through its unit if it runs.
if command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
    for unit in containerd etcd docker-registry; do
        systemctl disable --now "$unit" >/dev/null 2>&1 || true
    done
fi
phase "packages"

# ---------------------------------------------------------------- builds
# K8S_BIN may name a directory with the binaries already built.
K8S_BIN=${K8S_BIN:-$(e2e/k8s/build.sh)}
# Two small programs of ours for the images, cached by their sources:
# the sandbox image's pause (its own module, no dependencies) and the
# livenessprobe sidecar (a package of e2e/k8s's module, for its gRPC and
# CSI dependencies; outside cmd/ so that it is not part of build.sh's key).
cache=${SECRETFS_K8S_CACHE:-/var/cache/secretfs-k8s}
extra_hash=$(cat e2e/k8s/go.mod e2e/k8s/go.sum e2e/k8s/cluster/pause/go.mod e2e/k8s/cluster/pause/main.go \
    e2e/k8s/cluster/livenessprobe/main.go | sha256sum | cut -c1-12)
EXTRA_BIN=$cache/e2e-extra-$extra_hash
if [ ! -x "$EXTRA_BIN/pause" ] || [ ! -x "$EXTRA_BIN/livenessprobe" ]; then
    mkdir -p "$EXTRA_BIN.tmp"
    (cd e2e/k8s/cluster/pause && CGO_ENABLED=0 GOFLAGS=-buildvcs=false go build -trimpath -ldflags=-s -o "$EXTRA_BIN.tmp/pause" .)
    (cd e2e/k8s && CGO_ENABLED=0 GOFLAGS=-buildvcs=false go build -trimpath -ldflags='-s -w' \
        -o "$EXTRA_BIN.tmp/livenessprobe" ./cluster/livenessprobe)
    rm -rf "$EXTRA_BIN"
    mv "$EXTRA_BIN.tmp" "$EXTRA_BIN"
fi
# The upstream driver of the peers phase, built by e2e/peers/build.sh (CI:
# .ci/run) and only taken from its cache here: when it is not built, that
# phase's test fails and says to run build.sh.
PEERS_BIN=${PEERS_BIN:-$(e2e/peers/build.sh --cached 2>/dev/null || true)}
PEERS_CHART=${PEERS_CHART:-$(e2e/peers/build.sh --chart 2>/dev/null || true)}
PEERS_AZURE_CHART=${PEERS_AZURE_CHART:-$(e2e/peers/build.sh --azure-chart 2>/dev/null || true)}
if [ -z "$PEERS_BIN" ] && [ "${K8S_E2E_PEERS:-1}" != 0 ]; then
    echo "k8s-e2e: the upstream driver is not built: run e2e/peers/build.sh (its phase will fail)"
fi
phase "go build"

# The image's binary exactly as the Dockerfile builds it; the emulator and
# the kubelet stand-in as the other end-to-end tests use them.
cargo build --release --locked --no-default-features -p secretfs
cargo build --locked -p secretfs-e2e --bin kv-emulator --bin kubelet-standin
SECRETFS_BIN=$REPO/target/release/secretfs
E2E_BIN=$REPO/target/debug
phase "cargo build"

VENV=$REPO/target/k8s-venv
REQS=e2e/k8s/cluster/requirements.txt
if [ ! -x "$VENV/bin/python" ]; then python3 -m venv "$VENV"; fi
if ! cmp -s "$REQS" "$VENV/.requirements.txt"; then
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$REQS"
    cp "$REQS" "$VENV/.requirements.txt"
fi
phase "python venv"

# ---------------------------------------------------------------- the cluster
LOGS=$REPO/target/k8s-e2e/logs
rm -rf "$LOGS"
mkdir -p "$LOGS"
mounts_before=$(awk '{print $5}' /proc/self/mountinfo | sort)
cgroups_before=$(ls -d /sys/fs/cgroup/*/kubepods* 2>/dev/null | sort || true)

export K8S_BIN EXTRA_BIN SECRETFS_BIN E2E_BIN VENV LOGS REPO PEERS_BIN PEERS_CHART PEERS_AZURE_CHART
rc=0
# --pid --fork --mount-proc: cluster.sh is PID 1 of a new PID namespace, so
# every process of the cluster (shims and containers included) is killed by
# the kernel when it exits, whatever state a failed test left.
unshare --mount --net --pid --fork --mount-proc --propagation private \
    e2e/k8s/cluster/cluster.sh run || rc=$?
phase "cluster (start, tests, teardown)"

# ---------------------------------------------------------------- leak check
leaks=()
# Kubelet's cgroups (cgroup v1 hierarchies are the host's): remove the empty
# tree it leaves, deepest first; anything that will not go is a leak.
for dir in /sys/fs/cgroup/*/kubepods*; do
    [ -d "$dir" ] || continue
    grep -qx "$dir" <<<"$cgroups_before" && continue
    find "$dir" -depth -type d -exec rmdir {} + 2>/dev/null || true
    [ -d "$dir" ] && leaks+=("cgroup $dir")
done
mounts_after=$(awk '{print $5}' /proc/self/mountinfo | sort)
# Only where the cluster works (its run directory, the repository's target,
# kubelet's and containerd's own paths): other tests running on the host at
# the same time mount volumes of their own under /tmp, which are not ours.
new_mounts=$(comm -13 <(echo "$mounts_before") <(echo "$mounts_after") |
    grep -E "^(/run/secretfs-k8s-e2e|$REPO/target|/var/lib/kubelet|/var/lib/containerd|/run/containerd|/run/netns)(/|$)" || true)
[ -n "$new_mounts" ] && leaks+=("mounts: $new_mounts")
# The namespaces: no process may still be in any of them (a process in one
# keeps it alive; the PID namespace's end killed every process in it).
if [ -s "$LOGS/namespaces" ]; then
    while read -r ns; do
        for f in /proc/[0-9]*/ns/pid /proc/[0-9]*/ns/net /proc/[0-9]*/ns/mnt; do
            if [ "$(readlink "$f" 2>/dev/null)" = "$ns" ]; then
                p=${f#/proc/}; p=${p%%/*}
                leaks+=("process $p in $ns: $(tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null | cut -c1-80)")
            fi
        done
    done <"$LOGS/namespaces"
else
    leaks+=("cluster.sh did not record its namespaces")
fi
if [ -s "$LOGS/created-dirs" ]; then
    while read -r d; do rmdir "$d" 2>/dev/null || leaks+=("directory $d not empty"); done <"$LOGS/created-dirs"
fi
if [ ${#leaks[@]} -gt 0 ]; then
    printf 'k8s-e2e: LEFT ON THE HOST: %s\n' "${leaks[@]}"
fi
phase "leak check"

# ---------------------------------------------------------------- result
passed=0 failed=0
# One report per pytest phase (junit.xml, junit-peers.xml).
junits=("$LOGS"/junit*.xml)
if [ -f "${junits[0]}" ]; then
    read -r passed failed < <("$VENV/bin/python" - "${junits[@]}" <<'EOF'
import sys, xml.etree.ElementTree as ET
passed = failed = 0
for path in sys.argv[1:]:
    for c in ET.parse(path).getroot().iter("testcase"):
        if c.find("failure") is not None or c.find("error") is not None:
            failed += 1
        elif c.find("skipped") is None:
            passed += 1
print(passed, failed)
EOF
)
fi
if [ "$rc" != 0 ] && [ "$failed" = 0 ]; then
    # The cluster did not come up or the run broke before the tests ended.
    echo "k8s-e2e: cluster.sh failed (exit $rc) outside the tests; logs in $LOGS"
    failed=$((failed + 1))
fi
if [ ${#leaks[@]} -gt 0 ]; then failed=$((failed + 1)); fi
echo "k8s-e2e: logs in $LOGS"
summary "$passed" "$failed"
[ "$failed" = 0 ]
