#!/usr/bin/env bash
# The single-node test cluster of scripts/k8s-e2e.sh, run INSIDE the private
# mount, network and PID namespaces that script creates (unshare), so that
# nothing it starts, mounts or configures is seen by the host, and the
# kernel ends every process and mount of it when the namespaces die.
#
#   cluster.sh run        set up, start, install the chart, run the tests, stop
#   cluster.sh restart-kubelet | restart-containerd    (for the tests)
#
# Environment (set by scripts/k8s-e2e.sh): K8S_BIN (kube-apiserver, ...,
# node-driver-registrar: e2e/k8s/build.sh), EXTRA_BIN (pause, livenessprobe),
# SECRETFS_BIN (release
# binary of the image), E2E_BIN (dir of kv-emulator and kubelet-standin),
# VENV (python with helm-python-sdk and pytest), LOGS (a host directory
# kept after the run), REPO; PEERS_BIN and PEERS_CHART (the upstream driver's
# binary directory and chart, e2e/peers/build.sh; empty when not built: the
# upstream driver phase then fails, naming build.sh) and K8S_E2E_PEERS (0:
# no upstream driver phase; only: that phase alone).
#
# Layout: every directory a daemon writes is a tmpfs mounted in this mount
# namespace (the run dir, /var/lib/kubelet, containerd's, CNI's and the pod
# log dirs), gone with the namespace. /etc/hosts is replaced by a bind mount
# that maps the Azure host names to the Key Vault emulator.
#
# Network (a network namespace of its own: only what is listed here exists):
#   lo            127.0.0.1: etcd, the registry, containerd's streaming server
#   node0 (bridge, no ports) 10.222.0.1: the node's address (kubelet refuses a loopback
#                 node IP): kube-apiserver :6443, kubelet :10250, the Key
#                 Vault emulator :443 (HTTPS) and :8080 (admin)
#                 169.254.169.254: the emulator's IMDS, where Azure's is
#   cni0 (bridge) 10.88.0.1/24: pods (CNI bridge + host-local). The node
#                 plugin runs with hostNetwork (chart value), like the
#                 kubelet it serves, so it sees this namespace's /etc/hosts:
#                 the cluster has no DNS server.
#   There is no kube-proxy: one DNAT rule sends the `kubernetes` Service's
#   ClusterIP (10.96.0.1:443), which in-cluster clients use, to the API
#   server, as kube-proxy would.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
RUN=${RUN:-/run/secretfs-k8s-e2e}
NODE=k8s-e2e-node
NODE_IP=10.222.0.1
SERVICE_CIDR=10.96.0.0/24
KUBERNETES_SVC=10.96.0.1
POD_CIDR=10.88.0.0/24
IMDS_IP=169.254.169.254
ISSUER=https://kubernetes.default.svc.cluster.local
REGISTRY=127.0.0.1:5000

log() { printf '%s cluster: %s\n' "$(date +%T)" "$*" >&2; }
die() { log "FAILED: $*"; exit 1; }

# ---------------------------------------------------------------- daemons
# A daemon's command line is kept in $RUN/cmd/<name> so that the tests can
# restart it with the same arguments (restart-kubelet).
start_daemon() {
    local name=$1; shift
    mkdir -p "$RUN/cmd" "$RUN/pid"
    printf '%q ' "$@" >"$RUN/cmd/$name"
    "$@" >>"$LOGS/$name.log" 2>&1 &
    echo $! >"$RUN/pid/$name"
}

stop_daemon() {
    local name=$1 pid i
    [ -f "$RUN/pid/$name" ] || return 0
    pid=$(cat "$RUN/pid/$name")
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    rm -f "$RUN/pid/$name"
}

restart_daemon() {
    local name=$1
    stop_daemon "$name"
    # The PID 1 of these VMs may reap late; a restarted daemon must not
    # find its old socket.
    eval "set -- $(cat "$RUN/cmd/$name")"
    "$@" >>"$LOGS/$name.log" 2>&1 &
    echo $! >"$RUN/pid/$name"
}

