"""Running one request on the engine, whatever its API: admission, deadline, stage timings, per-choice accumulation.

Chat and text completions differ in how they build the ``EngineRequest`` and shape the answer; everything between
(waiting for a slot, preparing within the deadline, observing the engine's steps for metrics, aborting on exit, refusing
a stream that ends without a finish reason) is the same and lives here.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Generic, TypeVar

from prometheus_client import CollectorRegistry

from server.engine.base import ChoiceDelta, Engine, EngineRequest, EngineStep, OutputSpec, SamplingSpec, TokenLogprob
from server.errors import EngineUnavailableError, ModelNotFoundError, RequestTimeoutError
from server.schemas.common import CompletionBase, PromptTokensDetails, Usage
from server.service.admission import Admission
from server.service.timing import GenerationMetrics, Timings

Prepare = Callable[[], Awaitable[EngineRequest]]
T = TypeVar("T")


@dataclass
class ToolCallState:
    id: str
    name: str
    arguments: list[str] = field(default_factory=list)


@dataclass
class ChoiceState:
    """Everything one choice has produced so far: content, reasoning, tool calls (merged by index), logprobs."""

    index: int
    content: list[str] = field(default_factory=list)
    reasoning: list[str] = field(default_factory=list)
    tool_calls: dict[int, ToolCallState] = field(default_factory=dict)
    logprobs: list[TokenLogprob] = field(default_factory=list)
    tokens: int = 0
    finish_reason: str | None = None

    def add(self, delta: ChoiceDelta) -> None:
        if delta.content:
            self.content.append(delta.content)
        if delta.reasoning:
            self.reasoning.append(delta.reasoning)
        for call in delta.tool_calls:
            state = self.tool_calls.get(call.index)
            if state is None:
                state = self.tool_calls[call.index] = ToolCallState(id=call.id or _call_id(), name=call.name or "")
            elif call.name and not state.name:
                state.name = call.name
            if call.arguments:
                state.arguments.append(call.arguments)
        self.logprobs.extend(delta.logprobs)
        self.tokens += len(delta.token_ids)
        if delta.finish_reason is not None:
            if delta.finish_reason == "abort":
                raise EngineUnavailableError("the request was aborted by the server")
            self.finish_reason = delta.finish_reason


def _call_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"


def require_finished(choices: list[ChoiceState]) -> None:
    """An engine stream that ends before every choice has a finish reason was cut off under us (the engine shut down
    mid-request); that is an error for the client, never a quiet, complete-looking answer."""
    if any(c.finish_reason is None for c in choices):
        raise EngineUnavailableError("the inference engine stopped before the request finished; retry")


def keep_allowed_calls(delta: ChoiceDelta, output: OutputSpec) -> ChoiceDelta:
    """``parallel_tool_calls: false``: only the first call survives (vLLM's own server filters the same way)."""
    if output.parallel_tool_calls or not any(call.index > 0 for call in delta.tool_calls):
        return delta
    return replace(delta, tool_calls=tuple(call for call in delta.tool_calls if call.index == 0))


def usage(prompt: int, completion: int, image_tokens: int = 0, video_tokens: int = 0) -> Usage:
    return Usage(
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=prompt + completion,
        prompt_tokens_details=PromptTokensDetails(image_tokens=image_tokens, video_tokens=video_tokens),
    )


def sampling_spec(req: CompletionBase, logprobs: int | None = None) -> SamplingSpec:
    """The sampling fields both APIs share; ``logprobs``: alternatives per token to report, None for no logprobs."""
    return SamplingSpec(
        max_tokens=req.completion_limit,
        temperature=req.temperature,
        top_p=req.top_p,
        top_k=req.top_k,
        min_p=req.min_p,
        presence_penalty=req.presence_penalty,
        frequency_penalty=req.frequency_penalty,
        repetition_penalty=req.repetition_penalty,
        seed=req.seed,
        stop=req.stop_sequences,
        n=req.n,
        ignore_eos=req.ignore_eos,
        logprobs=logprobs,
        logit_bias={int(k): v for k, v in req.logit_bias.items()} if req.logit_bias else None,
    )


@dataclass
class Finished:
    """A request that ran to the end: its engine request, every choice's state, and the usage to report."""

    request: EngineRequest
    choices: list[ChoiceState]
    usage: Usage


class Started:
    """A request whose first step has arrived. ``steps`` yields every step (the first included) within the deadline and
    releases the admission slot and engine request when it ends; ``aclose`` releases them even if ``steps`` is never
    iterated (a client that leaves between the first step and the first byte). Both are safe to repeat."""

    def __init__(
        self,
        request: EngineRequest,
        first: EngineStep,
        rest: AsyncIterator[EngineStep],
        resources: contextlib.AsyncExitStack,
        deadline: float | None,
        timeout_s: float | None,
    ) -> None:
        self.request = request
        self.first = first
        self.choices = [ChoiceState(i) for i in range(request.sampling.n)]
        self._rest = rest
        self._resources = resources
        self._deadline = deadline
        self._timeout_s = timeout_s

    async def steps(self) -> AsyncGenerator[EngineStep, None]:
        async with self._resources:
            try:
                async with asyncio.timeout_at(self._deadline):
                    yield self.first
                    async for step in self._rest:
                        yield step
            except TimeoutError as exc:
                raise RequestTimeoutError(
                    f"the request did not finish within its deadline of {self._timeout_s:g} s"
                ) from exc

    def usage(self) -> Usage:
        completion = sum(c.tokens for c in self.choices)
        return usage(self.first.prompt_tokens, completion, self.first.image_tokens, self.first.video_tokens)

    async def aclose(self) -> None:
        await self._resources.aclose()


@dataclass(frozen=True)
class OpenStream(Generic[T]):
    """A started stream of API chunks. ``aclose`` releases its admission slot and engine request even if ``chunks`` is
    never iterated (a client that leaves between the first step and the first byte); it is safe to call more than
    once."""

    chunks: AsyncIterator[T]
    aclose: Callable[[], Awaitable[None]]


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

    @contextlib.asynccontextmanager
    async def _admitted(self, cost: int, timings: Timings) -> AsyncIterator[None]:
        queued = time.perf_counter()
        async with self._admission.admit(cost):
            timings.queue_s = time.perf_counter() - queued
            yield

    async def _prepare_timed(self, prepare: Prepare, timings: Timings) -> EngineRequest:
        started = time.perf_counter()
        engine_request = await prepare()
        timings.media_s = time.perf_counter() - started
        self._metrics.media.observe(timings.media_s)
        return engine_request

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

    async def run(self, prepare: Prepare, cost: int, timeout_s: float | None, timings: Timings) -> Finished:
        """Admit, prepare and run the request to its end, accumulating each choice."""
        last: EngineStep | None = None
        engine_request: EngineRequest | None = None
        choices: list[ChoiceState] = []
        try:
            async with asyncio.timeout(timeout_s), self._admitted(cost, timings):
                engine_request = await self._prepare_timed(prepare, timings)
                choices = [ChoiceState(i) for i in range(engine_request.sampling.n)]
                async for step in self._observed(engine_request, timings):
                    last = step
                    for delta in step.choices:
                        choices[delta.index].add(keep_allowed_calls(delta, engine_request.output))
        except TimeoutError as exc:
            raise RequestTimeoutError(f"the request did not finish within its deadline of {timeout_s:g} s") from exc
        finally:
            self._finish(timings)
        require_finished(choices)
        assert engine_request is not None and last is not None  # a finished choice needs at least one step
        completion = sum(c.tokens for c in choices)
        return Finished(
            engine_request, choices, usage(last.prompt_tokens, completion, last.image_tokens, last.video_tokens)
        )

    async def start(self, prepare: Prepare, cost: int, timeout_s: float | None, timings: Timings) -> Started:
        """Admit, prepare and start the request and wait for its first step (so early errors are plain HTTP errors).
        The admission slot is held until the returned stream ends, however it ends."""
        deadline = None if timeout_s is None else asyncio.get_running_loop().time() + timeout_s
        resources = contextlib.AsyncExitStack()
        resources.callback(self._finish, timings)
        try:
            async with asyncio.timeout_at(deadline):
                await resources.enter_async_context(self._admitted(cost, timings))
                engine_request = await self._prepare_timed(prepare, timings)
                steps = aiter(self._observed(engine_request, timings))
                resources.push_async_callback(_close, steps)
                first = await anext(steps)
        except TimeoutError as exc:
            await resources.aclose()
            raise RequestTimeoutError(f"the request did not start within its deadline of {timeout_s:g} s") from exc
        except BaseException:
            await resources.aclose()
            raise
        return Started(engine_request, first, steps, resources, deadline, timeout_s)
