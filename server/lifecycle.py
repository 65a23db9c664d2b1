"""Graceful drain and the engine watchdog: how the server stops, cleanly or not.

Drain (SIGTERM): readiness turns 503 and new requests are refused at once; requests in flight may finish within
``--drain-timeout``; what is still running then is aborted (streams end with a final SSE error event, others with a JSON
error), requests still waiting for admission are refused; then the server stops and the process exits 0.

Watchdog: the engine's health is checked every ``interval_s``; once it is dead (or wedged), the verdict stands
(``state.engine_failure``: the probes say 503 and new requests are refused until the process exits), what is in flight is aborted as at the drain deadline (a dead engine has already failed its requests; a wedged one would leave
them waiting forever, so their streams get their final error event too), and the process is asked to exit non-zero so
the orchestrator restarts it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from server.api.state import AppState
from server.errors import EngineUnavailableError
from server.service.fleet import Phase

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
    aborted, refused = await _abort_everything(state, "the server is shutting down")
    logger.warning("drain deadline passed: aborted %d running and refused %d waiting requests", aborted, refused)
    await _settle(state, FLUSH_S)


async def _abort_everything(state: AppState, reason: str) -> tuple[int, int]:
    """Refuse the requests waiting for admission and abort the running ones (each gets its error: a stream its final
    SSE error event). The abort is bounded: an engine that cannot take it must not hold the server up."""
    refused = state.admission.reject_waiting(EngineUnavailableError(reason)) if state.admission else 0
    aborted = 0
    if state.engine is not None:
        with contextlib.suppress(Exception):
            aborted = await asyncio.wait_for(state.engine.abort_all(), FLUSH_S)
    return aborted, refused


async def watchdog(state: AppState, interval_s: float) -> None:
    while True:
        await asyncio.sleep(interval_s)
        if state.engine is None or state.draining:
            continue
        try:
            if state.seat is not None and state.seat.fleet.engine_dead:  # the supervisor saw its process exit
                raise EngineUnavailableError("the inference engine has stopped")
            await state.engine.check_health()
        except EngineUnavailableError as exc:
            logger.error("engine failure (%s): stopping with exit code 1", exc.message)
            state.exit_code = 1
            state.engine_failure = exc.message
            state.set_phase(Phase.FAILED)
            aborted, refused = await _abort_everything(state, "the inference engine has stopped")
            if aborted or refused:
                logger.warning("aborted %d running and refused %d waiting requests", aborted, refused)
                await _settle(state, FLUSH_S)
            state.request_exit(1)
            return
