#!/usr/bin/env bash
# The project's whole test suite (the README's test command; CI runs it).
# Needs root and /dev/fuse for the real-mount tests, python3 (with venv) for
# the chart checks and the official Azure SDK conformance suite of the
# emulator, and PyPI for their packages; etcd (Debian etcd-server) and Go
# with the module proxy for the Kubernetes control plane (e2e/k8s/) and the
# upstream peers (e2e/peers/); util-linux and iproute2 for their sandbox.
set -euo pipefail
cd "$(dirname "$0")/.."

# Each step's time, for CI's 90-minute budget.
timed() {
    local start=$SECONDS rc=0
    "$@" || rc=$?
    printf 'test.sh: %s: %ss (exit %s)\n' "$*" "$((SECONDS - start))" "$rc"
    return $rc
}

# Helm chart, CRDs and Dockerfile: helm lint/render, kubernetes-validate
# 1.33–1.37, hadolint, pytest (pip packages in a venv under target/).
timed charts/check.sh

# A real Kubernetes control plane (etcd, kube-apiserver,
# kube-controller-manager; e2e/k8s/README.md) for the tests that need one,
# found through SECRETFS_TEST_KUBECONFIG; stopped on exit, its logs kept.
k8s_dir=$PWD/target/k8s-control-plane
e2e/k8s/control-plane.sh stop "$k8s_dir"
rm -rf "$k8s_dir"
trap 'e2e/k8s/control-plane.sh stop "$k8s_dir"' EXIT
e2e/k8s/control-plane.sh start "$k8s_dir"
export SECRETFS_TEST_KUBECONFIG=$k8s_dir/kubeconfig
# The two behaviours the sync tests depend on (garbage collection, apply).
e2e/k8s/smoke.sh "$k8s_dir"

timed cargo nextest run --workspace --no-fail-fast

# The emulator checked by the official Azure Python SDK.
timed bash e2e/sdk-tests/run.sh

# The real-Kubernetes tests: Kubernetes built from its Go module (cached
# outside the repository), a single-node cluster in private namespaces, the
# chart installed with Helm's SDK (Debian packages, Go, PyPI; see README.md).
timed scripts/k8s-e2e.sh

# Ours served to theirs: the real upstream driver with `secretfs provider`,
# byte for byte against the real upstream Azure provider (peers built from
# their Go modules, cached; its own control plane in a private network
# namespace). Prints its phase timings.
timed scripts/peer-conformance.sh
