"""Chat completions: build the engine request (media, prompt, output options) and shape OpenAI chat responses."""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any

from server.engine.base import ChoiceDelta, EngineRequest, OutputSpec, TokenLogprob
from server.errors import ContextLengthError, describe_items
from server.media.loader import MediaLoader, PreparedMedia
from server.schemas.chat import ChatCompletionRequest
from server.schemas.chat_response import (
    AssistantMessage,
    ChatCompletion,
    ChatCompletionChunk,
    Choice,
    ChoiceLogprobs,
    ChunkChoice,
    Delta,
    FinishReasonOut,
    ToolCallFunctionDelta,
)
from server.schemas.chat_response import TokenLogprob as TokenLogprobOut
from server.schemas.chat_response import ToolCallDelta as ToolCallDeltaOut
from server.schemas.chat_response import TopLogprob as TopLogprobOut
from server.schemas.common import Usage
from server.schemas.tools import ToolCall, ToolCallFunction
from server.service.cost import estimate_cost
from server.service.generation import (
    ChoiceState,
    GenerationRunner,
    OpenStream,
    Started,
    keep_allowed_calls,
    require_finished,
    sampling_spec,
)
from server.service.prompt import Conversation, build_conversation
from server.service.timing import Timings


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
    def __init__(self, runner: GenerationRunner, media: MediaLoader) -> None:
        self._runner = runner
        self._engine = runner.engine
        self._media = media

    def plan(self, req: ChatCompletionRequest) -> tuple[Conversation, int]:
        """Everything decided before any work: the model, the media counts, the request's estimated cost."""
        self._runner.check_model(req.model)
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
            sampling=sampling_spec(req, (req.top_logprobs or 0) if req.logprobs else None),
            output=spec,
            images=tuple(item.image for item in media.images),
            videos=tuple(item.video for item in media.videos),
            images_resized=True,
            videos_resized=True,  # decoded straight to their grid by the media workers
            visual_items=tuple(media.items),
            image_uuids=tuple(item.uuid for item in media.images),
            video_uuids=tuple(item.uuid for item in media.videos),
        )

    async def complete(
        self, req: ChatCompletionRequest, timeout_s: float | None = None, timings: Timings | None = None
    ) -> ChatCompletion:
        request_id = f"chatcmpl-{uuid.uuid4().hex}"
        created = int(time.time())
        conversation, cost = self.plan(req)

        async def prepare() -> EngineRequest:
            return await self.prepare(req, conversation, request_id)

        done = await self._runner.run(prepare, cost, timeout_s, timings or Timings())
        return ChatCompletion(
            id=request_id,
            created=created,
            model=self._engine.model.name,
            choices=[_choice(req, done.request.output, c) for c in done.choices],
            usage=done.usage,
        )

    async def open_stream(
        self, req: ChatCompletionRequest, timeout_s: float | None = None, timings: Timings | None = None
    ) -> OpenStream[ChatCompletionChunk]:
        """Start the request (early errors are plain HTTP errors), then stream its chunks."""
        request_id = f"chatcmpl-{uuid.uuid4().hex}"
        conversation, cost = self.plan(req)

        async def prepare() -> EngineRequest:
            return await self.prepare(req, conversation, request_id)

        started = await self._runner.start(prepare, cost, timeout_s, timings or Timings())
        stream = _ChunkStream(req, request_id, self._engine.model.name, started)
        return OpenStream(chunks=stream.chunks(), aclose=started.aclose)


class _ChunkStream:
    def __init__(self, req: ChatCompletionRequest, request_id: str, model: str, started: Started) -> None:
        self._req = req
        self._started = started
        self._output = started.request.output
        self._id = request_id
        self._model = model
        self._created = int(time.time())
        self._include_usage = bool(req.stream_options and req.stream_options.include_usage)
        self._choices = started.choices

    def _chunk(self, choices: list[ChunkChoice], usage: Usage | None = None) -> ChatCompletionChunk:
        return ChatCompletionChunk(id=self._id, created=self._created, model=self._model, choices=choices, usage=usage)

    async def chunks(self) -> AsyncIterator[ChatCompletionChunk]:
        async with contextlib.aclosing(self._started.steps()) as steps:
            yield self._chunk(
                [ChunkChoice(index=c.index, delta=Delta(role="assistant", content="")) for c in self._choices]
            )
            async for step in steps:
                out = [choice for delta in step.choices if (choice := self._chunk_choice(delta)) is not None]
                if out:
                    yield self._chunk(out)
        require_finished(self._choices)
        if self._include_usage:
            yield self._chunk([], self._started.usage())

    def _chunk_choice(self, delta: ChoiceDelta) -> ChunkChoice | None:
        state = self._choices[delta.index]
        delta = keep_allowed_calls(delta, self._output)
        known = set(state.tool_calls)
        state.add(delta)
        calls: list[ToolCallDeltaOut] = []
        for call in delta.tool_calls:
            # id, type and name go on a call's first piece only, even when one step holds several of its pieces.
            first = call.index not in known
            known.add(call.index)
            current = state.tool_calls[call.index]
            calls.append(
                ToolCallDeltaOut(
                    index=call.index,
                    id=current.id if first else None,
                    type="function" if first else None,
                    function=ToolCallFunctionDelta(
                        name=current.name if first else None,
                        arguments=call.arguments if call.arguments or first else None,
                    ),
                )
            )
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
