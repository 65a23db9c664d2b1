"""What the routes need from the running app, and FastAPI dependency aliases to reach it."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Request

from server.api.metrics import GatewayMetrics
from server.config import Settings
from server.engine.base import Engine
from server.errors import EngineUnavailableError
from server.service.admission import Admission
from server.service.batch_store import BatchStore
from server.service.batches import BatchWorker
from server.service.chat import ChatService
from server.service.completions import CompletionService
from server.service.fleet import Phase, Seat
from server.service.response_store import ResponseStore
from server.service.runner import GenerationRunner


@dataclass
class AppState:
    settings: Settings
    metrics: GatewayMetrics
    engine: Engine | None = None
    chat: ChatService | None = None
    completions: CompletionService | None = None
    runner: GenerationRunner | None = None
    admission: Admission | None = None
    ready: bool = False
    draining: bool = False
    starting: bool = True
    start_error: str | None = None
    # Set by the watchdog once it condemns the engine (dead or wedged): the probes say so until the process exits.
    engine_failure: str | None = None
    started_at: float = field(default_factory=time.time)
    # Set by the process runner (__main__): ask the server to stop with an exit code (engine death → non-zero).
    request_exit: Callable[[int], None] = field(default=lambda code: None)
    exit_code: int = 0
    # With --api-workers N: this process's place among the N (the probes answer for all of them).
    seat: Seat | None = None
    # Stored responses (None with --no-responses-store); opened by the lifespan before the first request.
    responses_store: ResponseStore | None = None
    # Files and batches (None with --no-batches), and this process's worker running batch lines.
    batch_store: BatchStore | None = None
    batch_worker: BatchWorker | None = None

    def set_phase(self, phase: Phase) -> None:
        if self.seat is not None:
            self.seat.set_phase(phase)

    @property
    def failed(self) -> bool:
        """The engine was condemned: by this process's watchdog, or (with several) by another's or the supervisor."""
        return self.engine_failure is not None or (self.seat is not None and self.seat.any_failed)

    @property
    def all_started(self) -> bool:
        return self.engine is not None and (self.seat is None or self.seat.all_started)

    @property
    def all_ready(self) -> bool:
        return self.ready and self.engine is not None and (self.seat is None or self.seat.all_ready)

    @property
    def busy(self) -> int:
        return 0 if self.admission is None else self.admission.running + self.admission.queued


# The dependencies are ``async def`` although they never await: FastAPI runs a plain ``def`` dependency on its thread
# pool, a thread hand-off each (three per generating request, one per /health probe) for a dictionary lookup.


async def get_state(request: Request) -> AppState:
    return _state(request)


def _state(request: Request) -> AppState:
    state: AppState = request.app.state.qwen3vl
    return state


async def get_chat(request: Request) -> ChatService:
    state = _state(request)
    if state.chat is None:
        raise EngineUnavailableError("the model is still loading; retry shortly")
    return state.chat


async def get_completions(request: Request) -> CompletionService:
    state = _state(request)
    if state.completions is None:
        raise EngineUnavailableError("the model is still loading; retry shortly")
    return state.completions


async def get_runner(request: Request) -> GenerationRunner:
    state = _state(request)
    if state.runner is None:
        raise EngineUnavailableError("the model is still loading; retry shortly")
    return state.runner


StateDep = Annotated[AppState, Depends(get_state)]
ChatDep = Annotated[ChatService, Depends(get_chat)]
CompletionsDep = Annotated[CompletionService, Depends(get_completions)]
RunnerDep = Annotated[GenerationRunner, Depends(get_runner)]
