#!/usr/bin/env bash
# Restart survival with a real upgrade (not run in CI: it needs a second
# build). Builds a release binary, then runs the restart-survival e2e with
# the test build as the old version and the release build as the upgrade:
# 50 volumes, 8 readers, SIGTERM + restart, SIGKILL + restart, upgrade.
# Needs root and /dev/fuse. Prints the figures recorded in
# docs/BENCHMARKS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --bin secretfs
export SECRETFS_UPGRADE_BINARY="$PWD/target/release/secretfs"
cargo nextest run -p secretfs --test integration \
    node_e2e::survival::fifty_volumes_survive --no-capture 2>&1 |
    grep -A4 '^restart survival:'
echo "old: $(sha256sum target/debug/secretfs)"
echo "new: $(sha256sum target/release/secretfs)"
