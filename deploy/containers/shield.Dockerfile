# syntax=docker/dockerfile:1
# cascade-shield: the shield: the parent cache tier with its disk tier.
# Build from the repository root:  docker build -f deploy/containers/shield.Dockerfile -t cascade-shield .
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
    cargo build --release --locked -p cascade-shield \
 && mkdir -p /out && cp target/release/cascade-shield /out/

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --user-group --home-dir /nonexistent --shell /usr/sbin/nologin cascade \
 && mkdir -p /data /etc/cascade && chown 10001:10001 /data
COPY --from=build /out/ /usr/local/bin/
USER 10001:10001
ENV XDG_RUNTIME_DIR=/tmp
# /data/disk holds the disk tier when the config points there; mount a volume.
VOLUME ["/data"]
EXPOSE 8081 9081
ENTRYPOINT ["/usr/local/bin/cascade-shield"]
CMD ["--config", "/etc/cascade/cascade.toml"]
