# syntax=docker/dockerfile:1
#
# Gatehouse and upstream-mock in one image (README, Operations > Container).
#
#   docker build -t gatehouse .
#   docker compose up -d          # gateway + upstream-mock + Redis: compose.yaml
#
# The build runs the README's own release build command (config/check-container.sh
# checks they are the same, hadolint lints this file; both in .ci/run).

# The builder: the Rust toolchain the project is built and tested with, on
# the same Debian release as the runtime stage (the binaries link its glibc).
FROM rust:1.95.0-bookworm AS builder
# pingora builds zlib-ng with cmake. Not version-pinned: bookworm's security
# updates replace a pinned version and break the build; the tag pins the release.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends cmake \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# The README's release build (fat LTO, see Cargo.toml): both binaries.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    cargo build --release --workspace

# The runtime: the binaries, CA certificates (rediss://, upstream TLS) and
# nothing else.
FROM debian:bookworm-slim
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/*
# A fixed, non-root UID/GID (10001), so volume and secret file ownership can
# be set on the host; the config and data directories are its own.
RUN groupadd --system --gid 10001 gatehouse \
 && useradd --system --uid 10001 --gid gatehouse --home-dir /var/lib/gatehouse --no-create-home \
      --shell /usr/sbin/nologin gatehouse \
 && install -d -o gatehouse -g gatehouse -m 0750 /etc/gatehouse /var/lib/gatehouse
COPY --from=builder /src/target/release/gatehouse /src/target/release/upstream-mock /usr/local/bin/
# A default config (the compose one, with the Redis store); mount your own
# over /etc/gatehouse/gatehouse.toml.
COPY --chown=gatehouse:gatehouse config/compose.toml /etc/gatehouse/gatehouse.toml
# Numeric, so Kubernetes runAsNonRoot can tell it is not root.
USER 10001:10001
WORKDIR /var/lib/gatehouse
# sled's directory (store.path, relative to the config, when the store is
# sled: point it here) and the upgrade socket.
VOLUME ["/var/lib/gatehouse"]
# Client traffic and the admin listener (health, readiness, /metrics, operator API).
EXPOSE 8080 9090
# Alive = the admin listener answers /healthz with 200. The slim image has no
# curl or wget, and adding one for this is bloat: bash (essential in Debian)
# opens the TCP connection itself. It asks 127.0.0.1:9090: a config that
# moves admin.listen to another port needs its own HEALTHCHECK.
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
  CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/9090 && printf 'GET /healthz HTTP/1.0\\r\\n\\r\\n' >&3 && read -r -t 2 _ status _ <&3 && [ \"$status\" = 200 ]"]
ENTRYPOINT ["gatehouse"]
CMD ["serve", "--config", "/etc/gatehouse/gatehouse.toml"]
