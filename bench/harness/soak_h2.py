"""The soak test's HTTP/2 clients: h2c with prior knowledge and h2 over TLS.

Owns one asyncio HTTP/2 client connection (`H2Client`, driving the sans-io
`h2` package: one reader task, concurrent streams awaiting their own future)
and the worker that keeps several streams busy on it with the request mix of
soak_traffic.py. Does not own the mix or the tally.

Invariants: a stream that times out is reset; a connection that dies fails
every open stream with a classified error; the worker closes its connection
before it returns, and its loops are bounded like every soak loop.
"""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass, field

import h2.config
import h2.connection
import h2.events
import h2.exceptions

from harness.soak_traffic import HOST, MIX, Failure, Run, classify, close_writer


@dataclass
class _Stream:
    done: asyncio.Future
    status: int = 0
    body: bytearray = field(default_factory=bytearray)


class H2Client:
    """One client connection; `request` may be awaited by many tasks at once."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, scheme: str):
        self.reader, self.writer, self.scheme = reader, writer, scheme
        self.conn = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
        self.streams: dict[int, _Stream] = {}
        self.dead: Failure | None = None
        self.conn.initiate_connection()
        self._flush()
        self.reader_task = asyncio.create_task(self._read_loop())

    def _flush(self) -> None:
        data = self.conn.data_to_send()
        if data and not self.writer.is_closing():
            self.writer.write(data)

    def _fail_all(self, failure: Failure) -> None:
        self.dead = self.dead or failure
        for st in self.streams.values():
            if not st.done.done():
                st.done.set_exception(failure)

    async def _read_loop(self) -> None:
        try:
            while True:
                data = await self.reader.read(65536)
                if not data:
                    self._fail_all(Failure("closed_early"))
                    return
                for ev in self.conn.receive_data(data):
                    self._on_event(ev)
                self._flush()
        except Exception as e:  # noqa: BLE001 (a dead connection fails its streams, classified)
            self._fail_all(Failure(classify(e)))

    def _on_event(self, ev) -> None:
        st = self.streams.get(getattr(ev, "stream_id", 0) or 0)
        if isinstance(ev, h2.events.ResponseReceived) and st:
            st.status = int(dict(ev.headers).get(":status", "0"))
        elif isinstance(ev, h2.events.DataReceived):
            if st:
                st.body += ev.data
            # Give the window back at once: this client reads as fast as it can.
            self.conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
        elif isinstance(ev, h2.events.StreamEnded) and st and not st.done.done():
            st.done.set_result(None)
        elif isinstance(ev, h2.events.StreamReset) and st and not st.done.done():
            st.done.set_exception(Failure(f"h2_rst_{getattr(ev.error_code, 'name', ev.error_code)}".lower()))
        elif isinstance(ev, h2.events.ConnectionTerminated):
            self._fail_all(Failure(f"h2_goaway_{getattr(ev.error_code, 'name', ev.error_code)}".lower()))

    async def request(self, method: str, path: str, body: bytes, timeout: float) -> tuple[int, bytes]:
        if self.dead:
            raise self.dead
        sid = self.conn.get_next_available_stream_id()
        headers = [(":method", method), (":path", path), (":scheme", self.scheme),
                   (":authority", "localhost"), ("user-agent", "tandem-soak")]
        if body:
            headers.append(("content-length", str(len(body))))
        st = _Stream(asyncio.get_running_loop().create_future())
        self.streams[sid] = st
        try:
            self.conn.send_headers(sid, headers, end_stream=not body)
            if body:  # small bodies only: they fit the initial 64 KiB window
                self.conn.send_data(sid, body, end_stream=True)
            self._flush()
            await self.writer.drain()
            await asyncio.wait_for(asyncio.shield(st.done), timeout)
            return st.status, bytes(st.body)
        except asyncio.TimeoutError:
            try:
                self.conn.reset_stream(sid)
                self._flush()
            except h2.exceptions.ProtocolError:
                pass
            raise
        finally:
            self.streams.pop(sid, None)
            if st.done.done() and not st.done.cancelled():
                st.done.exception()  # retrieved: no "exception never retrieved" warning

    async def close(self) -> None:
        if not self.dead:
            try:
                self.conn.close_connection()
                self._flush()
            except h2.exceptions.ProtocolError:
                pass
        self.reader_task.cancel()
        try:
            await self.reader_task
        except (asyncio.CancelledError, Exception):  # noqa: BLE001 (already counted)
            pass
        await close_writer(self.writer)


async def _open(port: int, ctx: ssl.SSLContext | None) -> H2Client:
    if ctx is None:
        reader, writer = await asyncio.open_connection(HOST, port)
        return H2Client(reader, writer, "http")
    reader, writer = await asyncio.open_connection(HOST, port, ssl=ctx, server_hostname="localhost")
    alpn = writer.get_extra_info("ssl_object").selected_alpn_protocol()
    if alpn != "h2":
        await close_writer(writer)
        raise Failure(f"alpn_{alpn}")
    return H2Client(reader, writer, "https")


async def h2_worker(run: Run, kind: str, port: int, ctx: ssl.SSLContext | None, streams: int,
                    per_connection: int, think: float) -> None:
    """`streams` concurrent request loops on one connection; a new connection every `per_connection` requests."""
    count = [0]

    async def stream_loop(client: H2Client, start: int) -> None:
        n = start
        while run.active(count[0]) and not client.dead and count[0] < connection_end:
            req = MIX[n % len(MIX)]
            n += 1
            count[0] += 1
            try:
                status, body = await client.request(req.method, req.path, req.body, run.request_timeout)
                req.verify(status, body)
                run.tally.success(kind)
            except Exception as e:  # noqa: BLE001 (every failure is counted by type)
                run.tally.error(kind, e)
                await run.pause(0.05)
            await run.pause(think)

    while run.active(count[0]):
        connection_end = count[0] + per_connection
        try:
            client = await asyncio.wait_for(_open(port, ctx), run.request_timeout)
        except Exception as e:  # noqa: BLE001
            run.tally.error(kind, e)
            count[0] += 1
            await run.pause(0.2)
            continue
        try:
            await asyncio.gather(*(stream_loop(client, s) for s in range(streams)))
        finally:
            await client.close()
