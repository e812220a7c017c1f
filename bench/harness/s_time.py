"""`openssl s_time -new`: the full-handshake load generator.

Owns the command line and the reading of its summary. wrk and h2load both
resume TLS sessions when they reconnect (they keep the SSL object across
`Connection: close` and offer its session; measured: 3064 of 3068 wrk
reconnections and all h2load ones resumed), so neither measures a full
handshake. `s_time -new` starts every connection with a fresh session: a full
TLS 1.3 handshake (ECDHE + certificate signature), one `GET / HTTP/1.0` with
a Host header, read to the server's close. One s_time runs one connection at a time, so the
harness starts several in parallel. Pure: no IO.
"""

from __future__ import annotations

import re


def www(path: str) -> str:
    """The `-www` argument that makes s_time send `request(path)`.

    s_time writes "GET <www> HTTP/1.0\\r\\n\\r\\n" and has no header option; a
    request without Host is not forwarded alike by every proxy, so the
    argument carries a Host line and ends in a header whose value is s_time's
    own " HTTP/1.0".
    """
    return f"{path} HTTP/1.0\r\nHost: bench\r\nX-Pad:"


def request(path: str) -> bytes:
    """The bytes s_time sends with `-www www(path)`."""
    return f"GET {www(path)} HTTP/1.0\r\n\r\n".encode()


def argv(openssl: str, port: int, path: str, seconds: int) -> list[str]:
    """One sequential client: new TLS 1.3 session and one request per connection."""
    return [openssl, "s_time", "-connect", f"127.0.0.1:{port}", "-new", "-tls1_3",
            "-time", str(seconds), "-www", www(path)]


def parse(text: str, min_bytes: int) -> dict | None:
    """{requests, errors} from one s_time's output, or None if there is no summary.

    s_time cannot see status codes: a connection that read fewer than
    `min_bytes` (a response head plus the body) counts as an error for the
    whole run, so a broken setup does not pass as a fast one.
    """
    m = re.search(r"(\d+) connections in \d+ real seconds, (\d+) bytes read per connection", text)
    if not m:
        return None
    conns, per = int(m.group(1)), int(m.group(2))
    return {"requests": conns, "errors": 0 if per >= min_bytes else conns}
