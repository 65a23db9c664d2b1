"""Text completions: a raw prompt, sent to the engine as written (no chat template, no output parsing)."""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Literal

from server.engine.base import ChoiceDelta, EngineRequest, OutputSpec, TokenLogprob
from server.errors import InvalidRequestError
from server.media.budget import Ceilings
from server.schemas.completions import (
    Completion,
    CompletionChoice,
    CompletionChunk,
    CompletionChunkChoice,
    CompletionLogprobs,
    CompletionRequest,
)
from server.service.cost import estimate_cost
from server.service.generation import (
    ChoiceState,
    GenerationRunner,
    OpenStream,
    Started,
    require_finished,
    sampling_spec,
)
from server.service.prompt import VISION_TOKENS, Conversation, special_tokens
from server.service.timing import Timings

# A raw prompt may spell Qwen's role markers (that is what raw prompting is for), but not its vision placeholders: no
# media can come with a text completion, and a placeholder without its media breaks the processor.
_VISION_TOKENS = special_tokens(VISION_TOKENS)

# A text completion carries no media, so the media ceilings of the cost estimate are never read.
NO_MEDIA = Ceilings(image_max_pixels=0, video_total_pixels=0, video_max_frames=0)

FinishReason = Literal["stop", "length"]


def _check_prompt(text: str) -> str:
    found = _VISION_TOKENS.search(text)
    if found:
        raise InvalidRequestError(
            f"prompt contains the vision placeholder '{found.group(0)}'; text completions take no media "
            "(send images and videos to /v1/chat/completions)",
            param="prompt",
            code="reserved_token_in_text",
        )
    return text


def _reason(state: ChoiceState) -> FinishReason:
    return "length" if state.finish_reason == "length" else "stop"


def _logprobs(items: Sequence[TokenLogprob], offset: int) -> CompletionLogprobs:
    """OpenAI's legacy format; ``offset``: where the first of ``items`` starts in the choice's text."""
    offsets: list[int] = []
    for item in items:
        offsets.append(offset)
        offset += len(item.token)
    return CompletionLogprobs(
        tokens=[item.token for item in items],
        token_logprobs=[item.logprob for item in items],
        top_logprobs=[{item.token: item.logprob, **{t.token: t.logprob for t in item.top}} for item in items],
        text_offset=offsets,
    )


class CompletionService:
    def __init__(self, runner: GenerationRunner) -> None:
        self._runner = runner
        self._engine = runner.engine

    def plan(self, req: CompletionRequest) -> int:
        """Checks before any work; returns the request's estimated token cost for admission."""
        self._runner.check_model(req.model)
        _check_prompt(req.text)
        text = Conversation(messages=[{"content": req.text}], images=[], videos=[])
        return estimate_cost(text, req.max_tokens, self._engine.model, NO_MEDIA)

    def _request(self, req: CompletionRequest, request_id: str) -> EngineRequest:
        return EngineRequest(
            request_id=request_id,
            prompt=req.text,
            sampling=sampling_spec(req, req.logprobs),
            output=OutputSpec(parse=False),
            prompt_param="prompt",
        )

    async def complete(
        self, req: CompletionRequest, timeout_s: float | None = None, timings: Timings | None = None
    ) -> Completion:
        request_id = f"cmpl-{uuid.uuid4().hex}"
        created = int(time.time())
        cost = self.plan(req)

        async def prepare() -> EngineRequest:
            return self._request(req, request_id)

        done = await self._runner.run(prepare, cost, timeout_s, timings or Timings())
        choices = [
            CompletionChoice(
                index=state.index,
                text="".join(state.content),
                finish_reason=_reason(state),
                logprobs=_logprobs(state.logprobs, 0) if req.logprobs is not None else None,
            )
            for state in done.choices
        ]
        return Completion(
            id=request_id, created=created, model=self._engine.model.name, choices=choices, usage=done.usage
        )

    async def open_stream(
        self, req: CompletionRequest, timeout_s: float | None = None, timings: Timings | None = None
    ) -> OpenStream[CompletionChunk]:
        request_id = f"cmpl-{uuid.uuid4().hex}"
        cost = self.plan(req)

        async def prepare() -> EngineRequest:
            return self._request(req, request_id)

        started = await self._runner.start(prepare, cost, timeout_s, timings or Timings())
        return OpenStream(_chunks(req, request_id, self._engine.model.name, started), started.aclose)


async def _chunks(
    req: CompletionRequest, request_id: str, model: str, started: Started
) -> AsyncIterator[CompletionChunk]:
    created = int(time.time())

    def chunk(choices: list[CompletionChunkChoice]) -> CompletionChunk:
        return CompletionChunk(id=request_id, created=created, model=model, choices=choices)

    def piece(delta: ChoiceDelta) -> CompletionChunkChoice | None:
        state = started.choices[delta.index]
        offset = sum(len(item.token) for item in state.logprobs)
        state.add(delta)
        reason = _reason(state) if delta.finish_reason is not None else None
        logprobs = _logprobs(delta.logprobs, offset) if req.logprobs is not None and delta.logprobs else None
        # A token that ends inside a UTF-8 character has no text yet, but its logprob is still reported.
        if not (delta.content or reason or logprobs):
            return None
        return CompletionChunkChoice(
            index=delta.index, text=delta.content or "", finish_reason=reason, logprobs=logprobs
        )

    async with contextlib.aclosing(started.steps()) as steps:
        async for step in steps:
            out = [choice for delta in step.choices if (choice := piece(delta)) is not None]
            if out:
                yield chunk(out)
    require_finished(started.choices)
    if req.stream_options and req.stream_options.include_usage:
        yield CompletionChunk(id=request_id, created=created, model=model, choices=[], usage=started.usage())
