#!/usr/bin/env bash
# Checks on the real control plane (control-plane.sh) of exactly the two
# Kubernetes behaviours the sync tests depend on:
#
# 1. the garbage collector deletes a Secret whose only owner was deleted, and
#    keeps one that still has another owner (removing the dead reference);
# 2. server-side apply merges metadata.ownerReferences by uid per field
#    manager: A applies [a], B applies [b] -> [a, b]; A applies [] -> [b].
#
#     e2e/k8s/smoke.sh            # starts a control plane in a temporary dir
#     e2e/k8s/smoke.sh <dir>      # uses the one already started in <dir>
#
# Ends with "N passed, M failed"; exits non-zero on any failure.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)

if [ $# -ge 1 ]; then
    dir=$1
    [ -f "$dir/env" ] || { echo "smoke.sh: $dir/env missing; run control-plane.sh start $dir first" >&2; exit 1; }
else
    dir=$(mktemp -d /tmp/secretfs-k8s-smoke.XXXXXX)
    trap '"$here/control-plane.sh" stop "$dir" || true; rm -rf "$dir"' EXIT
    "$here/control-plane.sh" start "$dir"
fi
bin=$(sed -n 's/^SECRETFS_K8S_BIN=//p' "$dir/env")
kc() { "$bin/kubectl" --kubeconfig "$dir/kubeconfig" "$@"; }

elapsed_over() { awk "BEGIN { exit !($(date +%s.%N) - $1 > $2) }"; }
passed=0
failed=0
pass() { echo "smoke: PASS $*"; passed=$((passed + 1)); }
fail() { echo "smoke: FAIL $*"; failed=$((failed + 1)); }

ns=smoke-$(openssl rand -hex 4)
kc create namespace "$ns" >/dev/null
k() { kc -n "$ns" "$@"; }
uid() { k get "$1" "$2" -o jsonpath='{.metadata.uid}'; }
owners() { k get secret "$1" -o jsonpath='{range .metadata.ownerReferences[*]}{.name}{" "}{end}'; }
ownerref() { # name uid
    printf '{"apiVersion":"v1","kind":"ConfigMap","name":"%s","uid":"%s"}' "$1" "$2"
}
secret_owned_by() { # secret-name ownerref-json...
    local name=$1 refs
    shift
    refs=$(IFS=,; echo "$*")
    printf '{"apiVersion":"v1","kind":"Secret","metadata":{"name":"%s","ownerReferences":[%s]},"stringData":{"k":"v"}}' \
        "$name" "$refs" | k create -f - >/dev/null
}

# ------------------------------------------------ 1. garbage collection
k create configmap owner >/dev/null
k create configmap keeper >/dev/null
owner=$(ownerref owner "$(uid configmap owner)")
keeper=$(ownerref keeper "$(uid configmap keeper)")
secret_owned_by orphan "$owner"
secret_owned_by shared "$owner" "$keeper"
k delete configmap owner --wait=true >/dev/null
t0=$(date +%s.%N)
gone=
while ! elapsed_over "$t0" 30; do
    if ! k get secret orphan >/dev/null 2>&1; then gone=yes; break; fi
    sleep 0.1
done
secs=$(awk "BEGIN { printf \"%.1f\", $(date +%s.%N) - $t0 }")
if [ -n "$gone" ]; then
    pass "gc: the Secret whose only owner was deleted is gone ${secs} s after the owner"
else
    fail "gc: the Secret whose only owner was deleted still exists after ${secs} s"
fi
# The GC has processed the owner's deletion; the shared Secret stays, with
# only the live owner left (give the GC its patch a moment).
t1=$(date +%s.%N)
while ! elapsed_over "$t1" 10; do
    [ "$(owners shared 2>/dev/null)" = "keeper " ] && break
    sleep 0.1
done
got=$(owners shared 2>/dev/null) || got="(Secret gone)"
if [ "$got" = "keeper " ]; then
    pass "gc: the Secret with a live owner stays, its dead owner reference removed"
else
    fail "gc: the Secret with a live owner: want owners 'keeper', got '$got'"
fi

# ------------------------------------ 2. server-side apply of owner refs
k create configmap a >/dev/null
k create configmap b >/dev/null
a=$(ownerref a "$(uid configmap a)")
b=$(ownerref b "$(uid configmap b)")
apply() { # manager ownerrefs-json
    printf '{"apiVersion":"v1","kind":"Secret","metadata":{"name":"ssa","ownerReferences":[%s]}}' "$2" |
        k apply --server-side --field-manager "$1" -f - >/dev/null
}
check_owners() { # step want
    local got
    got=$(owners ssa)
    if [ "$got" = "$2" ]; then
        pass "ssa: $1 -> owners '${2% }'"
    else
        fail "ssa: $1: want owners '${2% }', got '${got% }'"
    fi
}
apply manager-a "$a"
check_owners "A applies [a]" "a "
apply manager-b "$b"
check_owners "then B applies [b]" "a b "
apply manager-a ""
check_owners "then A applies []" "b "

kc delete namespace "$ns" --wait=false >/dev/null
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
