"""The decode workers' message framing: a 4-byte big-endian length, then a JSON object (at most ``MAX_MESSAGE`` bytes).

JSON, never pickle: a worker decodes hostile bytes, so whatever it says back is parsed as plain data and checked by the
API process (a compromised worker must not be able to run code in the server by answering). Pixels do not travel here;
they go through the worker's shared-memory buffers.
"""

from __future__ import annotations

import json
import os
import struct
from typing import Any

MAX_MESSAGE = 64 * 1024
_LENGTH = struct.Struct(">I")


class WireError(Exception):
    """The peer broke the protocol (closed, oversized or malformed message)."""


def encode(message: dict[str, Any]) -> bytes:
    body = json.dumps(message, separators=(",", ":")).encode()
    if len(body) > MAX_MESSAGE:
        raise WireError("message too large")
    return _LENGTH.pack(len(body)) + body


def decode(body: bytes) -> dict[str, Any]:
    try:
        message = json.loads(body)
    except ValueError as exc:
        raise WireError("malformed message") from exc
    if not isinstance(message, dict):
        raise WireError("malformed message")
    return message


def length(prefix: bytes) -> int:
    (size,) = _LENGTH.unpack(prefix)
    if size > MAX_MESSAGE:
        raise WireError("message too large")
    return int(size)


# --- the worker's blocking side ----------------------------------------------------------------------------------


def send(fd: int, message: dict[str, Any]) -> None:
    data = memoryview(encode(message))
    while data:
        written = os.write(fd, data)
        data = data[written:]


def receive(fd: int) -> dict[str, Any]:
    return decode(_read_exactly(fd, length(_read_exactly(fd, _LENGTH.size))))


def _read_exactly(fd: int, size: int) -> bytes:
    chunks: list[bytes] = []
    while size:
        chunk = os.read(fd, size)
        if not chunk:
            raise WireError("closed")
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)
