#!/usr/bin/env bash
# Fuzzes secretfs's parsers with cargo-fuzz (libFuzzer). NOT run in CI. On
# 2 cores the first build takes ~20 min (every dependency, instrumented, in
# fuzz/target), a rebuild after a change to secretfs ~4 min, and the four
# runs ~5 min together.
#
#   scripts/fuzz.sh                        # every target, 1,000,000 runs each
#   scripts/fuzz.sh objects pfx_pem        # some targets
#   RUNS=20000 scripts/fuzz.sh             # a quick smoke run
#
# Targets (fuzz/fuzz_targets/, properties in src/fuzzing.rs):
#   objects            the SecretProviderClass `objects` parameter (+ the Azure parameters)
#   volume_context     a NodePublishVolume's volume context, secrets and target path
#   provider_response  an external provider's MountResponse (protobuf), as checked
#   pfx_pem            PFX -> PEM of certificate-backed secrets, PEM/PFX -> tls.crt/tls.key
#
# Each target runs alone (the machine's 2 cores are shared), for RUNS
# executions, starting from its corpus in fuzz/corpus/<target> (kept between
# runs, git-ignored), which is seeded from fuzz/seeds/<target> and, for
# pfx_pem, from the PFX and PEM files of tests/fixtures/azure. At the end it
# prints, per target: executions, seconds, corpus size, and whether it crashed
# (a panic, a broken property, a timeout or too much memory). It exits 1 when
# any target crashed; the input is then in fuzz/artifacts/<target>/ and the
# log in fuzz/artifacts/<target>.log. Reproduce and minimize with
#
#   cd fuzz && cargo fuzz run --sanitizer none <target> artifacts/<target>/<crash-file>
#   cd fuzz && cargo fuzz tmin --sanitizer none <target> artifacts/<target>/<crash-file>
#
# then keep the minimized input as a test in tests/integration/fuzz_regressions.rs.
#
# Toolchain: stable Rust only. `--sanitizer none` makes cargo-fuzz build
# without `-Zsanitizer=address`; the coverage instrumentation libFuzzer needs
# (`-Cpasses=sancov-module`, `-Cllvm-args=-sanitizer-coverage-*`) is made of
# stable `-C` flags, so no nightly and no RUSTC_BOOTSTRAP are needed. Set
# RUSTC_BOOTSTRAP=1 yourself only if a future cargo-fuzz passes `-Z` flags
# (stable rustc then accepts them). libfuzzer-sys compiles libFuzzer with
# the system C++ compiler (g++ or clang++).
#
# Needs: cargo, a C++ compiler; cargo-fuzz is installed if missing.
set -euo pipefail

cd "$(dirname "$0")/.."
root=$PWD
runs=${RUNS:-1000000}
all=(objects volume_context provider_response pfx_pem)
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=("${all[@]}")

if ! command -v cargo-fuzz >/dev/null; then
  echo "== installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi

cd fuzz
echo "== building ${targets[*]} (release, debug assertions, no sanitizer)"
for t in "${targets[@]}"; do
  cargo fuzz build --sanitizer none "$t"
done

# Extra libFuzzer options per target.
options() {
  case $1 in
    objects) echo "-dict=dict/objects.dict -max_len=4096" ;;
    volume_context) echo "-dict=dict/volume_context.dict -max_len=4096" ;;
    provider_response) echo "-max_len=4096" ;;
    pfx_pem) echo "-dict=dict/pfx_pem.dict -max_len=8192" ;;
    *) echo "unknown target $1" >&2; exit 2 ;;
  esac
}

summary=()
failed=0
for t in "${targets[@]}"; do
  corpus=corpus/$t
  mkdir -p "$corpus" "artifacts/$t"
  cp -n seeds/"$t"/* "$corpus"/ 2>/dev/null || true
  if [ "$t" = pfx_pem ]; then
    fx=$root/tests/fixtures/azure
    cp -n "$fx"/input/*.pfx "$fx"/input/*.pfx.b64 "$fx"/input/*.pem "$fx"/expected/*.pem "$corpus"/
  fi
  log=artifacts/$t.log
  echo "== $t: $runs runs from $(find "$corpus" -type f | wc -l) inputs (log: fuzz/$log)"
  start=$(date +%s)
  status=0
  # shellcheck disable=SC2046 # options are words
  cargo fuzz run --sanitizer none "$t" "$corpus" -- \
    -runs="$runs" -timeout=20 -rss_limit_mb=2048 -print_final_stats=1 \
    $(options "$t") >"$log" 2>&1 || status=$?
  secs=$(($(date +%s) - start))
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
  size=$(find "$corpus" -type f | wc -l)
  if [ "$status" -eq 0 ] && ! grep -qE '^==[0-9]+== ERROR|panicked at|deadly signal' "$log"; then
    result=ok
  else
    result="CRASHED (exit $status; see fuzz/$log and fuzz/artifacts/$t/)"
    failed=1
    grep -E 'panicked at|ERROR:|SUMMARY|Test unit written' "$log" | head -n 5 || true
  fi
  line=$(printf '%-18s %10s execs %6ss corpus %5s  %s' "$t" "${execs:-?}" "$secs" "$size" "$result")
  echo "$line"
  summary+=("$line")
done

echo
echo "== summary (runs asked per target: $runs)"
printf '%s\n' "${summary[@]}"
exit "$failed"
