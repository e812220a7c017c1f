"""What is measured: scenarios, contestants and per-run results.

Owns the plain data the harness passes around; no IO. Invariant: BODY is
exactly the 38 bytes the backends serve, and every scenario's listener is one
of "http", "tcp", "iperf", "tls" (HTTPS, ALPN h2 and http/1.1) or "h2c"
(plain-text HTTP/2 with prior knowledge).
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field

# Exactly 38 bytes, no characters nginx's `return` would interpret.
BODY = "tandem-bench backend says hello world!"
assert len(BODY) == 38
ONE_MIB = 1 << 20


class BenchError(Exception):
    """A failure that ends the run with a clear message (exit 1)."""


@dataclass(frozen=True)
class Scenario:
    key: str
    title: str
    unit: str  # "req/s" or "MiB/s"
    kind: str  # "wrk", "iperf3", "h2load" or "s_time"
    listener: str  # "http", "tcp", "iperf", "tls" or "h2c"
    path: str = "/"
    conns: int = 1
    streams: int = 1  # h2load -m: concurrent streams per connection


SCENARIOS = [
    Scenario("http-c50", "HTTP GET / -c50", "req/s", "wrk", "http", "/", 50),
    Scenario("http-c200", "HTTP GET / -c200", "req/s", "wrk", "http", "/", 200),
    Scenario("http-1m", "HTTP GET /1m -c10", "MiB/s", "wrk", "http", "/1m", 10),
    Scenario("tcp-c50", "TCP relay, GET / -c50", "req/s", "wrk", "tcp", "/", 50),
    Scenario("tcp-1m", "TCP relay, GET /1m -c10", "MiB/s", "wrk", "tcp", "/1m", 10),
    Scenario("tcp-iperf3", "TCP relay, iperf3 1 stream", "MiB/s", "iperf3", "iperf"),
    # TLS termination: one ECDSA P-256 certificate per run, shared by all proxies.
    Scenario("tls-c50", "HTTPS keep-alive GET / -c50", "req/s", "wrk", "tls", "/", 50),
    # A new connection and full TLS 1.3 handshake per request, no resumption
    # (harness/s_time.py says why not wrk or h2load); conns = parallel s_time.
    Scenario("tls-hs", "HTTPS full handshake per request, s_time x4", "req/s", "s_time", "tls",
             "/", 4),
    # HTTP/2 from the client, HTTP/1.1 to the backends.
    Scenario("h2-tls", "HTTP/2 over TLS, h2load -c50 -m4", "req/s", "h2load", "tls", "/", 50,
             streams=4),
    Scenario("h2c", "h2c prior knowledge, h2load -c50 -m4", "req/s", "h2load", "h2c", "/", 50,
             streams=4),
]
# The smoke run touches every code path once (wrk over http and tcp
# listeners, small and large bodies, iperf3, a TLS handshake per request,
# h2load over TLS) and stays under two minutes.
QUICK_SCENARIOS = ["http-c50", "http-1m", "tcp-c50", "tcp-iperf3", "tls-hs", "h2-tls"]
CONTESTANTS = ["direct", "haproxy", "nginx", "tandem"]
# Not in the default run: the cost of logging every request, each proxy
# against itself without a log (`--contestants haproxy,haproxy-log,tandem,tandem-log`).
LOG_CONTESTANTS = ["haproxy-log", "tandem-log"]
LABELS = {"direct": "direct (ceiling)", "haproxy": "HAProxy", "nginx": "nginx", "tandem": "tandem",
          "haproxy-log": "HAProxy, log to a file", "tandem-log": "tandem, access log to a file"}


@dataclass
class Contestant:
    name: str
    ports: dict[str, int]  # listener -> port
    proc: subprocess.Popen | None = None  # None for "direct"
    rss_idle_kib: int | None = None
    rss_peak_kib: int | None = None
    skip: dict[str, str] = field(default_factory=dict)  # listener -> reason
    idle: object | None = None  # harness.idle.IdleMemory, or a str saying why not


@dataclass
class Run:
    value: float | None
    p50_us: float | None = None
    p99_us: float | None = None
    cpu_us: float | None = None  # per request (per MiB for iperf3)
    busy: float | None = None  # proxy CPU seconds / wall seconds of the run
    waited: float | None = None  # runqueue wait seconds / wall seconds of the run
    errors: int = 0
    note: str = ""
