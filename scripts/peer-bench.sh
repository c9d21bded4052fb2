#!/usr/bin/env bash
# secretfs and the upstream Secrets Store CSI Driver + Azure provider,
# measured the same way in one run (the peer_bench module of secretfs-e2e,
# e2e/src/peer_bench/, run by e2e/src/bin/peer-bench.rs; figures in
# docs/BENCHMARKS.md). Not run in CI: it takes about 20 minutes (18.5
# measured), most of it waiting for both drivers' 2-minute refresh interval.
#
# Builds the peers from their Go modules (e2e/peers/build.sh, cached), the
# Kubernetes binaries (e2e/k8s/build.sh, cached) and release binaries of
# secretfs and peer-bench; then, inside e2e/peers/sandbox.sh (private
# network and mount namespaces: the emulator on 127.0.0.1:443 and
# 169.254.169.254:80, a private /etc/hosts), starts a control plane of its
# own and runs peer-bench, which prints the side-by-side table.
#
# Extra arguments go to peer-bench (e.g. --rows publish,read or
# --drivers upstream); `target/release/peer-bench --help` lists them.
# Needs root, /dev/fuse, Go with the module proxy, etcd, util-linux, iproute2.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "${1:-}" != --inside ]; then
    SECRETFS_PEERS_BIN=$(e2e/peers/build.sh)
    SECRETFS_K8S_BIN=$(e2e/k8s/build.sh)
    export SECRETFS_PEERS_BIN SECRETFS_K8S_BIN
    cargo build --release -p secretfs -p secretfs-e2e --bin secretfs --bin peer-bench
    exec e2e/peers/sandbox.sh "$0" --inside "$@"
fi
shift

dir=$PWD/target/peer-bench-control-plane
e2e/k8s/control-plane.sh stop "$dir"
rm -rf "$dir"
trap 'e2e/k8s/control-plane.sh stop "$dir"' EXIT
e2e/k8s/control-plane.sh start "$dir"
export SECRETFS_TEST_KUBECONFIG=$dir/kubeconfig

driver=$("$SECRETFS_PEERS_BIN/secrets-store-csi-driver" --version 2>/dev/null | tr -d '\n')
provider=$("$SECRETFS_PEERS_BIN/secrets-store-csi-driver-provider-azure" --version 2>/dev/null | tr -d '\n')
echo "commit $(git rev-parse --short HEAD), $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg), $(date -u +%Y-%m-%dT%H:%MZ)"
echo "upstream driver $driver, Azure provider $provider"
args=(--secretfs target/release/secretfs --json target/peer-bench.json "$@")
echo "target/release/peer-bench ${args[*]}"
target/release/peer-bench "${args[@]}"
