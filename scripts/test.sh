#!/usr/bin/env bash
# The project's whole test suite (the README's test command; CI runs it).
# Needs root and /dev/fuse for the real-mount tests, python3 for the
# official Azure SDK conformance suite of the emulator.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo nextest run --workspace --no-fail-fast

if [ -x e2e/sdk-tests/run.sh ]; then
  e2e/sdk-tests/run.sh
fi