wait_for() { # what timeout-seconds command...
    local what=$1 timeout=$2 i; shift 2
    for i in $(seq $((timeout * 5))); do
        if "$@" >/dev/null 2>&1; then return 0; fi
        sleep 0.2
    done
    die "$what not ready after ${timeout}s (logs: $LOGS)"
}

# ---------------------------------------------------------------- setup
setup_filesystems() {
    mkdir -p "$RUN"
    mount -t tmpfs -o mode=0755 k8s-e2e-run "$RUN"
    mkdir -p "$RUN"/{pki,etcd,registry,containerd/root,containerd/state,containerd/certs.d,cni/net.d,cni/lib,kubelet,emulator}
    # Fixed paths the components use. Each is a tmpfs of this namespace;
    # directories created for them on the host are listed for removal.
    : >"$LOGS/created-dirs"
    # The provider directories (the charts' hostPaths, where provider
    # sockets are made) too, so that no socket is left on the host.
    local d parent created i
    for d in /var/lib/kubelet /var/log/pods /var/log/containers /run/containerd /var/lib/cni /run/netns \
        /run/secrets-store-csi-providers /etc/kubernetes/secrets-store-csi-providers; do
        # Every directory created, deepest first (the host removes them in order).
        created=()
        parent=$d
        while [ ! -d "$parent" ]; do created=("$parent" "${created[@]}"); parent=$(dirname "$parent"); done
        mkdir -p "$d"
        for ((i = ${#created[@]} - 1; i >= 0; i--)); do echo "${created[i]}" >>"$LOGS/created-dirs"; done
        mount -t tmpfs -o mode=0755 k8s-e2e "$d"
    done
    # Kubelet's root is a shared mount: the node plugin's FUSE mounts, made in
    # its container (Bidirectional), propagate back here, and from here into
    # the pods' containers.
    mount --make-rshared /var/lib/kubelet
    cat >"$RUN/hosts" <<EOF
127.0.0.1 localhost
$NODE_IP $NODE
# The Key Vault emulator answers for Azure's names (vault chosen by Host).
$NODE_IP kv-demo.vault.azure.net kv-wi.vault.azure.net
$NODE_IP login.microsoftonline.com login.windows.net
EOF
    mount --bind "$RUN/hosts" /etc/hosts
    printf '# no DNS server in the e2e cluster\n' >"$RUN/resolv.conf"
}

setup_network() {
    ip link set lo up
    # A bridge without ports stands in for a dummy interface (no dummy
    # module on these kernels): it holds the node's addresses.
    ip link add node0 type bridge
    ip link set node0 up
    ip addr add "$NODE_IP/32" dev node0
    ip addr add "$IMDS_IP/32" dev node0
    ip route add "$SERVICE_CIDR" dev node0
    iptables -t nat -A OUTPUT -d "$KUBERNETES_SVC" -p tcp --dport 443 -j DNAT --to-destination "$NODE_IP:6443"
    iptables -t nat -A PREROUTING -d "$KUBERNETES_SVC" -p tcp --dport 443 -j DNAT --to-destination "$NODE_IP:6443"
    sysctl -qw net.ipv4.ip_forward=1
    cat >"$RUN/cni/net.d/10-k8s-e2e.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "k8s-e2e",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "cni0",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "dataDir": "$RUN/cni/lib",
        "ranges": [[{"subnet": "$POD_CIDR"}]],
        "routes": [{"dst": "0.0.0.0/0"}]
      }
    }
  ]
}
EOF
}

