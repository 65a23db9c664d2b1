"""Running one job on the engine, whatever its API: one path for streaming and whole answers.

``GenerationRunner.start`` admits the job, prepares its engine request within the deadline and waits for the first
step (so early errors are plain HTTP errors). The ``Run`` it returns has one stream of applied steps (``pieces``):
the tool-call filter, the per-choice state, the deadline and the cut-off check are applied there and nowhere else.
A streaming API reads ``chunks`` (the job's shaping of each step); a whole answer is ``answer`` — the same stream,
drained, then shaped from the choices it built — so the two cannot diverge (TGI's router has the same shape:
``generate`` is ``generate_stream``, folded).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Generic, TypeVar

from prometheus_client import CollectorRegistry

from server.engine.base import Engine, EngineRequest, EngineStep
from server.errors import ModelNotFoundError, RequestTimeoutError
from server.schemas.common import Usage
from server.service.admission import Admission
from server.service.choices import ChoiceState, Piece, apply_step, require_finished
from server.service.jobs import Job, usage
from server.service.metrics import GenerationMetrics
from server.service.timing import Timings

ChunkT = TypeVar("ChunkT")
AnswerT = TypeVar("AnswerT")


def _deadline_error(timeout_s: float | None) -> RequestTimeoutError:
    return RequestTimeoutError(f"the request did not finish within its deadline of {timeout_s:g} s")


class Run(Generic[ChunkT, AnswerT]):
    """A started job: its first step has arrived. It holds the admission slot and the engine request until its
    stream ends, however it ends, or ``aclose`` is called (safe to repeat; a client that leaves between the first
    step and the first byte never iterates anything)."""

    def __init__(
        self,
        job: Job[ChunkT, AnswerT],
        request: EngineRequest,
        steps: AsyncIterator[EngineStep],
        first: EngineStep,
        resources: contextlib.AsyncExitStack,
        deadline: float | None,
        timeout_s: float | None,
    ) -> None:
        self.job = job
        self.request = request
        self.choices = [ChoiceState(i) for i in range(request.sampling.n)]
        self._steps = steps
        self._first = self._last = first
        self._resources = resources
        self._deadline = deadline
        self._timeout_s = timeout_s

    async def pieces(self) -> AsyncGenerator[list[Piece], None]:
        """Every step (the first included) applied to the choices, within the deadline; then the cut-off check."""
        async with self._resources:
            try:
                async with asyncio.timeout_at(self._deadline):
                    yield apply_step(self._first, self.choices, self.request.output)
                    async for step in self._steps:
                        self._last = step
                        yield apply_step(step, self.choices, self.request.output)
            except TimeoutError as exc:
                raise _deadline_error(self._timeout_s) from exc
        require_finished(self.choices)

    def usage(self) -> Usage:
        last = self._last
        completion = sum(c.tokens for c in self.choices)
        return usage(last.prompt_tokens, completion, last.image_tokens, last.video_tokens, last.cached_tokens)

    async def chunks(self) -> AsyncIterator[ChunkT]:
        """Streaming: the job's opening chunks, one chunk per step that shows something, then its closing chunks."""
        async for batch in self.batches():
            for chunk in batch:
                yield chunk

    async def batches(self) -> AsyncIterator[list[ChunkT]]:
        """``chunks``, grouped by what is known at once, so each group leaves in one write: the opening chunks with
        the first step's (already here), each later step's on its own, and the step that finishes every choice with
        the closing chunks (its stream ends at once). Never held back waiting for the engine."""
        batch = list(self.job.opening(self.choices))
        try:
            async with contextlib.aclosing(self.pieces()) as pieces:
                async for applied in pieces:
                    shaped = self.job.chunk(applied)
                    if shaped is not None:
                        batch.append(shaped)
                    if batch and not all(choice.finish_reason is not None for choice in self.choices):
                        yield batch
                        batch = []
        except Exception:
            if batch:  # what was shaped before the failure still goes out, before the error
                yield batch
            raise
        batch.extend(self.job.closing(self.usage()))
        if batch:
            yield batch

    async def answer(self) -> AnswerT:
        """A whole answer: the same stream of pieces, drained, then shaped from the choices it built."""
        async with contextlib.aclosing(self.pieces()) as pieces:
            async for _ in pieces:
                pass
        return self.job.answer(self.choices, self.usage())

    async def aclose(self) -> None:
        await self._resources.aclose()


