"""Memory held per idle client connection.

Owns one measurement: open N client connections to a proxy's HTTP port and
read how much the proxy's RSS (process tree) grew per connection, twice:
while the connections have sent nothing, and after each has made one
keep-alive request (answered, then left idle). Proxies keep different state
for the two: a fresh connection may hold no buffers yet, one that served a
request holds whatever its HTTP codec keeps between requests.

Waits are conditions, not sleeps: RSS is read once it has stopped changing
(the proxy has finished accepting or answering), within a bounded time.
Every socket it opens is closed before it returns.
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass

from .model import BenchError
from .process import memory_kib

REQUEST = b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n"


@dataclass
class IdleMemory:
    connections: int
    silent_bytes: float  # extra RSS per connection that sent nothing
    used_bytes: float  # extra RSS per connection idle after one request


def settled_rss_kib(pid: int, within: float = 15.0) -> int:
    """VmRSS once five samples 100 ms apart agree (or the last one at `within`)."""
    deadline = time.monotonic() + within
    last, same = memory_kib(pid, "VmRSS"), 0
    while time.monotonic() < deadline and same < 5:
        time.sleep(0.1)
        now = memory_kib(pid, "VmRSS")
        same = same + 1 if now == last else 0
        last = now
    return last


def read_response(s: socket.socket) -> None:
    """Reads one Content-Length response; raises on anything else."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(4096)
        if not chunk:
            raise BenchError("proxy closed an idle-test connection before answering")
        buf += chunk
    head, _, body = buf.partition(b"\r\n\r\n")
    length = None
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    if not head.startswith(b"HTTP/1.1 200") or length is None:
        raise BenchError(f"unexpected idle-test answer: {head[:80]!r}")
    while len(body) < length:
        chunk = s.recv(4096)
        if not chunk:
            raise BenchError("proxy closed an idle-test connection mid-body")
        body += chunk


def measure(port: int, pid: int, count: int, within: float = 120.0) -> IdleMemory:
    """Opens `count` connections to 127.0.0.1:`port`; RSS growth of `pid`'s tree."""
    deadline = time.monotonic() + within
    before = settled_rss_kib(pid)
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            if time.monotonic() > deadline:
                raise BenchError(f"idle test: opening {count} connections took over {within:.0f} s")
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            socks.append(s)
        silent = settled_rss_kib(pid)
        for s in socks:
            if time.monotonic() > deadline:
                raise BenchError(f"idle test: {count} requests took over {within:.0f} s")
            s.sendall(REQUEST)
            read_response(s)
        used = settled_rss_kib(pid)
    except OSError as e:
        raise BenchError(f"idle test on port {port} after {len(socks)} connections: {e}") from e
    finally:
        for s in socks:
            s.close()
    per = 1024.0 / count
    return IdleMemory(count, (silent - before) * per, (used - before) * per)
