# syntax=docker/dockerfile:1
#
# One image with both binaries, in two flavours that differ only in their
# entrypoint:
#   docker build --target forwarder-sriov     -t nsm-sriov-rs/forwarder-sriov:0.1.0 .
#   docker build --target sriov-device-plugin -t nsm-sriov-rs/sriov-device-plugin:0.1.0 .
# (the device plugin's entrypoint is the plugin itself, so an
# sriov-network-device-plugin DaemonSet, which passes only args, can switch
# by changing its image). VERSION and COMMIT become OCI labels, and the
# SRIOV_BUILD_VERSION / SRIOV_BUILD_COMMIT the binaries read at compile time,
# so `--version` prints "0.1.0 (commit 1a2b3c4)":
#   --build-arg VERSION=0.1.0 --build-arg COMMIT=$(git rev-parse --short HEAD)

ARG RUST_VERSION=1.95
ARG GO_VERSION=1.25

FROM rust:${RUST_VERSION}-slim-bookworm AS build
ARG VERSION=0.1.0
ARG COMMIT=unknown
WORKDIR /src
COPY . .
# protoc comes from the protoc-bin-vendored crate: no apt step is needed.
# The cache mounts keep crates and objects between builds; the binaries are
# copied out in the same step because the target cache is not in the image.
# glibc is linked in statically (static-pie): nothing for ld.so to map and
# resolve at every start, 1.5 MiB less idle RSS (issue #21); `--target` keeps
# the flag off build scripts and proc-macros. Its resolver reads
# /etc/nsswitch.conf, /etc/hosts and /etc/resolv.conf as a dynamic one does
# ("files" and "dns" are built in). `cargo xtask bench` builds the same way.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    TARGET="$(rustc --print host-tuple)" \
 && SRIOV_BUILD_VERSION="${VERSION}" SRIOV_BUILD_COMMIT="${COMMIT}" \
    RUSTFLAGS="-C target-feature=+crt-static" \
    cargo build --release --locked --target "${TARGET}" \
      -p forwarder-sriov -p sriov-device-plugin \
 && install -D -m 0755 -t /out \
    "target/${TARGET}/release/forwarder-sriov" "target/${TARGET}/release/sriov-device-plugin"

# grpc_health_probe, to ask the forwarder's grpc.health.v1 on its unix socket
# by hand (`kubectl exec ... grpc_health_probe -addr=unix://... -spiffe`): the
# DaemonSet's probes use the HTTP /readyz and /livez of NSM_METRICS_LISTEN,
# and Kubernetes' own grpc probe dials TCP only.
FROM golang:${GO_VERSION}-bookworm AS probe
ARG GRPC_HEALTH_PROBE_VERSION=v0.4.40
RUN CGO_ENABLED=0 go install \
    "github.com/grpc-ecosystem/grpc-health-probe@${GRPC_HEALTH_PROBE_VERSION}"

# distroless/cc: no shell, no package manager; the binaries are static, and
# it keeps the nsswitch.conf and CA certificates they read, and the glibc of
# the build stage for any tool added beside them.
FROM gcr.io/distroless/cc-debian12:nonroot AS runtime
ARG VERSION=0.1.0
ARG COMMIT=unknown
LABEL org.opencontainers.image.title="nsm-sriov-rs" \
      org.opencontainers.image.description="NSM SR-IOV forwarder and SR-IOV network device plugin" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${COMMIT}" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /out/forwarder-sriov /out/sriov-device-plugin /usr/local/bin/
COPY --from=probe /go/bin/grpc-health-probe /usr/local/bin/grpc_health_probe
# Non-root by default, so `--version`, `inventory` and `--dry-run` run
# unprivileged. The DaemonSets ask for uid 0 explicitly: the forwarder writes
# sysfs and moves links between namespaces (privileged); the device plugin
# creates sockets in kubelet's root-owned dirs (root, no capabilities).
USER 65532:65532

FROM runtime AS sriov-device-plugin
# Also where SRDP's image keeps its binary, for DaemonSets that name it.
COPY --from=build /out/sriov-device-plugin /usr/bin/sriovdp
ENTRYPOINT ["/usr/local/bin/sriov-device-plugin"]

# Last, so a plain `docker build .` gives the forwarder.
FROM runtime AS forwarder-sriov
ENTRYPOINT ["/usr/local/bin/forwarder-sriov"]