async def _close(steps: AsyncIterator[EngineStep]) -> None:
    aclose = getattr(steps, "aclose", None)
    if aclose is not None:
        await aclose()


class GenerationRunner:
    """Admission, deadline, timings and metrics around one engine request."""

    def __init__(self, engine: Engine, admission: Admission, metrics: GenerationMetrics | None = None) -> None:
        self.engine = engine
        self._admission = admission
        self._metrics = metrics or GenerationMetrics(CollectorRegistry())

    def check_model(self, name: str) -> None:
        if name != self.engine.model.name:
            raise ModelNotFoundError(
                f"the model '{name}' does not exist; this server serves '{self.engine.model.name}'", param="model"
            )

    async def start(self, job: Job[ChunkT, AnswerT], timeout_s: float | None, timings: Timings) -> Run[ChunkT, AnswerT]:
        """Admit and prepare the job, start it and wait for its first step. The admission slot is held until the
        returned run's stream ends, however it ends."""
        deadline = None if timeout_s is None else asyncio.get_running_loop().time() + timeout_s
        resources = contextlib.AsyncExitStack()
        resources.callback(self._finish, timings)
        try:
            async with asyncio.timeout_at(deadline):
                await resources.enter_async_context(self._admitted(job.cost, timings))
                request = await self._prepare_timed(job, timings)
                steps = aiter(self._observed(request, timings))
                resources.push_async_callback(_close, steps)
                first = await anext(steps)
        except TimeoutError as exc:
            await resources.aclose()
            raise _deadline_error(timeout_s) from exc
        except BaseException:
            await resources.aclose()
            raise
        return Run(job, request, steps, first, resources, deadline, timeout_s)

    async def collect(self, job: Job[ChunkT, AnswerT], timeout_s: float | None, timings: Timings) -> AnswerT:
        """A whole answer: start, then drain the one stream (a cancelled caller releases everything on the way)."""
        run = await self.start(job, timeout_s, timings)
        try:
            return await run.answer()
        finally:
            await run.aclose()

    @contextlib.asynccontextmanager
    async def _admitted(self, cost: int, timings: Timings) -> AsyncIterator[None]:
        queued = time.perf_counter()
        async with self._admission.admit(cost):
            timings.queue_s = time.perf_counter() - queued
            yield

    async def _prepare_timed(self, job: Job[object, object], timings: Timings) -> EngineRequest:
        started = time.perf_counter()
        request = await job.prepare()
        timings.media_s = time.perf_counter() - started
        self._metrics.media.observe(timings.media_s)
        return request

    async def _observed(self, request: EngineRequest, timings: Timings) -> AsyncGenerator[EngineStep, None]:
        """The engine's steps, recording time to first token, inter-token gaps and token counts on the way."""
        last: float | None = None
        steps = self.engine.generate(request)
        try:
            async for step in steps:
                now = time.perf_counter()
                if timings.first_token_s is None:
                    timings.first_token_s = timings.since_start()
                    self._metrics.ttft.observe(timings.first_token_s)
                elif last is not None:
                    self._metrics.itl.observe(now - last)
                last = now
                timings.prompt_tokens = step.prompt_tokens
                timings.image_tokens, timings.video_tokens = step.image_tokens, step.video_tokens
                timings.completion_tokens += sum(len(d.token_ids) for d in step.choices)
                yield step
        finally:
            await _close(steps)  # closing the engine's generator aborts the engine request

    def _finish(self, timings: Timings) -> None:
        timings.total_s = timings.since_start()
        self._metrics.finish(timings)
