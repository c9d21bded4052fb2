#!/usr/bin/env bash
# The load test of the hardening issue (not run in CI: it needs a release
# build and about two minutes; tests/integration/load_smoke.rs runs a tiny version in
# CI). Builds release binaries, then runs load-test (e2e/src/load/) against
# target/release/secretfs: 250 volumes published 16 at a time, 100,000
# open/read/close reads by 8 readers over 30 s while secrets rotate every
# 2 s (node --rotation-poll-interval 5s), the same reads on a tmpfs as the
# baseline, then unpublish. Prints the figures recorded in
# docs/BENCHMARKS.md. Needs root and /dev/fuse.
#
# Extra arguments go to load-test (e.g. --volumes 100, --read-time 0s);
# `target/release/load-test --help` lists them.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p secretfs -p secretfs-e2e --bin secretfs --bin load-test
echo "commit $(git rev-parse --short HEAD), $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg), $(date -u +%Y-%m-%dT%H:%MZ)"
args=(--secretfs target/release/secretfs
    --volumes 250 --publish-concurrency 16
    --reads 100000 --readers 8 --read-time 30s
    --rotation-poll-interval 5s --rotate-every 2s "$@")
echo "target/release/load-test ${args[*]}"
exec target/release/load-test "${args[@]}"