# A CA, the API server's serving certificate, client certificates for each
# component and the service-account signing key (RSA: tokens are RS256,
# which is what Entra ID, and the emulator, verify).
cert() { # name CN O sans(comma list or "") usage
    local name=$1 cn=$2 o=$3 sans=$4 usage=$5 subj="/CN=$2"
    [ -n "$o" ] && subj="/O=$o/CN=$cn"
    openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -keyout "$RUN/pki/$name.key" -subj "$subj" -out "$RUN/pki/$name.csr" 2>/dev/null
    {
        echo "extendedKeyUsage=$usage"
        echo "keyUsage=critical,digitalSignature,keyEncipherment"
        [ -n "$sans" ] && echo "subjectAltName=$sans"
    } >"$RUN/pki/$name.ext"
    openssl x509 -req -in "$RUN/pki/$name.csr" -CA "$RUN/pki/ca.crt" -CAkey "$RUN/pki/ca.key" \
        -CAcreateserial -days 2 -extfile "$RUN/pki/$name.ext" -out "$RUN/pki/$name.crt" 2>/dev/null
}

kubeconfig() { # name cert
    cat >"$RUN/$1.kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: k8s-e2e
  cluster:
    server: https://$NODE_IP:6443
    certificate-authority: $RUN/pki/ca.crt
users:
- name: $2
  user:
    client-certificate: $RUN/pki/$2.crt
    client-key: $RUN/pki/$2.key
contexts:
- name: k8s-e2e
  context: {cluster: k8s-e2e, user: $2}
current-context: k8s-e2e
EOF
}

setup_pki() {
    local p=$RUN/pki
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
        -subj /CN=k8s-e2e-ca -keyout "$p/ca.key" -out "$p/ca.crt" 2>/dev/null
    cert apiserver kube-apiserver "" \
        "DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,DNS:localhost,IP:$KUBERNETES_SVC,IP:$NODE_IP,IP:127.0.0.1" serverAuth
    cert apiserver-kubelet-client kube-apiserver-kubelet-client system:masters "" clientAuth
    cert admin kubernetes-admin system:masters "" clientAuth
    cert controller-manager system:kube-controller-manager "" "" clientAuth
    cert scheduler system:kube-scheduler "" "" clientAuth
    cert kubelet "system:node:$NODE" system:nodes "" clientAuth
    cert kubelet-serving "system:node:$NODE" system:nodes "DNS:$NODE,IP:$NODE_IP" serverAuth
    openssl genrsa -out "$p/sa.key" 2048 2>/dev/null
    openssl rsa -in "$p/sa.key" -pubout -out "$p/sa.pub" 2>/dev/null
    kubeconfig admin admin
    kubeconfig controller-manager controller-manager
    kubeconfig scheduler scheduler
    kubeconfig kubelet kubelet
}

# ---------------------------------------------------------------- components
start_control_plane() {
    start_daemon etcd etcd --name k8s-e2e --data-dir "$RUN/etcd" \
        --listen-client-urls http://127.0.0.1:2379 --advertise-client-urls http://127.0.0.1:2379 \
        --listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
        --initial-cluster k8s-e2e=http://127.0.0.1:2380 --log-level warn
    wait_for etcd 30 curl -fsS http://127.0.0.1:2379/health

    local p=$RUN/pki
    start_daemon kube-apiserver "$K8S_BIN/kube-apiserver" \
        --etcd-servers=http://127.0.0.1:2379 \
        --bind-address=0.0.0.0 --advertise-address="$NODE_IP" --secure-port=6443 \
        --service-cluster-ip-range="$SERVICE_CIDR" \
        --client-ca-file="$p/ca.crt" --tls-cert-file="$p/apiserver.crt" --tls-private-key-file="$p/apiserver.key" \
        --kubelet-client-certificate="$p/apiserver-kubelet-client.crt" --kubelet-client-key="$p/apiserver-kubelet-client.key" \
        --service-account-issuer="$ISSUER" --service-account-key-file="$p/sa.pub" \
        --service-account-signing-key-file="$p/sa.key" \
        --authorization-mode=Node,RBAC --allow-privileged=true \
        --enable-admission-plugins=NodeRestriction \
        --profiling=false
    wait_for kube-apiserver 90 kubectl get --raw /readyz

    start_daemon kube-controller-manager "$K8S_BIN/kube-controller-manager" \
        --kubeconfig="$RUN/controller-manager.kubeconfig" \
        --authentication-kubeconfig="$RUN/controller-manager.kubeconfig" \
        --authorization-kubeconfig="$RUN/controller-manager.kubeconfig" \
        --bind-address=127.0.0.1 --leader-elect=false \
        --service-account-private-key-file="$p/sa.key" --root-ca-file="$p/ca.crt" \
        --use-service-account-credentials=true --controllers='*'
    start_daemon kube-scheduler "$K8S_BIN/kube-scheduler" \
        --kubeconfig="$RUN/scheduler.kubeconfig" \
        --authentication-kubeconfig="$RUN/scheduler.kubeconfig" \
        --authorization-kubeconfig="$RUN/scheduler.kubeconfig" \
        --bind-address=127.0.0.1 --leader-elect=false
}

