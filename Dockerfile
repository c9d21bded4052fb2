# syntax=docker/dockerfile:1
#
# The secretfs node plugin image: `secretfs node`, run by the Helm chart's
# DaemonSet (charts/secretfs).
#
#   docker build -t secretfs:0.1.0 .
#
# The build context is limited by .dockerignore to the Cargo workspace.

# ---- build -----------------------------------------------------------------
FROM rust:1.95-bookworm AS builder
WORKDIR /src

# The whole workspace: Cargo resolves every member (secrets, fuse, csi, e2e)
# and every declared target (benches/) even when it builds one package.
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
COPY secrets ./secrets
COPY fuse ./fuse
COPY csi ./csi
COPY e2e ./e2e

# --no-default-features: the default `demo` feature links the Key Vault
# emulator and the kubelet stand-in (secretfs-e2e), which have no place in a
# production image. --locked: exactly the dependency versions of Cargo.lock.
# The CSI protos are compiled by protox (pure Rust): no protoc is needed.
RUN cargo build --release --locked --no-default-features -p secretfs \
 && install -D -m 0755 target/release/secretfs /out/secretfs

# ---- runtime ---------------------------------------------------------------
# distroless/cc: glibc, libgcc and CA certificates (Key Vault and Entra ID
# over TLS), and nothing else: no shell, no package manager.
#
# Not the `:nonroot` variant: the driver must run as root. It opens
# /dev/fuse and calls mount(2) itself for every volume (so neither fusermount
# nor libfuse is installed), and its mounts must propagate to the host
# through a Bidirectional mount of kubelet's pods directory, which Kubernetes
# allows only in privileged containers. The chart therefore runs this
# container privileged; this image's default user (root) is what it needs.
#
# Distroless publishes rolling tags only (latest, nonroot, debug); a release
# build should pin the digest it was tested with: cc-debian12:latest@sha256:...
# hadolint ignore=DL3007
FROM gcr.io/distroless/cc-debian12:latest

LABEL org.opencontainers.image.title="secretfs" \
      org.opencontainers.image.description="Kubernetes Secrets Store CSI node driver whose volumes are FUSE file systems" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="0.1.0" \
      org.opencontainers.image.source="https://example.invalid/secretfs"

COPY --from=builder /out/secretfs /usr/local/bin/secretfs

# Metrics, /healthz and /readyz (chart value metrics.port).
EXPOSE 8095
ENTRYPOINT ["/usr/local/bin/secretfs"]
CMD ["node"]
