"""Bounded transfers: the fetcher asks for identity, counts wire bytes, and refuses content-encoded bodies unread."""

from __future__ import annotations

import gzip
import tracemalloc
import zlib
from collections.abc import AsyncIterator

import httpx
import pytest

from server.errors import MediaFetchError, MediaTooLargeError
from server.media.fetch import Fetcher, FetchPolicy, make_client
from server.media.netguard import IPAddress, parse_ip

PARAM = "messages[0].content[0].image_url"
URL = "http://media.test/a.png"
MiB = 1024 * 1024


async def _resolve(host: str, port: int) -> list[IPAddress]:
    ip = parse_ip("93.184.216.34")
    assert ip is not None
    return [ip]


def _fetcher(transport: httpx.MockTransport) -> Fetcher:
    return Fetcher(FetchPolicy(resolver=_resolve), httpx.AsyncClient(transport=transport, follow_redirects=False))


async def _get(f: Fetcher, max_bytes: int = 20 * MiB) -> bytes:
    return await f.fetch(URL, max_bytes=max_bytes, timeout_s=10, param=PARAM)


@pytest.fixture(scope="module")
def bomb() -> bytes:
    """128 MiB of zeros, gzipped twice: a few hundred bytes on the wire (``Content-Encoding: gzip, gzip``)."""
    inner = zlib.compressobj(9, zlib.DEFLATED, 31)  # wbits 31: a gzip stream, built 1 MiB at a time
    block = bytes(MiB)
    once = b"".join(inner.compress(block) for _ in range(128)) + inner.flush()
    twice = gzip.compress(once, 9)
    assert len(twice) < 4096
    return twice


class _Recorder:
    """A response body stream that notes how much of it was read."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.read = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for start in range(0, len(self.data), 64):
            chunk = self.data[start : start + 64]
            self.read += len(chunk)
            yield chunk


async def test_requests_ask_for_identity() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, content=b"abc")

    assert await _get(_fetcher(httpx.MockTransport(handler))) == b"abc"
    assert seen[0].headers["accept-encoding"] == "identity"
    client = make_client()
    try:
        assert client.headers["accept-encoding"] == "identity"
    finally:
        await client.aclose()


@pytest.mark.parametrize("encoding", ["gzip, gzip", "gzip", "br", "deflate", "zstd", "identity, gzip", "x-unknown"])
async def test_content_encoded_bodies_are_refused_unread(bomb: bytes, encoding: str) -> None:
    body = _Recorder(bomb)
    transport = httpx.MockTransport(lambda r: httpx.Response(200, headers={"content-encoding": encoding}, content=body))
    tracemalloc.start()
    try:
        with pytest.raises(MediaFetchError) as info:
            await _get(_fetcher(transport))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert info.value.status_code == 400 and info.value.param == PARAM
    assert info.value.message == (
        f"{PARAM}: the media host sent a content-encoded (compressed) body although the server asked for none"
    )
    assert body.read == 0  # refused from the headers: not one byte read, nothing inflated
    assert peak < 8 * MiB  # the bomb holds 128 MiB once inflated


@pytest.mark.parametrize("headers", [{}, {"content-encoding": "identity"}, {"content-encoding": "Identity"}])
async def test_identity_bodies_pass(headers: dict[str, str]) -> None:
    transport = httpx.MockTransport(lambda r: httpx.Response(200, headers=headers, content=b"\x89PNG-bytes"))
    assert await _get(_fetcher(transport)) == b"\x89PNG-bytes"


async def test_the_cap_counts_wire_bytes_even_when_a_lying_host_gzips_an_allowed_body(bomb: bytes) -> None:
    # No Content-Encoding header, gzip bytes anyway: they are taken as they are (the decoder refuses them later),
    # never inflated here, and counted as they arrive.
    async def chunks() -> AsyncIterator[bytes]:
        yield bomb
        yield b"\0" * 200

    transport = httpx.MockTransport(lambda r: httpx.Response(200, content=chunks()))
    with pytest.raises(MediaTooLargeError) as info:
        await _get(_fetcher(transport), max_bytes=len(bomb) + 100)
    assert f"limit of {len(bomb) + 100} bytes" in info.value.message
    data = await _get(_fetcher(httpx.MockTransport(lambda r: httpx.Response(200, content=bomb))))
    assert data == bomb  # as sent: not inflated


async def test_chunked_transfer_is_counted_against_the_cap() -> None:
    async def body() -> AsyncIterator[bytes]:
        for _ in range(10):
            yield b"x" * 1000

    transport = httpx.MockTransport(
        lambda r: httpx.Response(200, headers={"transfer-encoding": "chunked"}, content=body())
    )
    with pytest.raises(MediaTooLargeError):
        await _get(_fetcher(transport), max_bytes=5000)
