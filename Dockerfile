# syntax=docker/dockerfile:1
# The `gavel` binary (every service, `migrate`, `tail`, `bench`) on a slim Debian runtime.
# Migrations and the web client are embedded in the binary; the image needs nothing else.
#
#   docker build -t gavel .
#   docker run --rm gavel --help

FROM rust:1-bookworm AS builder
WORKDIR /src
COPY . .
# Cache the registry and the target directory between builds (BuildKit).
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p gavel \
    && install -m 0755 target/release/gavel /usr/local/bin/gavel

FROM debian:bookworm-slim AS runtime
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin gavel
COPY --from=builder /usr/local/bin/gavel /usr/local/bin/gavel
USER gavel
# In a container the edge must listen on every interface; the other defaults are PROTOCOL.md's.
ENV RUST_LOG=info \
    GAVEL_HTTP_ADDR=0.0.0.0:8080
EXPOSE 8080
ENTRYPOINT ["gavel"]
CMD ["--help"]
