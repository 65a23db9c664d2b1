from __future__ import annotations

import base64
from collections.abc import AsyncIterator

import httpx
import pytest

from server.errors import MediaDecodeError, MediaFetchError, MediaTooLargeError
from server.media.fetch import decode_data_url, fetch_url

PARAM = "messages[0].content[0].image_url.url"


def _client(handler: httpx.MockTransport) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=handler, follow_redirects=True, max_redirects=3)


def test_data_url_roundtrip() -> None:
    payload = b"\x89PNG\r\n\x1a\n" + b"x" * 100
    url = "data:image/png;base64," + base64.b64encode(payload).decode()
    assert decode_data_url(url, max_bytes=1000, param=PARAM) == payload


def test_data_url_over_cap_is_refused_before_decoding() -> None:
    url = "data:image/png;base64," + "A" * 10_000
    with pytest.raises(MediaTooLargeError) as info:
        decode_data_url(url, max_bytes=1000, param=PARAM)
    assert info.value.param == PARAM
    assert "1000 bytes" in info.value.message


@pytest.mark.parametrize(
    "url",
    [
        "data:image/png;base64",
        "data:image/png,rawtext",
        "data:image/png;base64,!!!notbase64$$$",
        "data:image/png;base64,",
    ],
)
def test_bad_data_urls(url: str) -> None:
    with pytest.raises(MediaDecodeError):
        decode_data_url(url, max_bytes=1000, param=PARAM)


async def test_http_fetch_ok() -> None:
    async with _client(httpx.MockTransport(lambda r: httpx.Response(200, content=b"abc"))) as client:
        assert await fetch_url(client, "http://media.example/a.png", max_bytes=10, timeout_s=5, param=PARAM) == b"abc"


async def test_http_error_status_is_a_400_class_error() -> None:
    async with _client(httpx.MockTransport(lambda r: httpx.Response(404))) as client:
        with pytest.raises(MediaFetchError) as info:
            await fetch_url(client, "http://media.example/a.png", max_bytes=10, timeout_s=5, param=PARAM)
    assert info.value.status_code == 400
    assert "HTTP 404" in info.value.message


async def test_body_cap_enforced_while_streaming_even_without_content_length() -> None:
    async def body() -> AsyncIterator[bytes]:
        yield b"x" * 8
        yield b"x" * 8

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=body())  # streamed: no Content-Length

    async with _client(httpx.MockTransport(handler)) as client:
        with pytest.raises(MediaTooLargeError):
            await fetch_url(client, "http://media.example/big", max_bytes=10, timeout_s=5, param=PARAM)


async def test_lying_content_length_refused_up_front() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"content-length": "999999"}, content=b"x")

    async with _client(httpx.MockTransport(handler)) as client:
        with pytest.raises(MediaTooLargeError):
            await fetch_url(client, "http://media.example/big", max_bytes=10, timeout_s=5, param=PARAM)


async def test_connect_error_is_a_fetch_error() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    async with _client(httpx.MockTransport(handler)) as client:
        with pytest.raises(MediaFetchError) as info:
            await fetch_url(client, "http://media.example/a.png", max_bytes=10, timeout_s=5, param=PARAM)
    assert "could not connect" in info.value.message


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://host/a.png", "gopher://x", "/relative/path.png"])
async def test_other_schemes_refused(url: str) -> None:
    async with _client(httpx.MockTransport(lambda r: httpx.Response(200, content=b"abc"))) as client:
        with pytest.raises(MediaFetchError) as info:
            await fetch_url(client, url, max_bytes=10, timeout_s=5, param=PARAM)
    assert "not allowed" in info.value.message


async def test_total_deadline() -> None:
    import asyncio

    async def slow_body() -> AsyncIterator[bytes]:
        yield b"x"
        await asyncio.sleep(5)
        yield b"y"

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=slow_body())

    async with _client(httpx.MockTransport(handler)) as client:
        with pytest.raises(MediaFetchError) as info:
            await fetch_url(client, "http://media.example/slow", max_bytes=10, timeout_s=0.2, param=PARAM)
    assert "longer than 0.2 s" in info.value.message
