"""The HTTP front door (``server.api.http_protocol``) under a real uvicorn on a loopback socket, with a tiny ASGI app:
head size cap (431), head deadline (slowloris), body stall timeout, connection cap. Every wait is bounded."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
import uvicorn
from starlette.types import Receive, Scope, Send
from uvicorn.server import ServerState

from server.api.http_protocol import HttpLimits, limited_h11

LIMIT_S = 20  # no test may take longer than this, whatever breaks


@dataclass
class Recorder:
    disconnected: asyncio.Event = field(default_factory=asyncio.Event)
    app_delay_s: float = 0.0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                self.disconnected.set()
                return
            size += len(message.get("body", b""))
            if not message.get("more_body", False):
                break
        if self.app_delay_s:
            await asyncio.sleep(self.app_delay_s)  # the application's own time: never a read timeout
        body = str(size).encode()
        headers = [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})


@dataclass
class Served:
    port: int
    app: Recorder

    async def connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection("127.0.0.1", self.port)


@contextlib.asynccontextmanager
async def serve(limits: HttpLimits, app: Recorder | None = None) -> AsyncIterator[Served]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)  # listening before uvicorn starts: a client may connect at once, the backlog holds it
    app = app or Recorder()
    config = uvicorn.Config(app, http=limited_h11(limits), lifespan="off", log_level="warning", ws="none")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        yield Served(sock.getsockname()[1], app)
    finally:
        server.should_exit = True
        async with asyncio.timeout(10):
            await task
        sock.close()


async def read_all(reader: asyncio.StreamReader) -> bytes:
    """Everything until the server closes; a reset after the server's answer counts as the close."""
    data = b""
    with contextlib.suppress(ConnectionResetError):
        while chunk := await reader.read(65536):
            data += chunk
    return data


def status_of(response: bytes) -> int:
    return int(response.split(b" ", 2)[1]) if response.startswith(b"HTTP/1.1 ") else 0


