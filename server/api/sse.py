"""Server-sent events for streamed completions.

Once the first byte is sent no exception handler can change the response (Starlette's ``_exception_handler.py`` explains
why), so an error mid-stream becomes a final ``error`` event in the OpenAI error format, followed by ``[DONE]``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, TypeVar

from pydantic import BaseModel

from server.api.context import current_request_id
from server.errors import ServerError

logger = logging.getLogger(__name__)

DONE = b"data: [DONE]\n\n"
B = TypeVar("B")


def event(payload: BaseModel) -> bytes:
    return b"data: " + payload.model_dump_json().encode() + b"\n\n"


async def _framed(
    batches: AsyncIterator[B],
    frame: Callable[[B], bytes],
    end: Callable[[ServerError | None], bytes],
    on_error: Callable[[ServerError], None] | None,
) -> AsyncIterator[bytes]:
    """Each batch framed as one body message (one write); then what ``end`` makes of how the stream ended (a failure
    after the stream started becomes part of the stream: its headers have left)."""
    error: ServerError | None = None
    try:
        async for batch in batches:
            yield frame(batch)
    except ServerError as exc:
        logger.info("stream ended with an error: %s", exc.code)
        error = exc
    except Exception:
        logger.exception("stream failed")
        error = ServerError("the server hit an unexpected error")
    if error is not None and on_error is not None:
        on_error(error)
    tail = end(error)
    if tail:
        yield tail


def encode(
    batches: AsyncIterator[Sequence[BaseModel]], on_error: Callable[[ServerError], None] | None = None
) -> AsyncIterator[bytes]:
    """Chat and text completions: ``data: <chunk>`` per chunk, an error event if the stream failed, and ``[DONE]``."""

    def frame(batch: Sequence[BaseModel]) -> bytes:
        return event(batch[0]) if len(batch) == 1 else b"".join(map(event, batch))

    def end(error: ServerError | None) -> bytes:
        return (b"" if error is None else _error_event(error)) + DONE

    return _framed(batches, frame, end, on_error)


def _error_event(exc: ServerError) -> bytes:
    body = exc.to_dict()
    body["error"]["request_id"] = current_request_id()
    return b"data: " + json.dumps(body).encode() + b"\n\n"


def encode_events(
    batches: AsyncIterator[Sequence[Sequence[dict[str, Any]]]],
    failed: Callable[[dict[str, Any]], Sequence[dict[str, Any]]],
    on_error: Callable[[ServerError], None] | None = None,
) -> AsyncIterator[bytes]:
    """The Responses API's stream (batches of chunks, each chunk a list of events): ``event: <type>`` and
    ``data: <json>`` per event; a failure after the stream started ends it with the events ``failed`` makes of the
    error (``error``, ``response.failed``). No ``[DONE]``: the Responses API ends with its last event."""

    def frame(batch: Sequence[Sequence[dict[str, Any]]]) -> bytes:
        return b"".join(_named_event(item) for chunk in batch for item in chunk)

    def end(error: ServerError | None) -> bytes:
        return b"" if error is None else b"".join(_named_event(item) for item in failed(error.to_dict()["error"]))

    return _framed(batches, frame, end, on_error)


def _named_event(payload: dict[str, Any]) -> bytes:
    return f"event: {payload['type']}\ndata: ".encode() + json.dumps(payload).encode() + b"\n\n"