start_registry() {
    cat >"$RUN/registry.yml" <<EOF
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $RUN/registry
http:
  addr: $REGISTRY
EOF
    start_daemon registry docker-registry serve "$RUN/registry.yml"
    wait_for registry 30 curl -fsS "http://$REGISTRY/v2/"
}

push_images() {
    "$VENV/bin/python" "$here/images.py" --registry "$REGISTRY" \
        --registrar "$K8S_BIN/node-driver-registrar" --livenessprobe "$EXTRA_BIN/livenessprobe" \
        --pause "$EXTRA_BIN/pause" --secretfs "$SECRETFS_BIN" \
        --secretfs-repo secretfs --secretfs-tag e2e-1 --secretfs-tag e2e-2 \
        --registrar-tag "$(chart_value nodeDriverRegistrar.image.tag)" \
        --livenessprobe-tag "$(chart_value livenessProbe.image.tag)" \
        ${PEERS_BIN:+--driver "$PEERS_BIN/secrets-store-csi-driver"} \
        ${PEERS_BIN:+--azure-provider "$PEERS_BIN/secrets-store-csi-driver-provider-azure"}
}

chart_value() { # dotted key of charts/secretfs/values.yaml
    "$VENV/bin/python" -c 'import sys, yaml
v = yaml.safe_load(open(sys.argv[1]))
for k in sys.argv[2].split("."): v = v[k]
print(v)' "$REPO/charts/secretfs/values.yaml" "$1"
}

start_containerd() {
    local c=$RUN/containerd
    # docker.io and registry.k8s.io are mirrored to the local registry, so
    # manifests keep their image names (the seed pod's `image: nginx`,
    # the chart's sidecars); localhost:5000 is the test image's registry.
    for host in docker.io registry.k8s.io "localhost:5000"; do
        mkdir -p "$c/certs.d/$host"
        cat >"$c/certs.d/$host/hosts.toml" <<EOF
[host."http://$REGISTRY"]
  capabilities = ["pull", "resolve"]
EOF
    done
    cat >"$c/config.toml" <<EOF
version = 2
root = "$c/root"
state = "$c/state"
[grpc]
  address = "$c/containerd.sock"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "registry.k8s.io/pause:3.10"
  # Needed on these hosts (containerd 1.6 otherwise fails to set the
  # sandbox's oom_score_adj).
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$RUN/cni/net.d"
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "$c/certs.d"
EOF
    start_daemon containerd containerd --config "$c/config.toml"
    wait_for containerd 30 test -S "$c/containerd.sock"
}

start_kubelet() {
    cat >"$RUN/kubelet/config.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# The host runs cgroup v1.
failCgroupV1: false
cgroupDriver: cgroupfs
containerRuntimeEndpoint: unix://$RUN/containerd/containerd.sock
address: $NODE_IP
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $RUN/pki/ca.crt}
authorization: {mode: Webhook}
tlsCertFile: $RUN/pki/kubelet-serving.crt
tlsPrivateKeyFile: $RUN/pki/kubelet-serving.key
resolvConf: $RUN/resolv.conf
failSwapOn: false
serializeImagePulls: false
# The test machine's disk is not the cluster's business: never evict.
evictionHard: {memory.available: "1Mi", nodefs.available: "0%", imagefs.available: "0%"}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
EOF
    start_daemon kubelet "$K8S_BIN/kubelet" --config="$RUN/kubelet/config.yaml" \
        --kubeconfig="$RUN/kubelet.kubeconfig" --hostname-override="$NODE" --node-ip="$NODE_IP"
    wait_for "node $NODE Ready" 120 node_ready
}

