"""Graceful drain and the engine watchdog: how the server stops, cleanly or not.

Drain (SIGTERM): readiness turns 503 and new requests are refused at once; requests in flight may finish within
``--drain-timeout``; what is still running then is aborted (streams end with a final SSE error event, others with a JSON
error), requests still waiting for admission are refused; then the server stops and the process exits 0.

Watchdog: the engine's health is checked every ``interval_s``; once it is dead (or wedged), in-flight requests have
already failed with errors, liveness says 503, and the process is asked to exit non-zero so the orchestrator restarts it.
"""

from __future__ import annotations

import asyncio
import logging

from server.api.state import AppState
from server.errors import EngineUnavailableError

logger = logging.getLogger(__name__)

FLUSH_S = 5.0  # after aborting, how long aborted requests get to send their final error


async def _settle(state: AppState, seconds: float) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while state.busy and loop.time() < deadline:  # noqa: ASYNC110 (polls counters owned by admission)
        await asyncio.sleep(0.05)


async def drain(state: AppState, timeout_s: float) -> None:
    state.draining = True
    logger.info("draining: %d requests in flight, up to %.0f s to finish", state.busy, timeout_s)
    await _settle(state, timeout_s)
    if not state.busy:
        logger.info("drained")
        return
    refused = (
        state.admission.reject_waiting(EngineUnavailableError("the server is shutting down")) if state.admission else 0
    )
    aborted = await state.engine.abort_all() if state.engine is not None else 0
    logger.warning("drain deadline passed: aborted %d running and refused %d waiting requests", aborted, refused)
    await _settle(state, FLUSH_S)


async def watchdog(state: AppState, interval_s: float) -> None:
    while True:
        await asyncio.sleep(interval_s)
        if state.engine is None or state.draining:
            continue
        try:
            await state.engine.check_health()
        except EngineUnavailableError as exc:
            logger.error("engine failure (%s): stopping with exit code 1", exc.message)
            state.exit_code = 1
            state.request_exit(1)
            return
