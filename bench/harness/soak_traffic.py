"""The soak test's HTTP/1.1, TLS, TCP, WebSocket and slow clients (asyncio).

Owns the client side of the soak traffic except HTTP/2 (soak_h2.py): a minimal
HTTP/1.1 client on asyncio streams, the request mix and how each answer is
checked (status and body, byte for byte), a minimal WebSocket client, slow
readers and slow uploaders, and the tally of successes and errors by traffic
kind and error type. Does not own processes, reloads or kills.

Invariants: every worker loop is bounded by a stop event, a hard deadline and
an iteration cap (`Run.active`); every request has a timeout; every
connection opened is closed before its worker returns. Traffic goes to
127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import base64
import errno
import hashlib
import json
import os
import socket
import ssl
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Awaitable, Callable

HOST = "127.0.0.1"
PATTERN_PERIOD = 251  # the Express backend's /bytes and /chunked pattern: byte i is i % 251
WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class Failure(Exception):
    """One failed request, already classified (`what` is the error type shown in the report)."""

    def __init__(self, what: str):
        super().__init__(what)
        self.what = what


def classify(exc: BaseException) -> str:
    """Error type of a failed request, for the report's errors-by-kind table."""
    if isinstance(exc, Failure):
        return exc.what
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
        return "timeout"
    if isinstance(exc, ConnectionRefusedError):
        return "connect_refused"
    if isinstance(exc, ConnectionResetError):
        return "reset"
    if isinstance(exc, BrokenPipeError):
        return "broken_pipe"
    if isinstance(exc, asyncio.IncompleteReadError):
        return "closed_early"
    if isinstance(exc, ssl.SSLError):
        return "tls"
    if isinstance(exc, OSError) and exc.errno is not None:
        return "os_" + errno.errorcode.get(exc.errno, str(exc.errno))
    module = type(exc).__module__ or ""
    if module.startswith(("h2", "hpack", "hyperframe")):
        return "h2_protocol"
    return type(exc).__name__


@dataclass
class Tally:
    """Successful requests and failed ones by traffic kind and error type."""

    ok: Counter = field(default_factory=Counter)
    errors: dict = field(default_factory=lambda: defaultdict(Counter))
    # (time.monotonic(), kind, type) of every failure, to tell kill-time errors from others.
    error_log: list = field(default_factory=list)

    def success(self, kind: str, n: int = 1) -> None:
        self.ok[kind] += n

    def error(self, kind: str, exc: BaseException) -> None:
        what = classify(exc)
        self.errors[kind][what] += 1
        if len(self.error_log) < 1_000_000:
            self.error_log.append((time.monotonic(), kind, what))

    def total_ok(self) -> int:
        return sum(self.ok.values())

    def total_errors(self) -> int:
        return sum(sum(c.values()) for c in self.errors.values())


@dataclass
class Run:
    """Shared bounds of every worker loop: stop event, hard deadline, iteration cap."""

    stop: asyncio.Event
    hard_deadline: float  # time.monotonic() after which every loop ends
    max_iterations: int
    request_timeout: float
    slow_timeout: float
    tally: Tally

    def active(self, i: int) -> bool:
        return not self.stop.is_set() and i < self.max_iterations and time.monotonic() < self.hard_deadline

    async def pause(self, seconds: float) -> None:
        """Pacing between requests (not synchronisation): returns early on stop."""
        try:
            await asyncio.wait_for(self.stop.wait(), seconds)
        except asyncio.TimeoutError:
            pass


_patterns: dict[int, bytes] = {}