node_ready() {
    [ "$(kubectl get node "$NODE" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}')" = True ]
}

# The Key Vault emulator as Azure for the cluster: HTTPS on the node's
# address :443 (vault and Entra names resolve there), IMDS on Azure's
# address, admin API on :8080. It trusts this API server's service-account
# issuer, with the JWKS the API server publishes, as Entra ID trusts a
# cluster's OIDC issuer for workload identity.
start_emulator() {
    kubectl get --raw /openid/v1/jwks >"$RUN/emulator/apiserver-jwks.json"
    sed "s|@ISSUER@|$ISSUER|g" "$here/emulator-seed.yaml" >"$RUN/emulator/seed.yaml"
    start_daemon kv-emulator env KV_EMULATOR_LOG=info "$E2E_BIN/kv-emulator" \
        --listen "$NODE_IP:443" --imds-listen "$IMDS_IP:80" --admin-listen "$NODE_IP:8080" \
        --seed "$RUN/emulator/seed.yaml" --ca-path "$RUN/emulator/ca.pem" \
        --trust-issuer "$ISSUER=$RUN/emulator/apiserver-jwks.json"
    wait_for kv-emulator 30 curl -fsS "http://$NODE_IP:8080/admin/info"
}

install_chart() {
    kubectl -n kube-system create configmap kv-emulator-ca --from-file=ca.crt="$RUN/emulator/ca.pem"
    "$VENV/bin/python" "$here/helm.py" install --tag e2e-1
    wait_for "driver registered with kubelet" 180 driver_registered
}

driver_registered() {
    kubectl get csinode "$NODE" -o jsonpath='{.spec.drivers[*].name}' | grep -qw secrets-store.csi.k8s.io
}

# ---------------------------------------------------------------- teardown
teardown() {
    set +e
    log "teardown"
    # Test pods first, while kubelet and the node plugin run, so their
    # volumes are unpublished the normal way (NodeUnpublishVolume unmounts
    # the FUSE file systems).
    local ns
    for ns in $(kubectl get ns -o name 2>/dev/null | sed 's|namespace/||'); do
        [ "$ns" = kube-system ] && continue
        kubectl delete pods --all -n "$ns" --wait=false >/dev/null 2>&1
    done
    for i in $(seq 60); do
        [ -z "$(kubectl get pods -A --no-headers 2>/dev/null | grep -v '^kube-system ')" ] && break
        sleep 1
    done
    # The node plugin's and keeper's logs (they live in the pod log dir, a
    # tmpfs of this namespace), current and previous containers.
    mkdir -p "$LOGS/pods"
    local p
    for p in $(kubectl get pods -A -o jsonpath='{range .items[*]}{.metadata.namespace}/{.metadata.name}{"\n"}{end}' 2>/dev/null); do
        kubectl logs -n "${p%%/*}" "${p#*/}" --all-containers --prefix --timestamps >"$LOGS/pods/${p/\//_}.log" 2>&1
        kubectl logs -n "${p%%/*}" "${p#*/}" --all-containers --prefix --timestamps --previous \
            >"$LOGS/pods/${p/\//_}.previous.log" 2>/dev/null || rm -f "$LOGS/pods/${p/\//_}.previous.log"
    done
    cp -r /var/log/pods "$LOGS/pod-log-dir" 2>/dev/null
    for d in kubelet kv-emulator kube-scheduler kube-controller-manager kube-apiserver registry etcd; do
        stop_daemon "$d"
    done
    # Containers and shims: stop what containerd still runs, then containerd.
    if [ -S "$RUN/containerd/containerd.sock" ]; then
        local ctr="ctr --address $RUN/containerd/containerd.sock -n k8s.io"
        for t in $($ctr tasks ls -q 2>/dev/null); do $ctr tasks kill -s KILL "$t" >/dev/null 2>&1; done
    fi
    stop_daemon containerd
    # Anything left (shims) dies with this PID namespace; FUSE mounts left by
    # a test that failed half-way are reported and unmounted.
    local fuse
    fuse=$(awk '$9 ~ /^fuse/ {print $5}' /proc/self/mountinfo)
    if [ -n "$fuse" ]; then
        log "FUSE mounts left at teardown: $fuse"
        echo "$fuse" >"$LOGS/leftover-fuse-mounts"
        for m in $fuse; do umount -l "$m"; done
    fi
    set -e
}

