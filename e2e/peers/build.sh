#!/usr/bin/env bash
# Builds the upstream peers secretfs is measured and checked against, from
# their Go modules as pinned in driver/go.mod and azure/go.mod:
#   secrets-store-csi-driver                (sigs.k8s.io/secrets-store-csi-driver)
#   secrets-store-csi-driver-provider-azure (github.com/Azure/secrets-store-csi-driver-provider-azure)
# into a cache outside the repository, and prints the bin directory as its
# only line on stdout:
#
#     PEERS=$(e2e/peers/build.sh)
#
# The cache is $SECRETFS_PEERS_CACHE (default /var/cache/secretfs-peers), one
# directory per <driver version>-<provider version>-<hash of the modules>; a
# finished build is never redone, so a second run prints the directory at
# once. Logs and the build time go to stderr. See README.md.
#
#     e2e/peers/build.sh --cached   # the bin directory if built, else exit 1 (never builds)
#     e2e/peers/build.sh --chart    # the driver's Helm chart in the Go module cache (after a build)
#     e2e/peers/build.sh --azure-chart  # the Azure provider's Helm chart, likewise
set -euo pipefail

mode=build
case "${1:-}" in
    '') ;;
    --cached) mode=cached ;;
    --chart) mode=chart ;;
    --azure-chart) mode=azure-chart ;;
    *) echo "usage: $0 [--cached | --chart | --azure-chart]" >&2; exit 2 ;;
esac

here=$(cd "$(dirname "$0")" && pwd)
cd "$here"

# Bump when the build flags below change, so that old caches are not reused.
format=1

driver_module=sigs.k8s.io/secrets-store-csi-driver
azure_module=github.com/Azure/secrets-store-csi-driver-provider-azure
required() { # <go.mod> <module>: the version the go.mod requires
    awk -v m="$2" '($1 == m && $2 ~ /^v/) { print $2 } ($1 == "require" && $2 == m) { print $3 }' "$1"
}
driver_version=$(required driver/go.mod $driver_module)
azure_version=$(required azure/go.mod $azure_module)
if [ -z "$driver_version" ] || [ -z "$azure_version" ]; then
    echo "build.sh: driver/go.mod or azure/go.mod does not require $driver_module / $azure_module" >&2
    exit 1
fi

hash=$({ echo "format $format"; cat driver/go.mod driver/go.sum azure/go.mod azure/go.sum mlog/go.mod mlog/*.go; } \
    | sha256sum | cut -c1-12)
root=${SECRETFS_PEERS_CACHE:-/var/cache/secretfs-peers}
dir=$root/driver-$driver_version-azure-$azure_version-$hash
bin=$dir/bin
tools=(secrets-store-csi-driver secrets-store-csi-driver-provider-azure)

complete() {
    local t
    for t in "${tools[@]}"; do [ -x "$bin/$t" ] || return 1; done
}

if [ "$mode" = chart ]; then
    # The chart ships in the driver's module, which the build downloaded.
    command -v go >/dev/null || { echo "build.sh: needs the go command (for GOMODCACHE)" >&2; exit 1; }
    chart=$(cd driver && go env GOMODCACHE)/$driver_module@$driver_version/charts/secrets-store-csi-driver
    [ -f "$chart/Chart.yaml" ] || { echo "build.sh: no chart at $chart: run e2e/peers/build.sh first" >&2; exit 1; }
    echo "$chart"
    exit 0
fi
if [ "$mode" = azure-chart ]; then
    # The provider's chart ships in its module (GOMODCACHE spells capital
    # letters as !lower).
    command -v go >/dev/null || { echo "build.sh: needs the go command (for GOMODCACHE)" >&2; exit 1; }
    chart=$(cd azure && go env GOMODCACHE)/github.com/!azure/secrets-store-csi-driver-provider-azure@$azure_version/charts/csi-secrets-store-provider-azure
    [ -f "$chart/Chart.yaml" ] || { echo "build.sh: no chart at $chart: run e2e/peers/build.sh first" >&2; exit 1; }
    echo "$chart"
    exit 0
fi

if complete; then
    echo "build.sh: cached: $bin" >&2
    echo "$bin"
    exit 0
fi
if [ "$mode" = cached ]; then
    echo "build.sh: the upstream peers are not built ($bin is missing or incomplete): run e2e/peers/build.sh" >&2
    exit 1
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

command -v go >/dev/null || { echo "build.sh: needs the go command (Go >= the go lines of driver/go.mod and azure/go.mod)" >&2; exit 1; }
echo "build.sh: building $driver_module $driver_version and $azure_module $azure_version ($(go version | cut -d' ' -f3)) into $bin; a few minutes on 2 cores" >&2
start=$(date +%s)

# The build cache of this build is private and removed after success; after
# a failure it stays so that a retry resumes. The module cache is the
# user's usual one.
export GOCACHE=$dir/gocache
export GOTOOLCHAIN=local
export CGO_ENABLED=0

tmp=$dir/bin.tmp
rm -rf "$tmp"
mkdir -p "$tmp"
# The version variables their Makefiles set (BuildVersion; the build time and
# commit are left empty).
(cd driver && go build -p 2 -trimpath -buildvcs=false \
    -ldflags "-s -w -X $driver_module/pkg/version.BuildVersion=$driver_version" \
    -o "$tmp/secrets-store-csi-driver" $driver_module/cmd/secrets-store-csi-driver) >&2
(cd azure && go build -p 2 -trimpath -buildvcs=false \
    -ldflags "-s -w -X $azure_module/pkg/version.BuildVersion=$azure_version" \
    -o "$tmp/secrets-store-csi-driver-provider-azure" $azure_module/cmd) >&2

rm -rf "$bin"
mv "$tmp" "$bin"
complete || { echo "build.sh: the build finished but $bin lacks a binary" >&2; exit 1; }
rm -rf "$GOCACHE"
end=$(date +%s)
echo "build.sh: built in $((end - start)) s: $(du -sh "$bin" | cut -f1) in $bin" >&2
"$bin/secrets-store-csi-driver" --version >&2 || true
"$bin/secrets-store-csi-driver-provider-azure" --version >&2 || true
echo "$bin"
