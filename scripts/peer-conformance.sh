#!/usr/bin/env bash
# Ours served to theirs (tests/integration/peers.rs): the real upstream
# Secrets Store CSI Driver with `secretfs provider` as provider `azure`,
# against the same driver with the real upstream Azure provider and against
# `secretfs node`, file for file and byte for byte, on a real control plane.
# scripts/test.sh runs it after the main suite; it can also run alone.
#
# Phases (timed): build the peers from their Go modules (cached, see
# e2e/peers/README.md) and the Kubernetes binaries (cached), build the test,
# then inside e2e/peers/sandbox.sh (private network and mount namespaces):
# a control plane of its own, the test, the control plane stopped.
#
# Needs root, /dev/fuse, Go with the module proxy, etcd, util-linux,
# iproute2 (and what e2e/k8s/control-plane.sh needs).
set -euo pipefail
cd "$(dirname "$0")/.."

phase() {
    local name=$1 start=$2
    echo "peer-conformance: phase $name: $(($(date +%s) - start)) s"
}

if [ "${1:-}" != --inside ]; then
    t=$(date +%s)
    SECRETFS_PEERS_BIN=$(e2e/peers/build.sh)
    export SECRETFS_PEERS_BIN
    phase peers-build "$t"
    t=$(date +%s)
    SECRETFS_K8S_BIN=$(e2e/k8s/build.sh)
    export SECRETFS_K8S_BIN
    phase k8s-build "$t"
    t=$(date +%s)
    # Built outside: the sandbox has no network.
    cargo nextest run -p secretfs --test integration --no-run
    phase test-build "$t"
    exec e2e/peers/sandbox.sh "$0" --inside
fi

# Inside the sandbox.
dir=$PWD/target/peers-control-plane
e2e/k8s/control-plane.sh stop "$dir"
rm -rf "$dir"
trap 'e2e/k8s/control-plane.sh stop "$dir"' EXIT
t=$(date +%s)
e2e/k8s/control-plane.sh start "$dir"
phase control-plane "$t"
export SECRETFS_TEST_KUBECONFIG=$dir/kubeconfig
t=$(date +%s)
CARGO_NET_OFFLINE=true cargo nextest run -p secretfs --test integration \
    --run-ignored only --no-fail-fast peers::
phase test "$t"
