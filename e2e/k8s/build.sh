#!/usr/bin/env bash
# Builds the real Kubernetes components the tests run against (kube-apiserver,
# kube-controller-manager, kube-scheduler, kubelet, kubectl from the
# k8s.io/kubernetes module pinned in go.mod, and our node-driver-registrar)
# into a cache outside the repository, and prints the bin directory as its
# only line on stdout:
#
#     BIN=$(e2e/k8s/build.sh)
#
# The cache is $SECRETFS_K8S_CACHE (default /var/cache/secretfs-k8s), one
# directory per <kubernetes version>-<hash of go.mod, go.sum and cmd/>; a
# finished build is never redone, so a second run prints the directory at
# once. Logs and the build time go to stderr. See README.md.
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

hash=$({ echo "format $format"; cat go.mod go.sum; find cmd -name '*.go' -type f | LC_ALL=C sort | xargs cat; } \
    | sha256sum | cut -c1-12)
root=${SECRETFS_K8S_CACHE:-/var/cache/secretfs-k8s}
dir=$root/$version-$hash
bin=$dir/bin
tools=(kube-apiserver kube-controller-manager kube-scheduler kubelet kubectl node-driver-registrar)

complete() {
    local t
    for t in "${tools[@]}"; do [ -x "$bin/$t" ] || return 1; done
}

if complete; then
    echo "build.sh: cached: $bin" >&2
    echo "$bin"
    exit 0
fi

mkdir -p "$dir"
# One build per key at a time: a second caller waits for the first and then
# finds the binaries.
exec 9>"$dir/lock"
flock 9
if complete; then
    echo "build.sh: cached (built by another run meanwhile): $bin" >&2
    echo "$bin"
    exit 0
fi

command -v go >/dev/null || { echo "build.sh: needs the go command (Go >= the go line of go.mod)" >&2; exit 1; }
echo "build.sh: building Kubernetes $version ($(go version | cut -d' ' -f3)) into $bin; about 10 minutes on 2 cores" >&2
start=$(date +%s)

# The build cache of this build is private and removed after success (it is
# gigabytes, and a finished key never builds again); after a failure it stays
# so that a retry resumes. The module cache is the user's usual one.
export GOCACHE=$dir/gocache
export GOTOOLCHAIN=local
export CGO_ENABLED=0
pkg=k8s.io/component-base/version
cgo=k8s.io/client-go/pkg/version
ldflags="-s -w"
for p in $pkg $cgo; do
    ldflags+=" -X $p.gitVersion=$version -X $p.gitMajor=$major -X $p.gitMinor=$minor -X $p.gitTreeState=clean"
done

tmp=$dir/bin.tmp
rm -rf "$tmp"
mkdir -p "$tmp"
go build -p 2 -trimpath -buildvcs=false -ldflags "$ldflags" -o "$tmp/" \
    k8s.io/kubernetes/cmd/kube-apiserver \
    k8s.io/kubernetes/cmd/kube-controller-manager \
    k8s.io/kubernetes/cmd/kube-scheduler \
    k8s.io/kubernetes/cmd/kubelet \
    k8s.io/kubernetes/cmd/kubectl \
    ./cmd/node-driver-registrar >&2

rm -rf "$bin"
mv "$tmp" "$bin"
complete || { echo "build.sh: the build finished but $bin lacks a binary" >&2; exit 1; }
rm -rf "$GOCACHE"
end=$(date +%s)
echo "build.sh: built in $((end - start)) s: $(du -sh "$bin" | cut -f1) in $bin" >&2
"$bin/kube-apiserver" --version >&2
echo "$bin"
