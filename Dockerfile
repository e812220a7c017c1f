# syntax=docker/dockerfile:1
#
# tandem container image.
#
#   docker build -t tandem .
#   docker run -d --name tandem -p 8080:8080 \
#     -v "$PWD/proxy.yaml:/etc/tandem/proxy.yaml:ro" tandem
#
# Base images are named in full (docker.io/library/...): podman and buildah refuse
# short names unless a registry search list is configured.
#
# The baked-in /etc/tandem/proxy.yaml is the repository's example: it expects the
# backends on 127.0.0.1:3001/3002, so inside a container mount your own config
# (servers reachable from the container).
#
# Admin API (/status, /metrics, /reload): keep `admin.bind` on 127.0.0.1 (the
# default) and it is reachable only inside the container, whatever is published:
#   docker exec tandem tandem reload -c /etc/tandem/proxy.yaml   # reload, exit status
#   docker kill -s HUP tandem                                     # reload, no answer
# To scrape /metrics from the host, bind the admin API to all of the container's
# addresses AND publish it on the host's loopback only, with a token for POSTs:
#   admin: {bind: "0.0.0.0:9901", token_file: /etc/tandem/admin.token}
#   docker run ... -p 127.0.0.1:9901:9901 ...
# A bare `-p 9901:9901` (or `-P`) would publish it on every host address: 9901 is
# deliberately not EXPOSEd, so `-P` never publishes it.
#
# High availability (ha: section, VIP + gratuitous ARP) needs
#   --cap-add NET_ADMIN --cap-add NET_RAW
# plus `--network host` (the VIP lives on the host's interface). Docker does not make
# added capabilities effective for a non-root user, so an HA container must also run
# with `--user 0`; without `ha:` the default non-root user is all tandem needs.

FROM docker.io/library/rust:1-bookworm AS builder
WORKDIR /src
COPY . .
# Cache mounts keep the registry and the dependency builds between image builds; the
# binary is copied out of the cached target dir in the same step. The release profile
# keeps line-level debug info (debug = 1) for profiling a local build; the image gets
# the binary stripped of it and of its symbol table (a fraction of the size).
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked \
    && mkdir -p /out \
    && strip --strip-all -o /out/tandem target/release/tandem

FROM docker.io/library/debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 tandem \
    && useradd --system --uid 10001 --gid 10001 --home-dir /nonexistent \
       --no-create-home --shell /usr/sbin/nologin tandem
COPY --from=builder /out/tandem /usr/local/bin/tandem
COPY proxy.yaml /etc/tandem/proxy.yaml
COPY README.md docs/*.md /usr/share/doc/tandem/
USER 10001:10001
EXPOSE 8080
# Liveness: GET /healthz on the admin API, from inside the container (so it works
# with the admin API on loopback). bash's /dev/tcp: the slim image has no curl.
# Set TANDEM_ADMIN if your config moves admin.bind.
ENV TANDEM_ADMIN=127.0.0.1:9901
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
    CMD ["bash", "-c", "exec 3<>/dev/tcp/${TANDEM_ADMIN%:*}/${TANDEM_ADMIN##*:} && printf 'GET /healthz HTTP/1.0\\r\\nHost: tandem\\r\\n\\r\\n' >&3 && head -n 1 <&3 | grep -q ' 200 '"]
# tandem drains on SIGTERM (docker stop); give it shutdown_timeout with `docker stop -t`.
STOPSIGNAL SIGTERM
ENTRYPOINT ["tandem"]
CMD ["run", "-c", "/etc/tandem/proxy.yaml"]
