"""Server-sent events for streamed completions.

Once the first byte is sent no exception handler can change the response (Starlette's ``_exception_handler.py`` explains
why), so an error mid-stream becomes a final ``error`` event in the OpenAI error format, followed by ``[DONE]``.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from pydantic import BaseModel

from server.errors import ServerError

logger = logging.getLogger(__name__)

DONE = b"data: [DONE]\n\n"


def event(payload: BaseModel) -> bytes:
    return b"data: " + payload.model_dump_json().encode() + b"\n\n"


async def encode(items: AsyncIterator[BaseModel]) -> AsyncIterator[bytes]:
    try:
        async for item in items:
            yield event(item)
    except ServerError as exc:
        logger.info("stream ended with an error: %s", exc.code)
        yield _error_event(exc)
    except Exception:
        logger.exception("stream failed")
        yield _error_event(ServerError("the server hit an unexpected error"))
    yield DONE


def _error_event(exc: ServerError) -> bytes:
    import json

    return b"data: " + json.dumps(exc.to_dict()).encode() + b"\n\n"
