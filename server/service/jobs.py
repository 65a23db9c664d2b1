"""The job description an API hands the runner: everything about one request that the runner does not decide.

An API (chat completions, text completions, and whatever comes next) checks a request before any work and describes
it as a ``Job``: its admission cost, how to prepare the engine request (fetching media, rendering the prompt), and how
to shape the choices into its chunks (streaming) or its whole answer. The runner owns everything in between, once.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Protocol, TypeVar

from server.engine.base import EngineRequest, SamplingSpec
from server.schemas.common import CompletionBase, PromptTokensDetails, Usage
from server.service.choices import ChoiceState, Piece

ChunkT = TypeVar("ChunkT", covariant=True)
AnswerT = TypeVar("AnswerT", covariant=True)


class Job(Protocol[ChunkT, AnswerT]):
    """One checked request of some API. ``prepare`` runs once the request is admitted, within its deadline."""

    @property
    def cost(self) -> int:
        """Estimated tokens (prompt, media and completion), known before any work: what admission weighs."""
        ...

    async def prepare(self) -> EngineRequest: ...

    def opening(self, choices: Sequence[ChoiceState]) -> Iterable[ChunkT]:
        """Chunks sent before the first piece (chat: the assistant role)."""
        ...

    def chunk(self, pieces: Sequence[Piece]) -> ChunkT | None:
        """One engine step's applied pieces as a chunk; None when they carry nothing the client would see."""
        ...

    def closing(self, usage: Usage) -> Iterable[ChunkT]:
        """Chunks sent after every choice finished (the usage chunk, when the client asked for it)."""
        ...

    def answer(self, choices: Sequence[ChoiceState], usage: Usage) -> AnswerT:
        """The whole answer, from the final states of the choices: the same states a stream's pieces built."""
        ...


def usage(prompt: int, completion: int, image_tokens: int = 0, video_tokens: int = 0, cached_tokens: int = 0) -> Usage:
    details = PromptTokensDetails(cached_tokens=cached_tokens, image_tokens=image_tokens, video_tokens=video_tokens)
    return Usage(
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=prompt + completion,
        prompt_tokens_details=details,
    )


def sampling_spec(req: CompletionBase, logprobs: int | None = None) -> SamplingSpec:
    """The sampling fields every API shares; ``logprobs``: alternatives per token to report, None for no logprobs."""
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
