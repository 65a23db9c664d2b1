"""Chat completions as a job: checked before any work, prepared (media, prompt, output options), shaped as OpenAI's
chat chunks or a whole ``ChatCompletion`` from the same applied steps."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from server.engine.base import Engine, EngineRequest, OutputSpec, TokenLogprob
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
from server.schemas.common import CountedTokensDetails, TokenCount, Usage
from server.schemas.tools import ToolCall, ToolCallFunction
from server.service.choices import ChoiceState, Piece
from server.service.cost import estimate_cost
from server.service.jobs import sampling_spec
from server.service.prompt import Conversation, build_conversation
from server.service.runner import GenerationRunner


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


def output_spec(req: ChatCompletionRequest, max_tool_calls: int = 8) -> OutputSpec:
    choice = req.effective_tool_choice
    return OutputSpec(
        tools=tuple(tool.model_dump(exclude_none=True) for tool in req.tools or ()),
        tool_choice=choice if isinstance(choice, str) else choice.model_dump(),
        parallel_tool_calls=req.parallel_tool_calls,
        max_tool_calls=max_tool_calls,
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


def whole_json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


def _choice(req: ChatCompletionRequest, output: OutputSpec, state: ChoiceState) -> Choice:
    calls = [
        ToolCall(id=call.id, function=ToolCallFunction(name=call.name, arguments="".join(call.arguments)))
        for _, call in sorted(state.tool_calls.items())
    ]
    if state.finish_reason == "length":  # a call cut off by max_tokens is not a call (a stream saw its pieces go by)
        calls = [call for call in calls if whole_json(call.function.arguments)]
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
    """Turns a chat request into a job, checking everything that needs no work first."""

    def __init__(self, runner: GenerationRunner, media: MediaLoader, max_tool_calls: int = 8) -> None:
        self._runner = runner
        self._engine = runner.engine
        self._media = media
        self._max_tool_calls = max_tool_calls

    def job(self, req: ChatCompletionRequest, max_tool_calls: int | None = None) -> ChatJob:
        """The model, the media counts and the request's estimated cost, decided before any work; ``max_tool_calls``
        (the Responses API's field) may lower the server's bound on calls, never raise it."""
        self._runner.check_model(req.model)
        conversation = build_conversation(req.messages, self._media.limits, self._engine.model.added_tokens)
        cost = estimate_cost(conversation, req.completion_limit, self._engine.model, self._media.ceilings)
        most = self._max_tool_calls if max_tool_calls is None else min(max_tool_calls, self._max_tool_calls)
        return ChatJob(req, conversation, cost, self._engine, self._media, most)


async def count_tokens(job: ChatJob) -> TokenCount:
    """The prompt tokens ``job`` would report in ``usage``, from the engine's own renderer over the same prepared
    request (media through the same loader and cache), without generating; the context is not checked (the count says
    whether it fits)."""
    request = await job.prepare(check_budget=False)
    counted = await job.engine.count_prompt(request)
    return TokenCount(
        model=job.model,
        prompt_tokens=counted.prompt_tokens,
        prompt_tokens_details=CountedTokensDetails(
            image_tokens=counted.image_tokens, video_tokens=counted.video_tokens
        ),
        max_model_len=job.engine.model.max_model_len,
    )


@dataclass
class ChatJob:
    """One checked chat request: how to prepare it and how to shape its chunks and its whole answer."""

    req: ChatCompletionRequest
    conversation: Conversation
    cost: int
    engine: Engine
    media: MediaLoader
    max_tool_calls: int = 8
    request_id: str = field(default_factory=lambda: f"chatcmpl-{uuid.uuid4().hex}")
    created: int = field(default_factory=lambda: int(time.time()))
    output: OutputSpec = field(init=False)
    model: str = field(init=False)

    def __post_init__(self) -> None:
        self.output = output_spec(self.req, self.max_tool_calls)
        self.model = self.engine.model.name  # read once, not per chunk

    async def prepare(self, check_budget: bool = True) -> EngineRequest:
        model = self.engine.model
        media = await self.media.load(self.conversation.images, self.conversation.videos, model.vision)
        if check_budget:
            _check_visual_budget(media, self.req.completion_limit, model.max_model_len)
        template_kwargs: dict[str, Any] = dict(self.output.chat_template_kwargs)
        if self.output.tools and self.output.tool_choice != "none":
            # tool_choice none: the model is not shown the tools at all (it cannot be tempted to call one).
            template_kwargs["tools"] = [self.conversation.literals.value(tool) for tool in self.output.tools]
        prompt = self.engine.render_prompt(self.conversation.messages, **template_kwargs)
        req = self.req
        return EngineRequest(
            request_id=self.request_id,
            prompt=prompt,
            sampling=sampling_spec(req, (req.top_logprobs or 0) if req.logprobs else None),
            output=self.output,
            images=tuple(item.image for item in media.images),
            videos=tuple(item.video for item in media.videos),
            images_resized=True,
            videos_resized=True,  # decoded straight to their grid by the media workers
            visual_items=tuple(media.items),
            image_uuids=tuple(item.uuid for item in media.images),
            video_uuids=tuple(item.uuid for item in media.videos),
            literals=tuple(self.conversation.literals.items),
        )

    def _chunk(self, choices: list[ChunkChoice], usage: Usage | None = None) -> ChatCompletionChunk:
        return ChatCompletionChunk(
            id=self.request_id, created=self.created, model=self.model, choices=choices, usage=usage
        )

    def opening(self, choices: Sequence[ChoiceState]) -> Iterable[ChatCompletionChunk]:
        yield self._chunk([ChunkChoice(index=c.index, delta=Delta(role="assistant", content="")) for c in choices])

    def chunk(self, pieces: Sequence[Piece]) -> ChatCompletionChunk | None:
        out = [choice for piece in pieces if (choice := _chunk_choice(self.req, self.output, piece)) is not None]
        return self._chunk(out) if out else None

    def closing(self, usage: Usage) -> Iterable[ChatCompletionChunk]:
        if self.req.stream_options and self.req.stream_options.include_usage:
            yield self._chunk([], usage)

    def answer(self, choices: Sequence[ChoiceState], usage: Usage) -> ChatCompletion:
        return ChatCompletion(
            id=self.request_id,
            created=self.created,
            model=self.model,
            choices=[_choice(self.req, self.output, c) for c in choices],
            usage=usage,
        )


def _call_pieces(piece: Piece) -> list[ToolCallDeltaOut]:
    """id, type and name go on a call's first piece only, even when one step holds several of its pieces."""
    calls: list[ToolCallDeltaOut] = []
    first_seen: set[int] = set()
    for call in piece.delta.tool_calls:
        first = call.index in piece.new_calls and call.index not in first_seen
        first_seen.add(call.index)
        current = piece.choice.tool_calls[call.index]
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
    return calls


def _chunk_choice(req: ChatCompletionRequest, output: OutputSpec, piece: Piece) -> ChunkChoice | None:
    delta = piece.delta
    calls = _call_pieces(piece) if delta.tool_calls else []
    reason = None
    if delta.finish_reason is not None:
        reason = _openai_reason(delta.finish_reason, output, bool(piece.choice.tool_calls))
    logprobs = _logprobs_out(req, delta.logprobs) if delta.logprobs else None
    if not (delta.content or delta.reasoning or calls or reason or logprobs):
        return None
    return ChunkChoice(
        index=delta.index,
        delta=Delta(content=delta.content or None, reasoning_content=delta.reasoning or None, tool_calls=calls or None),
        finish_reason=reason,
        logprobs=logprobs,
    )
