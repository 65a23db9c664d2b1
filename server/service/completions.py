"""Text completions as a job: a raw prompt, sent to the engine as written (no chat template, no output parsing),
shaped as OpenAI's legacy completion chunks or a whole ``Completion``."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from server.engine.base import EngineRequest, OutputSpec, TokenLogprob
from server.errors import InvalidRequestError
from server.media.budget import Ceilings
from server.schemas.common import Usage
from server.schemas.completions import (
    Completion,
    CompletionChoice,
    CompletionChunk,
    CompletionChunkChoice,
    CompletionLogprobs,
    CompletionRequest,
)
from server.service.choices import ChoiceState, Piece
from server.service.cost import estimate_cost
from server.service.jobs import sampling_spec
from server.service.prompt import VISION_TOKENS, Conversation, special_tokens
from server.service.runner import GenerationRunner

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
    """Turns a text-completion request into a job, checking everything that needs no work first."""

    def __init__(self, runner: GenerationRunner) -> None:
        self._runner = runner
        self._engine = runner.engine

    def job(self, req: CompletionRequest) -> CompletionJob:
        self._runner.check_model(req.model)
        _check_prompt(req.text)
        text = Conversation(messages=[{"content": req.text}], images=[], videos=[])
        cost = estimate_cost(text, req.max_tokens, self._engine.model, NO_MEDIA)
        return CompletionJob(req, cost, self._engine.model.name)


@dataclass
class CompletionJob:
    """One checked text-completion request: its engine request, its chunks and its whole answer."""

    req: CompletionRequest
    cost: int
    model: str
    request_id: str = field(default_factory=lambda: f"cmpl-{uuid.uuid4().hex}")
    created: int = field(default_factory=lambda: int(time.time()))

    async def prepare(self) -> EngineRequest:
        return EngineRequest(
            request_id=self.request_id,
            prompt=self.req.text,
            sampling=sampling_spec(self.req, self.req.logprobs),
            output=OutputSpec(parse=False),
            prompt_param="prompt",
        )

    def _chunk(self, choices: list[CompletionChunkChoice], usage: Usage | None = None) -> CompletionChunk:
        return CompletionChunk(id=self.request_id, created=self.created, model=self.model, choices=choices, usage=usage)

    def opening(self, choices: Sequence[ChoiceState]) -> Iterable[CompletionChunk]:
        return ()

    def chunk(self, pieces: Sequence[Piece]) -> CompletionChunk | None:
        out = [choice for piece in pieces if (choice := self._piece(piece)) is not None]
        return self._chunk(out) if out else None

    def _piece(self, piece: Piece) -> CompletionChunkChoice | None:
        delta = piece.delta
        reason = _reason(piece.choice) if delta.finish_reason is not None else None
        wanted = self.req.logprobs is not None and delta.logprobs
        logprobs = _logprobs(delta.logprobs, piece.logprob_offset) if wanted else None
        # A token that ends inside a UTF-8 character has no text yet, but its logprob is still reported.
        if not (delta.content or reason or logprobs):
            return None
        return CompletionChunkChoice(
            index=delta.index, text=delta.content or "", finish_reason=reason, logprobs=logprobs
        )

    def closing(self, usage: Usage) -> Iterable[CompletionChunk]:
        if self.req.stream_options and self.req.stream_options.include_usage:
            yield self._chunk([], usage)

    def answer(self, choices: Sequence[ChoiceState], usage: Usage) -> Completion:
        out = [
            CompletionChoice(
                index=state.index,
                text="".join(state.content),
                finish_reason=_reason(state),
                logprobs=_logprobs(state.logprobs, 0) if self.req.logprobs is not None else None,
            )
            for state in choices
        ]
        return Completion(id=self.request_id, created=self.created, model=self.model, choices=out, usage=usage)
