"""What the generating routes share: hand the API's job to the runner, and answer with the whole answer or its SSE
stream. The request deadline, cancelling on disconnect and the response headers are decided here, once.

A client that disconnects cancels its work, streaming or not, whether it is waiting for admission, fetching media or
generating: the engine request is aborted. ``X-Request-Timeout`` (seconds) may shorten the server's deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any, Protocol, TypeVar

from fastapi import Request, Response
from fastapi.responses import StreamingResponse
from starlette.background import BackgroundTask

from server.api import sse
from server.api.state import AppState
from server.errors import ClientDisconnectedError, InvalidRequestError
from server.service.jobs import Job
from server.service.runner import GenerationRunner
from server.service.timing import Timings

logger = logging.getLogger(__name__)
T = TypeVar("T")
TIMEOUT_HEADER = "x-request-timeout"


def request_timeout(request: Request, limit: float | None) -> float | None:
    raw = request.headers.get(TIMEOUT_HEADER)
    if raw is None:
        return limit
    try:
        asked = float(raw)
    except ValueError:
        asked = -1.0
    if not asked > 0:
        raise InvalidRequestError(f"{TIMEOUT_HEADER} must be a positive number of seconds", param=TIMEOUT_HEADER)
    return asked if limit is None else min(asked, limit)


async def _disconnected(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def until_disconnected(request: Request, work: Coroutine[Any, Any, T]) -> T:
    """Run ``work`` unless the client leaves first; then cancel it (which aborts the engine request)."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            return task.result()
        task.cancel()
        with contextlib.suppress(BaseException):
            await task
        raise ClientDisconnectedError("the client closed the connection")
    finally:
        watcher.cancel()
        if not task.done():
            task.cancel()


class Streamable(Protocol):
    """What ``respond`` reads of a request body."""

    @property
    def stream(self) -> bool: ...

    @property
    def ignored_fields(self) -> list[str]: ...


async def respond(
    request: Request,
    response: Response,
    state: AppState,
    runner: GenerationRunner,
    body: Streamable,
    job: Job[Any, T],
    encode: Callable[[AsyncIterator[Any]], AsyncIterator[bytes]] | None = None,
) -> T | StreamingResponse:
    """A generating route: the whole answer (with its Server-Timing), or server-sent events of chunks. Both are the
    runner's one stream of the job; a stream starts (first token) before its headers leave, so early errors are plain
    HTTP errors."""
    if body.ignored_fields:
        logger.info("ignored unknown request fields: %s", ", ".join(name[:64] for name in body.ignored_fields[:20]))
    timeout = request_timeout(request, state.settings.request_timeout)
    timings = Timings()
    request.state.timings = timings  # read by the access log
    if not body.stream:
        answer = await until_disconnected(request, runner.collect(job, timeout, timings))
        response.headers["Server-Timing"] = timings.server_timing()
        return answer
    run = await until_disconnected(request, runner.start(job, timeout, timings))
    body_bytes = (
        sse.encode(run.batches(), on_error=state.metrics.count_error) if encode is None else encode(run.batches())
    )
    return StreamingResponse(
        body_bytes,
        media_type="text/event-stream",
        # A stream's headers leave with its first token: queue, media and ttft are known, the total is not yet.
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no", "Server-Timing": timings.server_timing()},
        background=BackgroundTask(run.aclose),
    )
