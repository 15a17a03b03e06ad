# syntax=docker/dockerfile:1
#
# One image for all four binaries: command-api, query-api, projector, catalogctl.
# Compose and Kubernetes pick the program with `command:`; the default is command-api.
#
#   docker build -t catalog .
#
# Stages: chef (toolchain + cargo-chef) -> planner (dependency recipe) -> builder
# (dependencies cached by the recipe, then the workspace) -> runtime (debian slim).

ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm

FROM rust:${RUST_VERSION}-${DEBIAN_RELEASE} AS chef
# rdkafka-sys builds its bundled librdkafka with ./configure and make; libz-sys links the
# system zlib (the same packages .ci/run installs). cmake is not needed.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends make gcc g++ pkg-config zlib1g-dev \
    && rm -rf /var/lib/apt/lists/*
RUN cargo install cargo-chef --locked --version 0.1.78
WORKDIR /app

FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS builder
ENV CARGO_TERM_COLOR=never
COPY --from=planner /app/recipe.json recipe.json
# Dependencies only: this layer is reused until Cargo.toml/Cargo.lock change.
RUN cargo chef cook --release --locked --recipe-path recipe.json \
    -p command-api -p query-api -p projector -p catalogctl
COPY . .
# The release profile keeps line tables for backtraces (about 70 MB a binary); the image
# keeps the symbols but drops the debug sections (about 15 MB a binary).
RUN cargo build --release --locked -p command-api -p query-api -p projector -p catalogctl \
    && mkdir -p /out \
    && for bin in command-api query-api projector catalogctl; do \
         cp "target/release/${bin}" /out/ && strip --strip-debug "/out/${bin}"; \
       done

FROM debian:${DEBIAN_RELEASE}-slim AS runtime
# The binaries link only libc, libm, libgcc_s and libz (all in the slim base): sqlx uses
# rustls (with its bundled web PKI roots) and librdkafka is built without OpenSSL;
# ca-certificates is only the usual trust store for anything run inside the container.
# No curl: health checks use deploy/docker/http-probe (bash's /dev/tcp), see compose.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 catalog \
    && useradd --system --uid 10001 --gid catalog --no-create-home \
         --home-dir /nonexistent --shell /usr/sbin/nologin catalog
COPY --from=builder /out/ /usr/local/bin/
COPY --chmod=0755 deploy/docker/http-probe /usr/local/bin/http-probe

# Inside a container the services must listen on every interface, not only loopback.
ENV COMMAND_API_ADDR=0.0.0.0:8080 \
    QUERY_API_ADDR=0.0.0.0:8081 \
    PROJECTOR_ADDR=0.0.0.0:8082 \
    LOG_FORMAT=json

# A numeric user, so Kubernetes' runAsNonRoot can check it.
USER 10001:10001
# command-api, query-api, projector (health and metrics)
EXPOSE 8080 8081 8082
STOPSIGNAL SIGTERM
CMD ["command-api"]
