# syntax=docker/dockerfile:1
# notification-host: the host binary, the demo saga producer, and the example
# normalizer modules in the default modules directory.

FROM rust:1.95-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends pkg-config libssl-dev zlib1g-dev \
 && rm -rf /var/lib/apt/lists/* \
 && rustup target add wasm32-wasip2
WORKDIR /src
COPY . .
# The components: normalizers/ is a workspace of its own, so they land in
# normalizers/target.
RUN cargo build --release --target wasm32-wasip2 --manifest-path normalizers/Cargo.toml
# The host and the demo saga producer, in one build so that their shared
# dependencies are built once (saga-demo is in the notification-tools package).
RUN cargo build --release -p notification-host -p notification-tools --bin notification-host --bin saga-demo
RUN mkdir -p /out/normalizers \
 && cp normalizers/campus-delivery/normalizer.toml /out/normalizers/campus-delivery.toml \
 && cp normalizers/target/wasm32-wasip2/release/normalizer_campus_delivery.wasm /out/normalizers/campus-delivery.wasm \
 && cp normalizers/campus-delivery/samples.jsonl /out/normalizers/campus-delivery.samples.jsonl \
 && cp normalizers/target/wasm32-wasip2/release/normalizer_default.wasm /out/normalizer_default.wasm

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl libssl3 zlib1g \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /nonexistent --shell /usr/sbin/nologin notification
COPY --from=build /src/target/release/notification-host /src/target/release/saga-demo /usr/local/bin/
COPY --from=build /out/normalizers /etc/notification-host/normalizers
# The default component, for teams to compare their module against.
COPY --from=build /out/normalizer_default.wasm /usr/share/notification-host/normalizer_default.wasm
ENV KAFKA_BOOTSTRAP_SERVERS=kafka:9092 \
    HTTP_ADDR=0.0.0.0:8080 \
    NORMALIZERS_DIR=/etc/notification-host/normalizers \
    MODULE_CACHE_DIR=/tmp/notification-host-modules \
    LOG_FORMAT=json \
    RUST_LOG=info
EXPOSE 8080
USER 10001
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
  CMD ["curl", "-fsS", "http://127.0.0.1:8080/health"]
ENTRYPOINT ["notification-host"]
CMD ["serve"]
