"""Server-sent events for streamed completions.

Once the first byte is sent no exception handler can change the response (Starlette's ``_exception_handler.py`` explains
why), so an error mid-stream becomes a final ``error`` event in the OpenAI error format, followed by ``[DONE]``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from pydantic import BaseModel

from server.api.context import current_request_id
from server.errors import ServerError

logger = logging.getLogger(__name__)

DONE = b"data: [DONE]\n\n"


def event(payload: BaseModel) -> bytes:
    return b"data: " + payload.model_dump_json().encode() + b"\n\n"


async def encode(
    batches: AsyncIterator[Sequence[BaseModel]], on_error: Callable[[ServerError], None] | None = None
) -> AsyncIterator[bytes]:
    """One body message (one write) per batch of chunks known at once; then an error event if the stream failed, and
    ``[DONE]``."""
    error: ServerError | None = None
    try:
        async for batch in batches:
            yield event(batch[0]) if len(batch) == 1 else b"".join(map(event, batch))
    except ServerError as exc:
        logger.info("stream ended with an error: %s", exc.code)
        error = exc
    except Exception:
        logger.exception("stream failed")
        error = ServerError("the server hit an unexpected error")
    if error is not None:
        if on_error is not None:
            on_error(error)
        yield _error_event(error)
    yield DONE


def _error_event(exc: ServerError) -> bytes:
    body = exc.to_dict()
    body["error"]["request_id"] = current_request_id()
    return b"data: " + json.dumps(body).encode() + b"\n\n"


async def encode_events(
    batches: AsyncIterator[Sequence[Sequence[dict[str, Any]]]],
    failed: Callable[[dict[str, Any]], Sequence[dict[str, Any]]],
    on_error: Callable[[ServerError], None] | None = None,
) -> AsyncIterator[bytes]:
    """The Responses API's stream (batches of chunks, each chunk a list of events): ``event: <type>`` and
    ``data: <json>`` per event, one write per batch; a failure
    after the stream started ends it with the events ``failed`` makes of the error (``error``, ``response.failed``).
    No ``[DONE]``: the Responses API ends with its last event."""
    error: ServerError | None = None
    try:
        async for batch in batches:
            yield b"".join(_named_event(item) for chunk in batch for item in chunk)
    except ServerError as exc:
        logger.info("stream ended with an error: %s", exc.code)
        error = exc
    except Exception:
        logger.exception("stream failed")
        error = ServerError("the server hit an unexpected error")
    if error is not None:
        if on_error is not None:
            on_error(error)
        yield b"".join(_named_event(item) for item in failed(error.to_dict()["error"]))


def _named_event(payload: dict[str, Any]) -> bytes:
    return f"event: {payload['type']}\ndata: ".encode() + json.dumps(payload).encode() + b"\n\n"
