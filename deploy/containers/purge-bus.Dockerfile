# syntax=docker/dockerfile:1
# cascade-purge-bus: the purge bus and the cascade-purge CLI.
# Build from the repository root:  docker build -f deploy/containers/purge-bus.Dockerfile -t cascade-purge-bus .
# The image runs as an unprivileged user and writes only to /tmp (runtime files) and /data
# (when the config puts data there), so it runs with a read-only root filesystem.

FROM rust:1.95-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends cmake pkg-config \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p cascade-purge-bus \
 && mkdir -p /out && cp target/release/cascade-purge-bus /out/ \
 && cp target/release/cascade-purge /out/

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --user-group --home-dir /nonexistent --shell /usr/sbin/nologin cascade \
 && mkdir -p /data /etc/cascade && chown 10001:10001 /data
COPY --from=build /out/ /usr/local/bin/
USER 10001:10001
ENV XDG_RUNTIME_DIR=/tmp
# /data/purge-bus holds the embedded purge log (no Kafka); mount a volume.
VOLUME ["/data"]
EXPOSE 8090 9090
ENTRYPOINT ["/usr/local/bin/cascade-purge-bus"]
CMD ["--config", "/etc/cascade/cascade.toml"]
