"""The soak test's tandem configurations and its TLS certificate.

Owns the two valid configurations the soak alternates between on every reload
(`render(variant, ports)`), and a throw-away self-signed certificate for the TLS
listener (`make_certificate`). Does not own starting tandem or reloading it.

Invariant: both variants keep the same listeners and binds (so a reload never
refuses a connection) and both are valid; what differs is real work for a
reload: the balancing algorithm, server weights, a route to a second upstream
that exists only in variant "b", the TCP listener's server set, the
breaker's reset timeout and the access log's format.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass

from harness.model import BenchError


@dataclass(frozen=True)
class Ports:
    """Everything tandem binds, and the Express backends behind it."""

    http: int
    https: int
    tcp: int
    admin: int
    backends: tuple[int, ...]


def make_certificate(tmp: str) -> tuple[str, str]:
    """A self-signed P-256 certificate for localhost / 127.0.0.1, valid 30 days."""
    cert, key = os.path.join(tmp, "soak.pem"), os.path.join(tmp, "soak.key")
    argv = ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
            "-nodes", "-keyout", key, "-out", cert, "-days", "30", "-subj", "/CN=localhost",
            "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"]
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise BenchError(f"openssl could not make the test certificate: {e}") from e
    if r.returncode != 0:
        raise BenchError(f"openssl could not make the test certificate: {r.stderr.strip()}")
    return cert, key


def _servers(ports: tuple[int, ...], weights: tuple[int, ...] | None = None) -> str:
    lines = []
    for i, port in enumerate(ports):
        lines.append(f"      - address: 127.0.0.1:{port}")
        if weights:
            lines.append(f"        weight: {weights[i]}")
    return "\n".join(lines)


# Probes every second, down after 2 failures: a killed backend leaves the
# rotation within ~2 s, as an operator would configure it in front of Node apps.
# The breaker's reset is shorter than the default 30 s so that a restarted
# backend is back before the next one is killed (with 30 s and a kill every 15 s
# in --smoke, every breaker ends up open and clients get 503s); it differs
# between the variants, one more thing a reload changes.
HEALTH = """    health_check:
      http:
        path: /healthz
      interval: 1s
      timeout: 1s
      rise: 2
      fall: 2
    circuit_breaker:
      reset_timeout: {reset}"""


def render(variant: str, ports: Ports, cert: str, key: str, workers: int, access_log: str) -> str:
    """Configuration "a" or "b" (see the module doc for what differs).

    Both write the access log to the file `access_log` (a reload keeps it open),
    as JSON in "a" and as text in "b".
    """
    if variant not in ("a", "b"):
        raise ValueError(f"unknown variant {variant!r}")
    b = ports.backends
    reset = "10s" if variant == "a" else "8s"
    health = HEALTH.format(reset=reset)
    if variant == "a":
        web = f"""  - name: web
    balance: round_robin
{health}
    servers:
{_servers(b)}"""
        routes = ""
        tcp_servers = _servers(b)
        extra = ""
    else:
        web = f"""  - name: web
    balance: least_connections
{health}
    servers:
{_servers(b, tuple(2 if i == 0 else 1 for i in range(len(b))))}"""
        routes = """    routes:
      - path_prefix: /echo
        upstream: echo
"""
        # The TCP listener loses its last server in "b" and gets it back in "a".
        tcp_servers = _servers(b[:-1]) if len(b) > 1 else _servers(b)
        extra = f"""
  - name: echo
    balance: random_two
{health}
    servers:
{_servers(b)}"""
    return f"""# tandem soak configuration, variant {variant} (rendered by bench/harness/soak_config.py)
workers: {workers}
shutdown_timeout: 5s

admin:
  bind: 127.0.0.1:{ports.admin}

access_log:
  path: {access_log}
  format: {"json" if variant == "a" else "text"}

listeners:
  - name: http
    bind: 127.0.0.1:{ports.http}
    mode: http
    upstream: web
{routes}  - name: https
    bind: 127.0.0.1:{ports.https}
    mode: http
    upstream: web
{routes}    tls:
      certificates:
        - cert: {cert}
          key: {key}
  - name: tcp
    bind: 127.0.0.1:{ports.tcp}
    mode: tcp
    upstream: tcp

upstreams:
{web}{extra}
  - name: tcp
    health_check:
      tcp: {{}}
      interval: 1s
      timeout: 1s
      rise: 2
      fall: 2
    circuit_breaker:
      reset_timeout: {reset}
    servers:
{tcp_servers}
"""


def write_atomically(path: str, text: str) -> None:
    """Replace the file in one rename, so a reload never reads half a file."""
    tmp = path + ".new"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)
