#!/usr/bin/env bash
# Builds the real Kubernetes components the tests run against (kube-apiserver,
# kube-controller-manager, kube-scheduler, kubelet, kubectl from the
# k8s.io/kubernetes module pinned in go.mod, and our commands under cmd/:
# node-driver-registrar) into a cache outside the repository, and prints the
# bin directory as its only line on stdout:
#
#     BIN=$(e2e/k8s/build.sh)
#
# The cache is $SECRETFS_K8S_CACHE (default /var/cache/secretfs-k8s), one
# directory per <kubernetes version>-<hash of go.mod and go.sum>. The
# Kubernetes binaries of a key are built once; the commands of cmd/ are
# rebuilt (in seconds) when their sources change. A second run prints the
# directory at once. Logs and the build time go to stderr. See README.md.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
cd "$here"

# Bump when the build flags below change, so that old caches are not reused.
format=1

version=$(awk '$1 == "require" && $2 == "k8s.io/kubernetes" { print $3 }' go.mod)
if [ -z "$version" ]; then
    echo "build.sh: go.mod has no 'require k8s.io/kubernetes vX.Y.Z' line" >&2
    exit 1
fi
major=${version#v}; major=${major%%.*}
minor=${version#v*.}; minor=${minor%%.*}

hash=$({ echo "format $format"; cat go.mod go.sum; } | sha256sum | cut -c1-12)
cmd_hash=$(find cmd -type f | LC_ALL=C sort | xargs sha256sum | sha256sum | cut -c1-12)
root=${SECRETFS_K8S_CACHE:-/var/cache/secretfs-k8s}
dir=$root/$version-$hash
bin=$dir/bin
kube=(kube-apiserver kube-controller-manager kube-scheduler kubelet kubectl)
ours=()
for d in cmd/*/; do ours+=("$(basename "$d")"); done

kube_built() {
    local t
    for t in "${kube[@]}"; do [ -x "$bin/$t" ] || return 1; done
}
ours_built() {
    local t
    [ "$(cat "$bin/.cmd-hash" 2>/dev/null)" = "$cmd_hash" ] || return 1
    for t in "${ours[@]}"; do [ -x "$bin/$t" ] || return 1; done
}

if kube_built && ours_built; then
    echo "build.sh: cached: $bin" >&2
    echo "$bin"
    exit 0
fi

command -v go >/dev/null || { echo "build.sh: needs the go command (Go >= the go line of go.mod)" >&2; exit 1; }
mkdir -p "$dir"
# One build per key at a time: a second caller waits for the first and then
# finds the binaries.
exec 9>"$dir/lock"
flock 9

export GOTOOLCHAIN=local
export CGO_ENABLED=0
ldflags="-s -w"
for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $p.gitVersion=$version -X $p.gitMajor=$major -X $p.gitMinor=$minor -X $p.gitTreeState=clean"
done
# build <GOCACHE> <package>...: into $dir/bin.tmp, then each binary moved
# into $bin (a rename: a running binary keeps its old file).
build() {
    local cache=$1 f
    shift
    rm -rf "$dir/bin.tmp"
    mkdir -p "$dir/bin.tmp" "$bin"
    GOCACHE=$cache go build -p 2 -trimpath -buildvcs=false -ldflags "$ldflags" -o "$dir/bin.tmp/" "$@" >&2
    for f in "$dir/bin.tmp"/*; do mv -f "$f" "$bin/"; done
    rmdir "$dir/bin.tmp"
}

if ! kube_built; then
    echo "build.sh: building Kubernetes $version ($(go version | cut -d' ' -f3)) into $bin; about 6 minutes on 2 idle cores" >&2
    start=$(date +%s)
    # The build cache of this build is private to the key and removed after
    # success (gigabytes, and a finished key never builds Kubernetes again);
    # after a failure it stays so that a retry resumes. The module cache is
    # the user's usual one.
    build "$dir/gocache" "${kube[@]/#/k8s.io/kubernetes/cmd/}"
    kube_built || { echo "build.sh: the build finished but $bin lacks a binary" >&2; exit 1; }
    echo "build.sh: Go build cache of the build: $(du -sh "$dir/gocache" | cut -f1) (removed)" >&2
    rm -rf "$dir/gocache"
    echo "build.sh: built Kubernetes in $(($(date +%s) - start)) s" >&2
fi
if ! ours_built; then
    start=$(date +%s)
    # A small build cache of its own, kept: a change under cmd/ rebuilds in
    # seconds.
    build "$dir/gocache-cmd" "${ours[@]/#/./cmd/}"
    echo "$cmd_hash" >"$bin/.cmd-hash"
    ours_built || { echo "build.sh: the build finished but $bin lacks one of ${ours[*]}" >&2; exit 1; }
    echo "build.sh: built ${ours[*]} in $(($(date +%s) - start)) s" >&2
fi
echo "build.sh: $(du -sh "$bin" | cut -f1) in $bin; $("$bin/kube-apiserver" --version)" >&2
echo "$bin"