def error_code(response: bytes) -> str:
    return str(json.loads(response.split(b"\r\n\r\n", 1)[1])["error"]["code"])


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """One response on a kept-alive connection: its status and body (by Content-Length)."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(
        int(line.split(b":")[1]) for line in head.lower().split(b"\r\n") if line.startswith(b"content-length")
    )
    return status_of(head), await reader.readexactly(length)


def get(path: str = "/", extra: bytes = b"") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: t\r\n".encode() + extra + b"\r\n"


async def test_a_head_over_the_cap_gets_431() -> None:
    async with asyncio.timeout(LIMIT_S), serve(HttpLimits(max_header_bytes=4096)) as served:
        reader, writer = await served.connect()
        writer.write(get(extra=b"X-Big: " + b"a" * 5000 + b"\r\n"))  # one small write: read whole, so no reset
        response = await read_all(reader)
        assert status_of(response) == 431 and error_code(response) == "request_header_fields_too_large"
        assert b"limit of 4096 bytes" in response
        writer.close()

        reader, writer = await served.connect()  # under the cap: served
        writer.write(get(extra=b"X-Fine: " + b"a" * 3000 + b"\r\n"))
        assert (await read_response(reader))[0] == 200
        writer.close()


async def test_a_200_kb_head_is_refused_without_buffering_it() -> None:
    async with asyncio.timeout(LIMIT_S), serve(HttpLimits(max_header_bytes=32 * 1024)) as served:
        reader, writer = await served.connect()
        writer.write(get(extra=b"X-Big: " + b"a" * 200_000 + b"\r\n"))
        with contextlib.suppress(ConnectionResetError):
            await writer.drain()
        response = await read_all(reader)
        # The server refuses after its first read past 32 KB; what it had not read yet may reset the connection
        # before the 431 arrives. Either way: refused, closed, never served.
        assert response == b"" or status_of(response) == 431
        writer.close()


async def test_a_slow_head_is_cut_at_the_deadline() -> None:
    async with asyncio.timeout(LIMIT_S), serve(HttpLimits(header_timeout_s=1.0)) as served:
        reader, writer = await served.connect()
        start = time.monotonic()

        async def drip() -> None:  # slowloris: a byte every 0.2 s, never finishing the head
            with contextlib.suppress(ConnectionError):
                writer.write(b"GET / HTTP/1.1\r\nHost: t\r\nX-Slow: ")
                while True:
                    writer.write(b"a")
                    await writer.drain()
                    await asyncio.sleep(0.2)

        dripping = asyncio.create_task(drip())
        response = await read_all(reader)
        elapsed = time.monotonic() - start
        dripping.cancel()
        assert 0.9 <= elapsed < 5, elapsed  # a deadline for the whole head: the drip does not extend it
        assert response == b"" or (status_of(response) == 408 and error_code(response) == "request_header_timeout")
        writer.close()


async def test_a_silent_connection_is_closed_at_the_head_deadline() -> None:
    async with asyncio.timeout(LIMIT_S), serve(HttpLimits(header_timeout_s=0.5)) as served:
        reader, writer = await served.connect()
        start = time.monotonic()
        response = await read_all(reader)
        assert 0.4 <= time.monotonic() - start < 5
        assert response == b""  # nothing asked, nothing answered: closed quietly
        writer.close()


async def test_a_stalled_body_closes_the_connection_and_the_app_sees_a_disconnect() -> None:
    async with asyncio.timeout(LIMIT_S), serve(HttpLimits(body_timeout_s=0.5)) as served:
        reader, writer = await served.connect()
        start = time.monotonic()
        writer.write(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n" + b"x" * 10)
        assert await read_all(reader) == b""  # closed: no response can be sent in the middle of a request
        assert 0.4 <= time.monotonic() - start < 5
        async with asyncio.timeout(5):
            await served.app.disconnected.wait()
        writer.close()


async def test_a_slow_but_steady_body_and_a_slow_app_are_served() -> None:
    limits = HttpLimits(header_timeout_s=0.6, body_timeout_s=0.6)
    async with asyncio.timeout(LIMIT_S), serve(limits, Recorder(app_delay_s=1.0)) as served:
        reader, writer = await served.connect()
        writer.write(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 50\r\n\r\n")
        for _ in range(5):  # 1.2 s for the body in all, never 0.6 s without a byte
            writer.write(b"x" * 10)
            await writer.drain()
            await asyncio.sleep(0.3)
        assert await read_response(reader) == (200, b"50")  # after the app's 1 s: its time is not a read timeout

        await asyncio.sleep(0.4)  # kept alive: the next head's deadline starts at its first byte, not before
        writer.write(get())
        assert (await read_response(reader))[0] == 200
        writer.close()


async def test_connections_beyond_the_cap_get_503_and_are_closed() -> None:
    async with asyncio.timeout(LIMIT_S), serve(HttpLimits(max_connections=2)) as served:
        held = []
        for _ in range(2):
            reader, writer = await served.connect()
            writer.write(get())
            assert (await read_response(reader))[0] == 200  # served: both are open and counted
            held.append((reader, writer))
        reader, writer = await served.connect()
        response = await read_all(reader)
        assert status_of(response) == 503 and error_code(response) == "too_many_connections"
        writer.close()

        reader, writer = held[0]  # the kept connections still work
        writer.write(get())
        assert (await read_response(reader))[0] == 200
        for reader, writer in held:
            writer.close()
            await writer.wait_closed()
            await read_all(reader)

        while True:  # the server sees the closes on a later loop turn; until then a new connection gets a 503
            reader, writer = await served.connect()
            writer.write(get(extra=b"Connection: close\r\n"))
            status = status_of(await read_all(reader))
            writer.close()
            if status == 200:
                break
            assert status == 503
            await asyncio.sleep(0.05)


class FakeTransport(asyncio.Transport):
    """Just enough transport for the protocol: what it writes, and whether it closed."""

    def __init__(self) -> None:
        super().__init__()
        self.written = b""
        self.closed = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += bytes(data)

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name: str, default: object = None) -> object:
        return {"peername": ("127.0.0.1", 50000), "sockname": ("127.0.0.1", 8000)}.get(name, default)

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def _head(size: int, newline: bytes) -> bytes:
    start = b"GET / HTTP/1.1" + newline + b"Host: t" + newline + b"X-Pad: "
    end = newline + newline
    return start + b"a" * (size - len(start) - len(end)) + end


@pytest.mark.parametrize("newline", [b"\r\n", b"\n"])
async def test_the_head_cap_holds_wherever_the_reads_split_the_head(newline: bytes) -> None:
    limit = 100
    server_state = ServerState()
    config = uvicorn.Config(Recorder(), http=limited_h11(HttpLimits(max_header_bytes=limit)), lifespan="off")
    config.load()
    for size, refused in ((limit, False), (limit + 1, True)):
        head = _head(size, newline) + b"NEXT"  # what follows the head (a body, a pipelined request) is not counted
        for cut in range(1, len(head)):
            protocol = config.http_protocol_class(config=config, server_state=server_state, app_state={})
            transport = FakeTransport()
            protocol.connection_made(transport)
            protocol.data_received(head[:cut])
            if not transport.closed:
                protocol.data_received(head[cut:])
            assert transport.written.startswith(b"HTTP/1.1 431") == refused, (size, cut)
            protocol.connection_lost(None)
        await asyncio.sleep(0)  # let the served requests' tasks run to their end
