# syntax=docker/dockerfile:1
#
# tandem container image.
#
#   docker build -t tandem .
#   docker run --rm -p 8080:8080 -v "$PWD/proxy.yaml:/etc/tandem/proxy.yaml:ro" tandem
#
# The baked-in /etc/tandem/proxy.yaml is the repository's example: it expects the
# backends on 127.0.0.1:3001/3002 and binds the admin API to loopback, so inside a
# container mount your own config (servers reachable from the container, and
# `admin.bind: 0.0.0.0:9901` if you publish 9901).
#
# High availability (ha: section, VIP + gratuitous ARP) needs
#   --cap-add NET_ADMIN --cap-add NET_RAW
# plus `--network host` (the VIP lives on the host's interface). Docker does not make
# added capabilities effective for a non-root user, so an HA container must also run
# with `--user 0`; without `ha:` the default non-root user is all tandem needs.

FROM rust:1-bookworm AS builder
WORKDIR /src
COPY . .
# Cache mounts keep the registry and the dependency builds between image builds; the
# binary is copied out of the cached target dir in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked \
    && install -D -m 0755 target/release/tandem /out/tandem

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 tandem \
    && useradd --system --uid 10001 --gid 10001 --home-dir /nonexistent \
       --no-create-home --shell /usr/sbin/nologin tandem
COPY --from=builder /out/tandem /usr/local/bin/tandem
COPY proxy.yaml /etc/tandem/proxy.yaml
USER 10001:10001
EXPOSE 8080 9901
# tandem drains on SIGTERM (docker stop); give it shutdown_timeout with `docker stop -t`.
STOPSIGNAL SIGTERM
ENTRYPOINT ["tandem"]
CMD ["run", "-c", "/etc/tandem/proxy.yaml"]
