#!/usr/bin/env bash
# A real Kubernetes control plane for tests, without nodes: etcd,
# kube-apiserver and kube-controller-manager, all on 127.0.0.1 on free ports.
#
#     e2e/k8s/control-plane.sh start <dir>   # returns once it is ready
#     e2e/k8s/control-plane.sh stop <dir>    # kills what start started
#
# start writes <dir>/kubeconfig (admin), <dir>/env (KEY=VALUE lines) and logs
# in <dir>/logs/; etcd's data is <dir>/etcd. stop kills the processes named
# by <dir>/run/*.pid and waits until they are gone; it deletes nothing else,
# so the logs stay for the caller to read or remove. The contract (env vars,
# controllers, timings) is in README.md.
#
# Needs: etcd (Debian etcd-server), openssl, python3, curl, and the binaries
# of build.sh (found with build.sh, or in $SECRETFS_K8S_BIN).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
prog=control-plane.sh

usage() {
    echo "usage: $prog start|stop <dir>" >&2
    exit 2
}

log() { echo "$prog: $*" >&2; }
die() { log "$*"; exit 1; }

[ $# -eq 2 ] || usage
cmd=$1
[ -n "$2" ] || usage
case $2 in
    *[[:space:]\"\'\$\\]*) die "<dir> '$2' contains a space, quote, \$ or backslash; pick a plain path" ;;
esac
if [ "$cmd" = stop ] && [ ! -d "$2" ]; then
    log "nothing to stop: $2 does not exist"
    exit 0
fi
mkdir -p "$2"
dir=$(cd "$2" && pwd)
run=$dir/run

# True if pid file $1 names a live (not zombie) process started for $dir.
alive() {
    local pid state
    pid=$(cat "$1" 2>/dev/null) || return 1
    [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] || return 1
    # A reused pid would not have our directory on its command line.
    tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$dir/" || return 1
    state=$(awk '/^State:/ { print $2 }' "/proc/$pid/status" 2>/dev/null) || return 1
    [ "$state" != Z ]
}

# stop_one pidfile: SIGTERM, then SIGKILL after 20 s; waits until it is gone.
stop_one() {
    local f=$1 pid n
    alive "$f" || return 0
    pid=$(cat "$f")
    kill -TERM "$pid" 2>/dev/null || true
    for ((n = 0; n < 300; n++)); do
        alive "$f" || return 0
        if [ $n -eq 200 ]; then
            log "$(basename "$f" .pid) ignored SIGTERM for 20 s; sending SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
        fi
        sleep 0.1
    done
    die "$(basename "$f" .pid) (pid $pid) still running after SIGKILL"
}

stop() {
    local n
    shopt -s nullglob
    # One at a time in reverse start order (controller-manager, apiserver,
    # etcd, after anything a script built on this one started, named
    # <n>-<name>.pid): an apiserver whose etcd is gone hangs in its shutdown.
    local files=("$run"/*.pid)
    for ((n = ${#files[@]} - 1; n >= 0; n--)); do
        stop_one "${files[n]}"
    done
    # A PID 1 may reap late: wait until the listening ports are free too.
    if [ -f "$dir/ports" ]; then
        local p
        for p in $(cut -d= -f2 "$dir/ports"); do
            for ((n = 0; n < 50; n++)); do
                ss -Htln "sport = :$p" | grep -q . || break
                sleep 0.1
            done
        done
    fi
    rm -f "${files[@]}"
}

if [ "$cmd" = stop ]; then
    stop
    log "stopped ($dir)"
    exit 0
fi
[ "$cmd" = start ] || usage

# ---------------------------------------------------------------- start
t0=$(date +%s.%N)
for f in "$run"/*.pid; do
    [ -e "$f" ] || continue
    alive "$f" && die "$(basename "$f" .pid) of an earlier start is still running in $dir; run '$prog stop $dir' first"
done
for tool in etcd openssl python3 curl ss; do
    command -v $tool >/dev/null || die "needs $tool (Debian: etcd-server, openssl, python3, curl, iproute2)"
done
bin=${SECRETFS_K8S_BIN:-$("$here/build.sh")}
for tool in kube-apiserver kube-controller-manager kubectl; do
    [ -x "$bin/$tool" ] || die "SECRETFS_K8S_BIN=$bin has no $tool; unset it to use e2e/k8s/build.sh"
done
crds=${SECRETFS_K8S_CRDS:-$here/../../charts/secretfs/crds}
ls "$crds"/*.yaml >/dev/null 2>&1 || die "no CRDs in $crds (SECRETFS_K8S_CRDS)"

# From here on a failure stops whatever was started.
# shellcheck disable=SC2154 # rc is set in the trap itself
trap 'rc=$?; if [ $rc -ne 0 ]; then log "start failed; stopping what it started (logs: $dir/logs)"; stop || true; fi' EXIT

mkdir -p "$run" "$dir/logs" "$dir/pki"
umask 077

# Ports: the same as the last start in this directory when all are free (a
# restart keeps the kubeconfig valid), new free ones otherwise.
port_free() { ! ss -Htln "sport = :$1" | grep -q .; }
declare -A port
if [ -f "$dir/ports" ]; then
    while IFS='=' read -r k v; do port[$k]=$v; done <"$dir/ports"
fi
port_names=(etcd_client etcd_peer apiserver controller_manager)
# Four distinct ports the kernel calls free (held together while picked).
read -ra fresh < <(python3 -c '
import socket
socks = [socket.socket() for _ in range(4)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))')
reuse=yes
for k in "${port_names[@]}"; do
    if [ -z "${port[$k]:-}" ] || ! port_free "${port[$k]}"; then reuse=; fi
done
if [ -z "$reuse" ]; then
    for i in "${!port_names[@]}"; do port[${port_names[i]}]=${fresh[i]}; done
fi
: >"$dir/ports"
for k in "${port_names[@]}"; do echo "$k=${port[$k]}" >>"$dir/ports"; done
api=https://127.0.0.1:${port[apiserver]}

# ------------------------------------------------------------ certificates
# ECDSA P-256 for TLS (key generation is instant; RSA took seconds on a busy
# machine); the service-account key is RSA 2048, tokens being RS256 as in a
# kubeadm cluster.
pki=$dir/pki
cert() { # name subject extensions: a leaf certificate signed by our CA
    local name=$1 subj=$2 ext=$3
    [ -f "$pki/$name.crt" ] && return
    openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$pki/$name.key" -subj "$subj" \
        -out "$pki/$name.csr" 2>/dev/null
    printf '%b\n' "$ext" >"$pki/$name.ext"
    openssl x509 -req -in "$pki/$name.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" -CAcreateserial \
        -days 3650 -sha256 -extfile "$pki/$name.ext" -out "$pki/$name.crt" 2>/dev/null
    rm -f "$pki/$name.csr"
}
if [ ! -f "$pki/ca.crt" ]; then
    openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$pki/ca.key" -days 3650 -sha256 \
        -subj "/CN=secretfs-test-ca" -addext "basicConstraints=critical,CA:TRUE" \
        -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" -out "$pki/ca.crt" 2>/dev/null
fi
cert apiserver "/CN=kube-apiserver" \
    "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,IP:10.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
# The apiserver's client certificate towards kubelets (logs, exec).
cert apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client" \
    "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth"
# The service-account token signing key.
if [ ! -f "$pki/sa.key" ]; then
    openssl genrsa -out "$pki/sa.key" 2048 2>/dev/null
    openssl rsa -in "$pki/sa.key" -pubout -out "$pki/sa.pub" 2>/dev/null
fi
# Static bearer tokens: the admin's (system:masters) and the controller
# manager's (the user kubeadm gives it, bound by the default RBAC roles).
if [ ! -f "$pki/tokens.csv" ]; then
    admin_token=$(openssl rand -hex 32)
    kcm_token=$(openssl rand -hex 32)
    {
        echo "$admin_token,secretfs-admin,secretfs-admin,system:masters"
        echo "$kcm_token,system:kube-controller-manager,system:kube-controller-manager"
    } >"$pki/tokens.csv"
fi
admin_token=$(sed -n 1p "$pki/tokens.csv" | cut -d, -f1)
kcm_token=$(sed -n 2p "$pki/tokens.csv" | cut -d, -f1)

kubeconfig() { # file user token
    cat >"$1" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: secretfs-test
  cluster:
    server: $api
    certificate-authority-data: $(base64 -w0 <"$pki/ca.crt")
users:
- name: $2
  user:
    token: $3
contexts:
- name: $2@secretfs-test
  context:
    cluster: secretfs-test
    user: $2
current-context: $2@secretfs-test
EOF
}
kubeconfig "$dir/kubeconfig" secretfs-admin "$admin_token"
kubeconfig "$dir/controller-manager.kubeconfig" system:kube-controller-manager "$kcm_token"

# ---------------------------------------------------------------- daemons
mark() { log "$(awk "BEGIN { printf \"%5.1f\", $(date +%s.%N) - $t0 }") s: $*"; }
mark "certificates made"
launch() { # name command...
    local name=$1
    shift
    # setsid: its own session, so the caller's terminal signals and process
    # group do not reach it; stop finds it by its pid file.
    (exec setsid "$@" </dev/null >>"$dir/logs/$name.log" 2>&1) &
    echo $! >"$run/$name.pid"
}
# wait_for name seconds check-command...: polls until the check passes,
# failing at once if the daemon died.
wait_for() {
    local name=$1 secs=$2 n
    shift 2
    for ((n = 0; n < secs * 10; n++)); do
        "$@" >/dev/null 2>&1 && return 0
        if ! alive "$run/$name.pid"; then
            tail -n 20 "$dir/logs/$name.log" | sed "s/^/  $name: /" >&2
            die "$name exited during start (log: $dir/logs/$name.log)"
        fi
        sleep 0.1
    done
    tail -n 20 "$dir/logs/$name.log" | sed "s/^/  $name: /" >&2
    die "$name not ready within $secs s (log: $dir/logs/$name.log)"
}

# Names sort in start order so that stop goes in reverse.
launch 1-etcd etcd --name secretfs-test --data-dir "$dir/etcd" \
    --listen-client-urls "http://127.0.0.1:${port[etcd_client]}" \
    --advertise-client-urls "http://127.0.0.1:${port[etcd_client]}" \
    --listen-peer-urls "http://127.0.0.1:${port[etcd_peer]}" \
    --initial-advertise-peer-urls "http://127.0.0.1:${port[etcd_peer]}" \
    --initial-cluster "secretfs-test=http://127.0.0.1:${port[etcd_peer]}" \
    --logger zap --log-outputs stderr --log-level warn
etcd_ok() { curl -fsS "http://127.0.0.1:${port[etcd_client]}/health" | grep -q '"health":"true"'; }
wait_for 1-etcd 30 etcd_ok
mark "etcd healthy"

launch 2-kube-apiserver "$bin/kube-apiserver" \
    --etcd-servers "http://127.0.0.1:${port[etcd_client]}" \
    --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "${port[apiserver]}" \
    --tls-cert-file "$pki/apiserver.crt" --tls-private-key-file "$pki/apiserver.key" \
    --client-ca-file "$pki/ca.crt" --token-auth-file "$pki/tokens.csv" \
    --kubelet-client-certificate "$pki/apiserver-kubelet-client.crt" \
    --kubelet-client-key "$pki/apiserver-kubelet-client.key" \
    --service-account-issuer "$api" --service-account-jwks-uri "$api/openid/v1/jwks" \
    --service-account-key-file "$pki/sa.pub" --service-account-signing-key-file "$pki/sa.key" \
    --service-cluster-ip-range 10.0.0.0/24 --authorization-mode Node,RBAC \
    --allow-privileged=true --profiling=false
api_ok() { curl -fsS --cacert "$pki/ca.crt" -H "Authorization: Bearer $admin_token" "$api/readyz" | grep -qx ok; }
wait_for 2-kube-apiserver 120 api_ok
mark "kube-apiserver ready"

launch 3-kube-controller-manager "$bin/kube-controller-manager" \
    --kubeconfig "$dir/controller-manager.kubeconfig" \
    --authentication-kubeconfig "$dir/controller-manager.kubeconfig" \
    --authorization-kubeconfig "$dir/controller-manager.kubeconfig" \
    --bind-address 127.0.0.1 --secure-port "${port[controller_manager]}" \
    --leader-elect=false --use-service-account-credentials=true \
    --service-account-private-key-file "$pki/sa.key" --root-ca-file "$pki/ca.crt" \
    --cluster-signing-cert-file "$pki/ca.crt" --cluster-signing-key-file "$pki/ca.key" \
    --controllers '*' --profiling=false

# The CRDs, applied while the controller manager starts.
kubectl() { "$bin/kubectl" --kubeconfig "$dir/kubeconfig" "$@"; }
kubectl apply --server-side --field-manager secretfs-control-plane -f "$crds" >"$dir/logs/crds.log" 2>&1 ||
    { cat "$dir/logs/crds.log" >&2; die "applying the CRDs in $crds failed"; }
crd_names=$(kubectl get -f "$crds" -o name)
kubectl wait --for condition=Established --timeout 60s $crd_names >>"$dir/logs/crds.log" 2>&1 ||
    { cat "$dir/logs/crds.log" >&2; die "the CRDs were not Established within 60 s"; }
mark "CRDs established"

kcm_ok() { curl -fsSk "https://127.0.0.1:${port[controller_manager]}/healthz" | grep -qx ok; }
wait_for 3-kube-controller-manager 60 kcm_ok
# The serviceaccount controller has run once the default namespace has its
# service account (pods are refused before that).
default_sa() { kubectl -n default get serviceaccount default; }
wait_for 3-kube-controller-manager 60 default_sa
mark "kube-controller-manager healthy, default service account made"

cat >"$dir/env" <<EOF
KUBECONFIG=$dir/kubeconfig
SECRETFS_TEST_KUBECONFIG=$dir/kubeconfig
SECRETFS_K8S_APISERVER=$api
SECRETFS_K8S_SA_ISSUER=$api
SECRETFS_K8S_ETCD=http://127.0.0.1:${port[etcd_client]}
SECRETFS_K8S_BIN=$bin
SECRETFS_K8S_DIR=$dir
EOF
trap - EXIT
t1=$(date +%s.%N)
log "ready in $(awk "BEGIN { printf \"%.1f\", $t1 - $t0 }") s: $api (env: $dir/env)"