# ---------------------------------------------------------------- main
pytest_phase() { # junit-file marker-expression
    local rc=0 extra=()
    # Shell words, so that `-k "a or b"` stays one argument.
    eval "extra=(${K8S_E2E_PYTEST_ARGS:-})"
    (cd "$REPO" && K8S_E2E_RUN=$RUN K8S_E2E_NODE=$NODE K8S_E2E_NODE_IP=$NODE_IP K8S_E2E_ISSUER=$ISSUER \
        PEERS_BIN=${PEERS_BIN:-} PEERS_CHART=${PEERS_CHART:-} PEERS_AZURE_CHART=${PEERS_AZURE_CHART:-} \
        "$VENV/bin/python" -m pytest -p no:cacheprovider -rA --junitxml="$LOGS/$1" -m "$2" \
        "${extra[@]}" e2e/k8s/cluster/tests) || rc=$?
    # 5: no test selected, which K8S_E2E_PYTEST_ARGS (say -k) may do to one
    # of the two phases; without it every phase has tests.
    if [ "$rc" = 5 ] && [ -n "${K8S_E2E_PYTEST_ARGS:-}" ]; then rc=0; fi
    return $rc
}

run() {
    : "${K8S_BIN:?} ${EXTRA_BIN:?} ${SECRETFS_BIN:?} ${E2E_BIN:?} ${VENV:?} ${LOGS:?} ${REPO:?}"
    export KUBECONFIG=$RUN/admin.kubeconfig PATH=$K8S_BIN:$PATH
    local t0 t
    t0=$(date +%s)
    # For the host's check that nothing is left in them (scripts/k8s-e2e.sh).
    readlink /proc/self/ns/pid /proc/self/ns/net /proc/self/ns/mnt >"$LOGS/namespaces"
    phase() { t=$(date +%s); printf 'k8s-e2e phase: %-28s %4ss\n' "$1" "$((t - ${2:-$t0}))" >&2; }
    setup_filesystems
    setup_network
    setup_pki
    trap teardown EXIT
    local s; s=$(date +%s)
    start_control_plane
    start_registry
    push_images
    start_containerd
    start_kubelet
    phase "cluster start (node Ready)" "$s"
    s=$(date +%s)
    start_emulator
    install_chart
    phase "emulator + chart install" "$s"
    local rc=0
    if [ "${K8S_E2E_PEERS:-1}" != only ]; then
        s=$(date +%s)
        pytest_phase junit.xml "not upstream_driver" || rc=$?
        phase "tests" "$s"
    fi
    # The upstream driver's chart in place of secretfs's (the two own the
    # same CSI driver name): after every other test, in a phase of its own.
    if [ "${K8S_E2E_PEERS:-1}" != 0 ]; then
        s=$(date +%s)
        pytest_phase junit-peers.xml upstream_driver || rc=$?
        phase "peers (upstream driver)" "$s"
    fi
    s=$(date +%s)
    trap - EXIT
    teardown
    phase "teardown" "$s"
    return $rc
}

case "${1:-}" in
    run) run ;;
    restart-kubelet) restart_daemon kubelet ;;
    restart-containerd) restart_daemon containerd ;;
    *) echo "usage: $0 run | restart-kubelet | restart-containerd" >&2; exit 2 ;;
esac
