"""Chat completions: prepare the request (media, prompt), run it on the engine, shape OpenAI responses."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from prometheus_client import CollectorRegistry

from server.engine.base import (
    ChoiceDelta,
    Engine,
    EngineRequest,
    EngineStep,
    OutputSpec,
    SamplingSpec,
    TokenLogprob,
)
from server.errors import (
    ContextLengthError,
    EngineUnavailableError,
    ModelNotFoundError,
    RequestTimeoutError,
    describe_items,
)
from server.media.loader import MediaLoader, PreparedMedia
from server.schemas.chat import (
    AssistantMessage,
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    Choice,
    ChoiceLogprobs,
    ChunkChoice,
    Delta,
    FinishReasonOut,
    PromptTokensDetails,
    ToolCall,
    ToolCallFunction,
    ToolCallFunctionDelta,
    Usage,
    _Request,
)
from server.schemas.chat import TokenLogprob as TokenLogprobOut
from server.schemas.chat import ToolCallDelta as ToolCallDeltaOut
from server.schemas.chat import TopLogprob as TopLogprobOut
from server.service.admission import Admission
from server.service.cost import estimate_cost
from server.service.prompt import Conversation, build_conversation
from server.service.timing import GenerationMetrics, Timings


@dataclass
class _ToolCallState:
    id: str
    name: str
    arguments: list[str] = field(default_factory=list)


@dataclass
class ChoiceState:
    """Everything one choice has produced so far: content, reasoning, tool calls (merged by index), logprobs."""

    index: int
    content: list[str] = field(default_factory=list)
    reasoning: list[str] = field(default_factory=list)
    tool_calls: dict[int, _ToolCallState] = field(default_factory=dict)
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
                state = self.tool_calls[call.index] = _ToolCallState(id=call.id or _call_id(), name=call.name or "")
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


def _require_finished(choices: list[ChoiceState]) -> None:
    """An engine stream that ends before every choice has a finish reason was cut off under us (the engine shut down
    mid-request); that is an error for the client, never a quiet, complete-looking answer."""
    if any(c.finish_reason is None for c in choices):
        raise EngineUnavailableError("the inference engine stopped before the request finished; retry")


def _check_visual_budget(media: PreparedMedia, max_tokens: int | None, max_model_len: int) -> None:
    """Refuse early (before the engine's processor runs) when the visual tokens alone cannot fit the context."""
    if not media.items:
        return
    visual = sum(tokens for _, tokens in media.items)
    needed = visual + (max_tokens or 1)
    if needed > max_model_len:
        raise ContextLengthError(
            f"this model's maximum context length is {max_model_len} tokens; the media alone need {visual} tokens "
            f"({describe_items(media.items)}) plus {max_tokens or 1} for the completion",
            param="messages",
        )


def _usage(step_prompt: int, completion: int, image_tokens: int, video_tokens: int) -> Usage:
    return Usage(
        prompt_tokens=step_prompt,
        completion_tokens=completion,
        total_tokens=step_prompt + completion,
        prompt_tokens_details=PromptTokensDetails(image_tokens=image_tokens, video_tokens=video_tokens),
    )


def _openai_reason(reason: str | None, output: OutputSpec, called: bool) -> FinishReasonOut:
    """OpenAI's finish reasons: ``tool_calls`` when the model called a tool it chose (auto) or had to call (required);
    a call to the one named function ends with ``stop``, as OpenAI's own API does."""
    if reason == "length":
        return "length"
    if called and output.named_tool is None:
        return "tool_calls"
    return "stop"


def output_spec(req: ChatCompletionRequest) -> OutputSpec:
    choice = req.effective_tool_choice
    return OutputSpec(
        tools=tuple(tool.model_dump(exclude_none=True) for tool in req.tools or ()),
        tool_choice=choice if isinstance(choice, str) else choice.model_dump(),
        parallel_tool_calls=req.parallel_tool_calls,
        response_format=None if req.response_format is None else req.response_format.model_dump(by_alias=True),
        chat_template_kwargs=req.chat_template_kwargs.as_kwargs() if req.chat_template_kwargs else {},
    )


def _logprobs_out(req: ChatCompletionRequest, items: Sequence[TokenLogprob]) -> ChoiceLogprobs | None:
    if not req.logprobs:
        return None
    return ChoiceLogprobs(
        content=[
            TokenLogprobOut(
                token=item.token,
                logprob=item.logprob,
                bytes=list(item.bytes),
                top_logprobs=[TopLogprobOut(token=t.token, logprob=t.logprob, bytes=list(t.bytes)) for t in item.top],
            )
            for item in items
        ]
    )


def sampling_spec(req: _Request) -> SamplingSpec:
    logprobs: int | None = None
    if isinstance(req, ChatCompletionRequest) and req.logprobs:
        logprobs = req.top_logprobs or 0
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


def _keep_allowed_calls(delta: ChoiceDelta, output: OutputSpec) -> ChoiceDelta:
    """``parallel_tool_calls: false``: only the first call survives (vLLM's own server filters the same way)."""
    if output.parallel_tool_calls or not any(call.index > 0 for call in delta.tool_calls):
        return delta
    return replace(delta, tool_calls=tuple(call for call in delta.tool_calls if call.index == 0))


def _choice(req: ChatCompletionRequest, output: OutputSpec, state: ChoiceState) -> Choice:
    calls = [
        ToolCall(id=call.id, function=ToolCallFunction(name=call.name, arguments="".join(call.arguments)))
        for _, call in sorted(state.tool_calls.items())
    ]
    content = "".join(state.content)
    return Choice(
        index=state.index,
        message=AssistantMessage(
            # OpenAI: content is null when the answer is only tool calls, "" when the model said nothing at all.
            content=content if content or not calls else None,
            reasoning_content="".join(state.reasoning) or None,
            tool_calls=calls or None,
        ),
        finish_reason=_openai_reason(state.finish_reason, output, bool(calls)),
        logprobs=_logprobs_out(req, state.logprobs),
    )


class ChatService:
    def __init__(
        self, engine: Engine, media: MediaLoader, admission: Admission, metrics: GenerationMetrics | None = None
    ) -> None:
        self._engine = engine
        self._media = media
        self._admission = admission
        self._metrics = metrics or GenerationMetrics(CollectorRegistry())

    @contextlib.asynccontextmanager
    async def _admitted(self, cost: int, timings: Timings) -> AsyncIterator[None]:
        queued = time.perf_counter()
        async with self._admission.admit(cost):
            timings.queue_s = time.perf_counter() - queued
            yield

    async def _prepare_timed(
        self, req: ChatCompletionRequest, conversation: Conversation, request_id: str, timings: Timings
    ) -> EngineRequest:
        started = time.perf_counter()
        engine_request = await self.prepare(req, conversation, request_id)
        timings.media_s = time.perf_counter() - started
        self._metrics.media.observe(timings.media_s)
        return engine_request

    async def _observed(self, request: EngineRequest, timings: Timings) -> AsyncGenerator[EngineStep, None]:
        """The engine's steps, recording time to first token, inter-token gaps and token counts on the way."""
        last: float | None = None
        steps = self._engine.generate(request)
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

    def check_model(self, name: str) -> None:
        if name != self._engine.model.name:
            raise ModelNotFoundError(
                f"the model '{name}' does not exist; this server serves '{self._engine.model.name}'", param="model"
            )

    def plan(self, req: ChatCompletionRequest) -> tuple[Conversation, int]:
        """Everything decided before any work: the model, the media counts, the request's estimated cost."""
        self.check_model(req.model)
        conversation = build_conversation(req.messages, self._media.limits)
        cost = estimate_cost(conversation, req.completion_limit, self._engine.model, self._media.ceilings)
        return conversation, cost

    async def prepare(self, req: ChatCompletionRequest, conversation: Conversation, request_id: str) -> EngineRequest:
        model = self._engine.model
        media = await self._media.load(conversation.images, conversation.videos, model.vision)
        _check_visual_budget(media, req.completion_limit, model.max_model_len)
        spec = output_spec(req)
        template_kwargs: dict[str, Any] = dict(spec.chat_template_kwargs)
        if spec.tools and spec.tool_choice != "none":
            # tool_choice none: the model is not shown the tools at all (it cannot be tempted to call one).
            template_kwargs["tools"] = [dict(tool) for tool in spec.tools]
        prompt = self._engine.render_prompt(conversation.messages, **template_kwargs)
        return EngineRequest(
            request_id=request_id,
            prompt=prompt,
            sampling=sampling_spec(req),
            output=spec,
            images=tuple(item.image for item in media.images),
            videos=tuple(item.video for item in media.videos),
            images_resized=True,
            videos_resized=media.videos_resized,
            visual_items=tuple(media.items),
            image_uuids=tuple(item.uuid for item in media.images),
            video_uuids=tuple(item.uuid for item in media.videos),
        )

    async def complete(
        self, req: ChatCompletionRequest, timeout_s: float | None = None, timings: Timings | None = None
    ) -> ChatCompletion:
        timings = timings or Timings()
        request_id = f"chatcmpl-{uuid.uuid4().hex}"
        created = int(time.time())
        conversation, cost = self.plan(req)
        choices = [ChoiceState(i) for i in range(req.n)]
        last: EngineStep | None = None
        engine_request: EngineRequest | None = None
        try:
            async with asyncio.timeout(timeout_s), self._admitted(cost, timings):
                engine_request = await self._prepare_timed(req, conversation, request_id, timings)
                async for step in self._observed(engine_request, timings):
                    last = step
                    for delta in step.choices:
                        choices[delta.index].add(_keep_allowed_calls(delta, engine_request.output))
        except TimeoutError as exc:
            raise RequestTimeoutError(f"the request did not finish within its deadline of {timeout_s:g} s") from exc
        finally:
            self._finish(timings)
        _require_finished(choices)
        assert engine_request is not None  # set before any step
        completion_tokens = sum(c.tokens for c in choices)
        return ChatCompletion(
            id=request_id,
            created=created,
            model=self._engine.model.name,
            choices=[_choice(req, engine_request.output, c) for c in choices],
            usage=_usage(
                last.prompt_tokens if last else 0,
                completion_tokens,
                last.image_tokens if last else 0,
                last.video_tokens if last else 0,
            ),
        )

    async def open_stream(
        self, req: ChatCompletionRequest, timeout_s: float | None = None, timings: Timings | None = None
    ) -> OpenStream:
        """Admit, prepare and start the request, wait for its first step (so early errors are plain HTTP errors), then
        stream. The admission slot is held until the stream ends, however it ends."""
        timings = timings or Timings()
        request_id = f"chatcmpl-{uuid.uuid4().hex}"
        conversation, cost = self.plan(req)
        deadline = None if timeout_s is None else asyncio.get_running_loop().time() + timeout_s
        resources = contextlib.AsyncExitStack()
        resources.callback(self._finish, timings)
        try:
            async with asyncio.timeout_at(deadline):
                await resources.enter_async_context(self._admitted(cost, timings))
                engine_request = await self._prepare_timed(req, conversation, request_id, timings)
                steps = aiter(self._observed(engine_request, timings))
                resources.push_async_callback(_close, steps)
                first = await anext(steps)
        except TimeoutError as exc:
            await resources.aclose()
            raise RequestTimeoutError(f"the request did not start within its deadline of {timeout_s:g} s") from exc
        except BaseException:
            await resources.aclose()
            raise
        stream = _ChunkStream(
            req, request_id, self._engine.model.name, first, steps, deadline, timeout_s, engine_request.output
        )
        return OpenStream(chunks=stream.chunks(resources), aclose=resources.aclose)


@dataclass(frozen=True)
class OpenStream:
    """A started stream. ``aclose`` releases its admission slot and engine request even if ``chunks`` is never
    iterated (a client that leaves between the first step and the first byte); it is safe to call more than once."""

    chunks: AsyncIterator[ChatCompletionChunk]
    aclose: Callable[[], Awaitable[None]]


async def _close(steps: AsyncIterator[EngineStep]) -> None:
    aclose = getattr(steps, "aclose", None)
    if aclose is not None:
        await aclose()


class _ChunkStream:
    def __init__(
        self,
        req: ChatCompletionRequest,
        request_id: str,
        model: str,
        first: EngineStep,
        steps: AsyncIterator[EngineStep],
        deadline: float | None = None,
        timeout_s: float | None = None,
        output: OutputSpec | None = None,
    ) -> None:
        self._req = req
        self._output = output or OutputSpec()
        self._deadline = deadline
        self._timeout_s = timeout_s
        self._id = request_id
        self._model = model
        self._created = int(time.time())
        self._include_usage = bool(req.stream_options and req.stream_options.include_usage)
        self._choices = [ChoiceState(i) for i in range(req.n)]
        self._first = first
        self._steps = steps
        self._prompt_tokens = first.prompt_tokens

    def _chunk(self, choices: list[ChunkChoice], usage: Usage | None = None) -> ChatCompletionChunk:
        return ChatCompletionChunk(id=self._id, created=self._created, model=self._model, choices=choices, usage=usage)

    async def chunks(self, resources: contextlib.AsyncExitStack) -> AsyncIterator[ChatCompletionChunk]:
        async with resources:
            try:
                async with asyncio.timeout_at(self._deadline):
                    async for chunk in self._chunks():
                        yield chunk
            except TimeoutError as exc:
                raise RequestTimeoutError(
                    f"the request did not finish within its deadline of {self._timeout_s:g} s"
                ) from exc

    async def _chunks(self) -> AsyncIterator[ChatCompletionChunk]:
        async with contextlib.aclosing(self._all_steps()) as steps:
            yield self._chunk(
                [ChunkChoice(index=c.index, delta=Delta(role="assistant", content="")) for c in self._choices]
            )
            async for step in steps:
                out = [choice for delta in step.choices if (choice := self._chunk_choice(delta)) is not None]
                if out:
                    yield self._chunk(out)
        _require_finished(self._choices)
        if self._include_usage:
            completion = sum(c.tokens for c in self._choices)
            usage = _usage(self._prompt_tokens, completion, self._first.image_tokens, self._first.video_tokens)
            yield self._chunk([], usage)

    def _chunk_choice(self, delta: ChoiceDelta) -> ChunkChoice | None:
        state = self._choices[delta.index]
        delta = _keep_allowed_calls(delta, self._output)
        known = set(state.tool_calls)
        state.add(delta)
        calls = [
            ToolCallDeltaOut(
                index=call.index,
                id=state.tool_calls[call.index].id if call.index not in known else None,
                type="function" if call.index not in known else None,
                function=ToolCallFunctionDelta(
                    name=state.tool_calls[call.index].name if call.index not in known else None,
                    arguments=call.arguments if call.arguments or call.index not in known else None,
                ),
            )
            for call in delta.tool_calls
        ]
        if call_indices := [c.index for c in delta.tool_calls if c.index not in known]:
            known.update(call_indices)
        reason = None
        if delta.finish_reason is not None:
            reason = _openai_reason(delta.finish_reason, self._output, bool(state.tool_calls))
        logprobs = _logprobs_out(self._req, delta.logprobs) if delta.logprobs else None
        if not (delta.content or delta.reasoning or calls or reason or logprobs):
            return None
        return ChunkChoice(
            index=delta.index,
            delta=Delta(
                content=delta.content or None, reasoning_content=delta.reasoning or None, tool_calls=calls or None
            ),
            finish_reason=reason,
            logprobs=logprobs,
        )

    async def _all_steps(self) -> AsyncGenerator[EngineStep, None]:
        try:
            yield self._first
            async for step in self._steps:
                yield step
        finally:
            await _close(self._steps)
