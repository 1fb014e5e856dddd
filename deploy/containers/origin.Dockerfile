# syntax=docker/dockerfile:1
# cascade-origin: the origin: RTMP ingest, transcoding (ffmpeg), packaging, delivery, archive, API.
# Build from the repository root:  docker build -f deploy/containers/origin.Dockerfile -t cascade-origin .
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
    cargo build --release --locked -p cascade-origin \
 && mkdir -p /out && cp target/release/cascade-origin /out/

# The player page's hls.js and dash.js, from the pinned lock file.
FROM node:20-bookworm-slim AS players
WORKDIR /player
COPY player/package.json player/package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates ffmpeg \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --user-group --home-dir /nonexistent --shell /usr/sbin/nologin cascade \
 && mkdir -p /data /etc/cascade && chown 10001:10001 /data
COPY --from=build /out/ /usr/local/bin/
COPY --from=players /player/node_modules /usr/share/cascade/player
USER 10001:10001
ENV XDG_RUNTIME_DIR=/tmp
# /data holds the registry (SQLite), the filesystem store, the spool and the transcoder's
# work files when the config points there; mount a volume.
VOLUME ["/data"]
EXPOSE 8080 1935 9080
ENTRYPOINT ["/usr/local/bin/cascade-origin"]
CMD ["--config", "/etc/cascade/cascade.toml"]