def pattern(n: int) -> bytes:
    """The first n bytes the backend's /bytes and /chunked endpoints send."""
    if n not in _patterns:
        period = bytes(range(PATTERN_PERIOD))
        _patterns[n] = (period * (n // PATTERN_PERIOD + 1))[:n]
    return _patterns[n]


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    body: bytes
    check: Callable[[int, bytes], None]

    def verify(self, status: int, body: bytes) -> None:
        """Raises a Failure; a bad status names the method (a GET can be retried, a POST not)."""
        try:
            self.check(status, body)
        except Failure as e:
            if e.what.startswith("http_"):
                raise Failure(f"{e.what}_{self.method}") from None
            raise


def _expect_json(key: str, value=None) -> Callable[[int, bytes], None]:
    def check(status: int, body: bytes) -> None:
        if status != 200:
            raise Failure(f"http_{status}")
        try:
            doc = json.loads(body)
        except ValueError:
            raise Failure("bad_body") from None
        if key not in doc or (value is not None and doc[key] != value):
            raise Failure("bad_body")
    return check


def _expect_pattern(n: int) -> Callable[[int, bytes], None]:
    def check(status: int, body: bytes) -> None:
        if status != 200:
            raise Failure(f"http_{status}")
        if body != pattern(n):
            raise Failure("bad_body")
    return check


ECHO_BODY = bytes(range(256)) * 4  # 1 KiB

# GET / dominates, as small requests do in real traffic; a 64 KiB body, a chunked
# body and a POST with a body keep the other framings busy.
MIX = [
    Request("GET", "/", b"", _expect_json("instance")),
    Request("GET", "/bytes/65536", b"", _expect_pattern(65536)),
    Request("GET", "/", b"", _expect_json("instance")),
    Request("POST", "/echo/soak", ECHO_BODY, _expect_json("bodyBytes", len(ECHO_BODY))),
    Request("GET", "/", b"", _expect_json("instance")),
    Request("GET", "/chunked/20000", b"", _expect_pattern(20000)),
]


def encode_request(method: str, path: str, body: bytes, close: bool,
                   extra: tuple[tuple[str, str], ...] = (), length: int | None = None) -> bytes:
    """A request head plus `body`; `length` announces a body the caller sends afterwards."""
    lines = [f"{method} {path} HTTP/1.1", "Host: localhost", "User-Agent: tandem-soak"]
    if length is None and (body or method in ("POST", "PUT")):
        length = len(body)
    if length is not None:
        lines.append(f"Content-Length: {length}")
    if close:
        lines.append("Connection: close")
    lines.extend(f"{k}: {v}" for k, v in extra)
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def read_head(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    line = await reader.readline()
    if not line:
        raise Failure("closed_early")
    parts = line.split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
        raise Failure("bad_response")
    headers: dict[str, str] = {}
    for _ in range(200):
        h = await reader.readline()
        if h in (b"\r\n", b"\n"):
            return int(parts[1]), headers
        if not h:
            raise Failure("closed_early")
        name, _, value = h.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    raise Failure("bad_response")


async def read_body(reader: asyncio.StreamReader, status: int, headers: dict[str, str],
                    method: str) -> bytes:
    if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
        return b""
    if "chunked" in headers.get("transfer-encoding", "").lower():
        parts = []
        for _ in range(100_000):
            size_line = await reader.readline()
            if not size_line:
                raise Failure("closed_early")
            size = int(size_line.split(b";")[0].strip() or b"x", 16)
            if size == 0:
                for _ in range(100):  # trailers, then the blank line
                    if (await reader.readline()) in (b"\r\n", b"\n", b""):
                        return b"".join(parts)
                raise Failure("bad_response")
            parts.append(await reader.readexactly(size))
            await reader.readexactly(2)
        raise Failure("bad_response")
    if "content-length" in headers:
        return await reader.readexactly(int(headers["content-length"]))
    return await reader.read()


async def h1_exchange(reader, writer, req: Request, close: bool) -> tuple[int, dict[str, str], bytes]:
    writer.write(encode_request(req.method, req.path, req.body, close))
    await writer.drain()
    status, headers = await read_head(reader)
    body = await read_body(reader, status, headers, req.method)
    return status, headers, body


async def close_writer(writer: asyncio.StreamWriter) -> None:
    writer.close()
    try:
        await asyncio.wait_for(writer.wait_closed(), 2)
    except (OSError, asyncio.TimeoutError, ssl.SSLError):
        pass


Connect = Callable[[], Awaitable[tuple[asyncio.StreamReader, asyncio.StreamWriter]]]


def plain(port: int) -> Connect:
    return lambda: asyncio.open_connection(HOST, port)


def tls(port: int, ctx: ssl.SSLContext) -> Connect:
    async def connect():
        reader, writer = await asyncio.open_connection(HOST, port, ssl=ctx, server_hostname="localhost")
        alpn = writer.get_extra_info("ssl_object").selected_alpn_protocol()
        if alpn not in (None, "http/1.1"):
            writer.close()
            raise Failure(f"alpn_{alpn}")
        return reader, writer
    return connect


async def h1_worker(run: Run, kind: str, connect: Connect, per_connection: int, think: float,
                    offset: int = 0) -> None:
    """HTTP/1.1 requests from MIX: `per_connection` per connection (1 = a new connection each)."""
    i = 0
    while run.active(i):
        try:
            reader, writer = await asyncio.wait_for(connect(), run.request_timeout)
        except Exception as e:  # noqa: BLE001 (every failure is counted by type)
            run.tally.error(kind, e)
            i += 1
            await run.pause(0.2)
            continue
        try:
            for _ in range(per_connection):
                if not run.active(i):
                    break
                req = MIX[(i + offset) % len(MIX)]
                i += 1
                status, headers, body = await asyncio.wait_for(
                    h1_exchange(reader, writer, req, close=per_connection == 1), run.request_timeout)
                req.verify(status, body)
                run.tally.success(kind)
                if headers.get("connection", "").lower() == "close":
                    break
                await run.pause(think)
        except Exception as e:  # noqa: BLE001
            run.tally.error(kind, e)
            await run.pause(0.05)
        finally:
            await close_writer(writer)


def _ws_frame(opcode: int, payload: bytes) -> bytes:
    """A client frame (FIN set, masked as RFC 6455 requires of clients)."""
    head = bytearray([0x80 | opcode])
    n = len(payload)
    if n < 126:
        head.append(0x80 | n)
    elif n < 1 << 16:
        head.append(0x80 | 126)
        head += n.to_bytes(2, "big")
    else:
        head.append(0x80 | 127)
        head += n.to_bytes(8, "big")
    mask = os.urandom(4)
    if not n:
        return bytes(head) + mask
    # XOR as one big integer: a per-byte loop in Python would cost more than the request.
    key = int.from_bytes((mask * (n // 4 + 1))[:n], "big")
    masked = (int.from_bytes(payload, "big") ^ key).to_bytes(n, "big")
    return bytes(head) + mask + masked


async def _ws_read(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    b0, b1 = await reader.readexactly(2)
    n = b1 & 0x7F
    if n == 126:
        n = int.from_bytes(await reader.readexactly(2), "big")
    elif n == 127:
        n = int.from_bytes(await reader.readexactly(8), "big")
    if b1 & 0x80 or not b0 & 0x80 or n > 1 << 20:
        raise Failure("ws_bad_frame")  # servers never mask; the echo never fragments
    return b0 & 0x0F, await reader.readexactly(n)


async def websocket_worker(run: Run, port: int, messages: int, think: float) -> None:
    """Upgrade to /ws through the HTTP listener, echo `messages` binary messages, close; repeat."""
    kind = "websocket"
    i = 0
    while run.active(i):
        i += 1
        writer = None
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(HOST, port), run.request_timeout)
            key = base64.b64encode(os.urandom(16)).decode()
            extra = (("Upgrade", "websocket"), ("Connection", "Upgrade"),
                     ("Sec-WebSocket-Key", key), ("Sec-WebSocket-Version", "13"))
            writer.write(encode_request("GET", "/ws", b"", False, extra))
            status, headers = await asyncio.wait_for(read_head(reader), run.request_timeout)
            if status != 101:
                raise Failure(f"http_{status}")
            accept = base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest()).decode()
            if headers.get("sec-websocket-accept") != accept:
                raise Failure("ws_bad_accept")
            for m in range(messages):
                if not run.active(i):
                    break
                payload = os.urandom(16 + (m * 997) % 8000)
                writer.write(_ws_frame(0x2, payload))
                opcode, data = await asyncio.wait_for(_ws_read(reader), run.request_timeout)
                if opcode != 0x2 or data != payload:
                    raise Failure("ws_mismatch")
                run.tally.success(kind)
                await run.pause(think)
            writer.write(_ws_frame(0x8, (1000).to_bytes(2, "big")))
            opcode, _ = await asyncio.wait_for(_ws_read(reader), run.request_timeout)
            if opcode != 0x8:
                raise Failure("ws_no_close")
        except Exception as e:  # noqa: BLE001
            run.tally.error(kind, e)
            await run.pause(0.2)
        finally:
            if writer is not None:
                await close_writer(writer)


async def _small_window_connection(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A connection with a 16 KiB receive buffer and stream limit, so reading slowly slows tandem."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, (HOST, port))
    except BaseException:
        sock.close()
        raise
    return await asyncio.open_connection(sock=sock, limit=16384)


async def slow_reader(run: Run, port: int, size: int, chunk: int, every: float) -> None:
    """GET /bytes/size, reading `chunk` bytes every `every` seconds, checking every byte."""
    kind = "slow_reader"
    expected = pattern(size)
    i = 0
    while run.active(i):
        i += 1
        writer = None
        try:
            reader, writer = await asyncio.wait_for(_small_window_connection(port), run.request_timeout)

            async def exchange() -> None:
                writer.write(encode_request("GET", f"/bytes/{size}", b"", True))
                status, headers = await read_head(reader)
                if status != 200:
                    raise Failure(f"http_{status}")
                got = 0
                while got < size:
                    data = await reader.read(min(chunk, size - got))
                    if not data:
                        raise Failure("closed_early")
                    if data != expected[got:got + len(data)]:
                        raise Failure("bad_body")
                    got += len(data)
                    await asyncio.sleep(every)  # the slowness itself, not synchronisation

            await asyncio.wait_for(exchange(), run.slow_timeout)
            run.tally.success(kind)
        except Exception as e:  # noqa: BLE001
            run.tally.error(kind, e)
            await run.pause(0.2)
        finally:
            if writer is not None:
                await close_writer(writer)


async def slow_uploader(run: Run, port: int, size: int, chunk: int, every: float) -> None:
    """POST /upload of `size` bytes, `chunk` bytes every `every` seconds; checks the server's SHA-256."""
    kind = "slow_upload"
    i = 0
    while run.active(i):
        i += 1
        writer = None
        try:
            body = os.urandom(size)
            digest = hashlib.sha256(body).hexdigest()
            reader, writer = await asyncio.wait_for(asyncio.open_connection(HOST, port), run.request_timeout)

            async def exchange() -> None:
                writer.write(encode_request("POST", "/upload", b"", True, length=size))
                for off in range(0, size, chunk):
                    writer.write(body[off:off + chunk])
                    await writer.drain()
                    await asyncio.sleep(every)  # the slowness itself, not synchronisation
                status, headers = await read_head(reader)
                data = await read_body(reader, status, headers, "POST")
                if status != 200:
                    raise Failure(f"http_{status}")
                doc = json.loads(data)
                if doc.get("bytes") != size or doc.get("sha256") != digest:
                    raise Failure("bad_body")

            await asyncio.wait_for(exchange(), run.slow_timeout)
            run.tally.success(kind)
        except Exception as e:  # noqa: BLE001
            run.tally.error(kind, e)
            await run.pause(0.2)
        finally:
            if writer is not None:
                await close_writer(writer)
