#!/usr/bin/env bash
# Runs a command where the upstream peers reach the Key Vault emulator with
# their default settings (see README.md):
#
#     e2e/peers/sandbox.sh <command> [args...]
#
# - a private network namespace: only loopback, up, with 169.254.169.254/32
#   on it, so the emulator's IMDS can listen on the address every Azure SDK
#   calls (azidentity's IMDS endpoint is a constant) and Key Vault + Entra ID
#   on 127.0.0.1:443; nothing else on the machine sees these ports;
# - a private mount namespace (mounts made inside, FUSE and tmpfs volumes
#   included, stay inside) with its own empty, writable /etc/hosts bound over
#   the real one: the harness writes the vault and Entra names there
#   (secretfs_e2e::peers), so Go's resolver and glibc's send them to the
#   emulator; the real /etc/hosts is never written.
#
# The command sees SECRETFS_PEERS_SANDBOX=1. Needs root, unshare and mount
# (util-linux), ip (iproute2).
set -euo pipefail

if [ "${SECRETFS_PEERS_SANDBOX_INNER:-}" != 1 ]; then
    [ $# -ge 1 ] || { echo "usage: $0 <command> [args...]" >&2; exit 2; }
    [ "$(id -u)" = 0 ] || { echo "sandbox.sh: needs root (network and mount namespaces)" >&2; exit 1; }
    for tool in unshare ip mount; do
        command -v $tool >/dev/null || { echo "sandbox.sh: needs $tool (Debian: util-linux, iproute2)" >&2; exit 1; }
    done
    SECRETFS_PEERS_SANDBOX_INNER=1 exec unshare --mount --net --propagation private -- "$0" "$@"
fi
unset SECRETFS_PEERS_SANDBOX_INNER

ip link set lo up
ip addr add 169.254.169.254/32 dev lo
hosts=$(mktemp /tmp/secretfs-peers-hosts.XXXXXX)
printf '127.0.0.1\tlocalhost\n::1\tlocalhost\n' >"$hosts"
mount --bind "$hosts" /etc/hosts
# The bound file stays reachable through /etc/hosts; its name is not needed.
rm -f "$hosts"
export SECRETFS_PEERS_SANDBOX=1
exec "$@"
