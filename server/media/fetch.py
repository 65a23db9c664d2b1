"""Getting media bytes from a ``data:`` URL or over http(s), with a byte cap and a total deadline.

This is the plain fetcher: schemes are restricted and sizes capped while streaming, but address filtering (SSRF
protection) is the media-hardening stage's job.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
from urllib.parse import urlsplit

import httpx

from server.errors import MediaDecodeError, MediaFetchError, MediaTooLargeError

logger = logging.getLogger(__name__)

MAX_REDIRECTS = 3


def decode_data_url(url: str, *, max_bytes: int, param: str) -> bytes:
    """Decode ``data:[<type>][;base64],<payload>``; the encoded size is checked before anything is decoded."""
    header, sep, payload = url.partition(",")
    if not sep:
        raise MediaDecodeError(f"{param} is not a valid data URL (no ',' after the header)", param=param)
    if not header.endswith(";base64"):
        raise MediaDecodeError(f"{param}: only base64 data URLs are supported", param=param)
    # 4 encoded characters carry 3 bytes; allow for padding and line breaks before refusing.
    if len(payload) > (max_bytes * 4) // 3 + 8 + len(payload) // 76:
        raise MediaTooLargeError(f"{param} is larger than the limit of {max_bytes} bytes", param=param)
    try:
        data = base64.b64decode(payload, validate=False)
    except (binascii.Error, ValueError) as exc:
        raise MediaDecodeError(f"{param} is not valid base64", param=param) from exc
    if len(data) > max_bytes:
        raise MediaTooLargeError(f"{param} is larger than the limit of {max_bytes} bytes", param=param)
    if not data:
        raise MediaDecodeError(f"{param} is empty", param=param)
    return data


async def fetch_url(client: httpx.AsyncClient, url: str, *, max_bytes: int, timeout_s: float, param: str) -> bytes:
    """GET ``url`` within ``timeout_s`` seconds in total, refusing bodies over ``max_bytes`` while they stream."""
    scheme = urlsplit(url).scheme.lower()
    if scheme == "data":
        return decode_data_url(url, max_bytes=max_bytes, param=param)
    if scheme not in ("http", "https"):
        raise MediaFetchError(
            f"{param}: URL scheme '{scheme or '(none)'}' is not allowed; use http, https or data", param=param
        )
    try:
        async with asyncio.timeout(timeout_s):
            return await _get(client, url, max_bytes=max_bytes, param=param)
    except TimeoutError as exc:
        raise MediaFetchError(f"{param}: fetching the media took longer than {timeout_s:g} s", param=param) from exc
    except httpx.TooManyRedirects as exc:
        raise MediaFetchError(f"{param}: more than {MAX_REDIRECTS} redirects", param=param) from exc
    except httpx.InvalidURL as exc:
        raise MediaFetchError(f"{param}: the URL is not valid", param=param) from exc
    except httpx.ConnectError as exc:
        raise MediaFetchError(f"{param}: could not connect to the media host", param=param) from exc
    except httpx.HTTPError as exc:
        raise MediaFetchError(f"{param}: fetching the media failed ({type(exc).__name__})", param=param) from exc


async def _get(client: httpx.AsyncClient, url: str, *, max_bytes: int, param: str) -> bytes:
    async with client.stream("GET", url) as response:
        if response.status_code != 200:
            raise MediaFetchError(f"{param}: the media host answered HTTP {response.status_code}", param=param)
        declared = response.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > max_bytes:
            raise MediaTooLargeError(f"{param} is larger than the limit of {max_bytes} bytes", param=param)
        chunks: list[bytes] = []
        size = 0
        async for chunk in response.aiter_bytes():
            size += len(chunk)
            if size > max_bytes:
                raise MediaTooLargeError(f"{param} is larger than the limit of {max_bytes} bytes", param=param)
            chunks.append(chunk)
    if size == 0:
        raise MediaDecodeError(f"{param}: the media host sent an empty body", param=param)
    return b"".join(chunks)


def make_client() -> httpx.AsyncClient:
    return httpx.AsyncClient(follow_redirects=True, max_redirects=MAX_REDIRECTS, trust_env=False)
