# syntax=docker/dockerfile:1
# One image with every cdp-* binary; choose the service with the command (default: the collector).
# Not built in CI (the build machines have no Docker engine); CI runs the same `cargo build`.

FROM rust:1.95-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends cmake libssl-dev libsasl2-dev libcurl4-openssl-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bins \
 && mkdir -p /out \
 && find target/release -maxdepth 1 -type f -name 'cdp-*' -perm -u+x -exec cp {} /out/ \;

FROM debian:bookworm-slim AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates libssl3 libsasl2-2 \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --no-create-home cdp
COPY --from=build /out/ /usr/local/bin/
COPY config/ /etc/cdp/
ENV CDP_WORKSPACE=/etc/cdp/workspace.yaml
USER 10001
EXPOSE 8080 9101
CMD ["cdp-collector"]
