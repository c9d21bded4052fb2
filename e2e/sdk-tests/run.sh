#!/usr/bin/env bash
# Run the official Azure SDK for Python (pinned in requirements.txt) against
# kv-emulator with the conformance seed.
#
#   e2e/sdk-tests/run.sh [pytest args…]
#
# Environment:
#   SDK_TESTS_VENV       venv location (default: <repo>/target/sdk-venv)
#   KV_EMULATOR_LISTEN   HTTPS listen address (default 127.0.0.1:443 as root,
#                        else 127.0.0.1:0; off 443 the suite must turn
#                        verify_challenge_resource off, and says so)
#   SDK_TESTS_NO_BUILD=1 do not run `cargo build` for kv-emulator
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
venv=${SDK_TESTS_VENV:-$repo/target/sdk-venv}
bin=${CARGO_TARGET_DIR:-$repo/target}/debug/kv-emulator

if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
stamp="$venv/.requirements.sha256"
want=$(sha256sum "$here/requirements.txt" | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    "$venv/bin/python" -m pip install --disable-pip-version-check -q -r "$here/requirements.txt"
    echo "$want" > "$stamp"
fi

if [ "${SDK_TESTS_NO_BUILD:-0}" != 1 ]; then
    (cd "$repo" && cargo build -q -p secretfs-e2e --bin kv-emulator)
fi
[ -x "$bin" ] || { echo "run.sh: $bin is missing" >&2; exit 1; }

if [ -n "${KV_EMULATOR_LISTEN:-}" ]; then
    listen=$KV_EMULATOR_LISTEN
elif [ "$(id -u)" = 0 ]; then
    listen=127.0.0.1:443
else
    listen=127.0.0.1:0
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/kv-sdk-tests.XXXXXX")
KV_EMULATOR_LOG=${KV_EMULATOR_LOG:-debug} "$bin" --listen "$listen" --seed "$repo/e2e/seeds/conformance.yaml" --ca-path "$work/ca.pem" \
    > "$work/info.json" 2> "$work/emulator.log" &
pid=$!
cleanup() {
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

for _ in $(seq 1 300); do
    [ -s "$work/info.json" ] && break
    if ! kill -0 "$pid" 2>/dev/null; then
        echo "run.sh: kv-emulator exited:" >&2
        cat "$work/emulator.log" >&2
        exit 1
    fi
    sleep 0.2
done
[ -s "$work/info.json" ] || { echo "run.sh: kv-emulator did not start" >&2; exit 1; }
echo "kv-emulator: $(cat "$work/info.json")"

cd "$here"
status=0
KV_EMULATOR_INFO="$work/info.json" "$venv/bin/python" -m pytest -v -p no:cacheprovider "$@" || status=$?
if [ "$status" != 0 ]; then
    echo "--- kv-emulator log ---" >&2
    tail -n 50 "$work/emulator.log" >&2
fi
# The emulator's debug log must never hold a token, a client secret or a
# secret value (the suite used all of them).
if grep -nE 'eyJ[A-Za-z0-9_-]{20,}|emulator-test-client-secret|outsider-test-client-secret|Sql-Passw0rd|second-value|expired-but-readable' "$work/emulator.log" >&2; then
    echo "run.sh: FAILED: secret material in the kv-emulator log" >&2
    status=1
elif [ "$(wc -l < "$work/emulator.log")" -lt 10 ]; then
    echo "run.sh: FAILED: the kv-emulator debug log is unexpectedly empty" >&2
    status=1
fi
exit "$status"
