#!/usr/bin/env bash
# The project's whole test suite (the README's test command; CI runs it).
# Needs root and /dev/fuse for the real-mount tests, python3 (with venv) for
# the chart checks and the official Azure SDK conformance suite of the
# emulator, and PyPI for their packages.
set -euo pipefail
cd "$(dirname "$0")/.."

# Helm chart, CRDs and Dockerfile: helm lint/render, kubernetes-validate
# 1.33–1.37, hadolint, pytest (pip packages in a venv under target/).
charts/check.sh

cargo nextest run --workspace --no-fail-fast

# The emulator checked by the official Azure Python SDK.
bash e2e/sdk-tests/run.sh
