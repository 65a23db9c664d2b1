"""A fake ``Engine`` for unit and API tests: scripted output, injectable latency and failures, no vLLM.

It really implements the protocol (rendering, streaming deltas, ``n`` choices, ``max_tokens``/``stop`` truncation, health),
so the service and API layers run exactly as they do over vLLM.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from server.engine.base import (
    ChoiceDelta,
    EngineRequest,
    EngineStep,
    FinishReason,
    ModelInfo,
    PromptCount,
    TokenLogprob,
    TopLogprob,
    VisionSpec,
    with_literals,
)
from server.errors import ContextLengthError, EngineUnavailableError, ServerError

# The fake counts a visual item as this many prompt tokens (the real engine counts its Qwen grid).
FAKE_TOKENS_PER_IMAGE = 16
FAKE_TOKENS_PER_VIDEO = 32
FAKE_CACHE_BLOCK = 16  # a prompt seen before is found in whole blocks, its last token recomputed (as vLLM does)
# Qwen3-VL's added tokens (its tokenizer's get_added_vocab()), so client text that spells one is set aside as a literal.
FAKE_ADDED_TOKENS = (
    *(f"<|{name}|>" for name in ("endoftext", "im_start", "im_end", "object_ref_start", "object_ref_end")),
    *(f"<|{name}|>" for name in ("box_start", "box_end", "quad_start", "quad_end", "vision_start", "vision_end")),
    *(f"<|{name}|>" for name in ("vision_pad", "image_pad", "video_pad")),
    *("<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>", "<think>", "</think>"),
)


@dataclass
class FakeEngine:
    """Answers every request with ``script`` (one token per list item)."""

    script: Sequence[str] = ("Hello", ",", " world", "!")
    model_name: str = "fake-qwen3vl"
    max_model_len: int = 4096
    delay_s: float = 0.0
    fail_with: ServerError | None = None
    fail_after: int | None = None  # with fail_with: fail after this many steps instead of before the first
    dead: bool = False
    vanish_after: int | None = None  # end the stream quietly (no finish reason) after this many steps
    # Parsed output per script token (reasoning, tool-call pieces), as the real engine's parsers would produce it; the
    # finish reason and index come from the fake. Unset: every token is plain content.
    script_parts: Sequence[ChoiceDelta] | None = None
    # The tiny demo checkpoint's budgets (small, so tests stay cheap).
    vision: VisionSpec = field(
        default_factory=lambda: VisionSpec(
            image_min_pixels=4096, image_max_pixels=512 * 512, video_min_pixels=8192, video_max_pixels=16 * 256 * 256
        )
    )
    aborted: int = 0
    in_flight: int = 0
    requests: list[EngineRequest] = field(default_factory=list)
    counted: list[EngineRequest] = field(default_factory=list)  # requests counted (count_prompt), not generated
    rendered: list[Sequence[Mapping[str, Any]]] = field(default_factory=list)
    prompts_seen: set[tuple[Any, ...]] = field(default_factory=set)  # the miniature prefix cache's keys

    @property
    def model(self) -> ModelInfo:
        return ModelInfo(
            name=self.model_name,
            path=f"/fake/{self.model_name}",
            max_model_len=self.max_model_len,
            created=1700000000,
            vision=self.vision,
            added_tokens=FAKE_ADDED_TOKENS,
        )

    def render_prompt(self, messages: Sequence[Mapping[str, Any]], **template_kwargs: Any) -> str:
        self.rendered.append(messages)
        parts: list[str] = []
        for message in messages:
            content = message.get("content")
            if isinstance(content, str):
                parts.append(f"<{message['role']}>{content}")
                continue
            items = []
            for item in content or []:
                kind = item.get("type")
                items.append(f"[{kind}]" if kind in ("image", "video") else str(item.get("text", "")))
            parts.append(f"<{message['role']}>" + "".join(items))
        return "\n".join(parts) + "\n<assistant>"

    def prompt_tokens(self, request: EngineRequest) -> int:
        words = len(with_literals(request.prompt, request.literals).split())
        return words + FAKE_TOKENS_PER_IMAGE * len(request.images) + FAKE_TOKENS_PER_VIDEO * len(request.videos)

    async def count_prompt(self, request: EngineRequest) -> PromptCount:
        if self.dead:
            raise EngineUnavailableError("the inference engine has stopped")
        self.counted.append(request)
        return PromptCount(
            self.prompt_tokens(request),
            FAKE_TOKENS_PER_IMAGE * len(request.images),
            FAKE_TOKENS_PER_VIDEO * len(request.videos),
        )

    def cached_tokens(self, request: EngineRequest, prompt_tokens: int) -> int:
        """A prefix cache in miniature: a prompt identical to an earlier one (text and media) hits in whole blocks."""
        return (
            (prompt_tokens - 1) // FAKE_CACHE_BLOCK * FAKE_CACHE_BLOCK
            if _cache_key(request) in self.prompts_seen
            else 0
        )

    async def generate(self, request: EngineRequest) -> AsyncIterator[EngineStep]:
        cached = self.cached_tokens(request, self.prompt_tokens(request))
        self.prompts_seen.add(_cache_key(request))
        self.requests.append(request)
        if self.dead:
            raise EngineUnavailableError("the inference engine has stopped")
        if self.fail_with is not None and self.fail_after is None:
            raise self.fail_with
        prompt_tokens = self.prompt_tokens(request)
        room = self.max_model_len - prompt_tokens
        max_tokens = request.sampling.max_tokens if request.sampling.max_tokens is not None else room
        if max_tokens > room:
            raise ContextLengthError(f"at most {room} completion tokens fit", param="max_tokens")
        outputs = [self._choice(max_tokens, request.sampling.stop) for _ in range(request.sampling.n)]
        longest = max(len(tokens) for tokens, _ in outputs)
        epoch = self.aborted
        self.in_flight += 1
        try:
            async for step in self._steps(outputs, longest, prompt_tokens, epoch, request.sampling.logprobs):
                yield replace(
                    step,
                    cached_tokens=cached,
                    image_tokens=FAKE_TOKENS_PER_IMAGE * len(request.images),
                    video_tokens=FAKE_TOKENS_PER_VIDEO * len(request.videos),
                )
        finally:
            self.in_flight -= 1

    async def _steps(
        self,
        outputs: list[tuple[list[str], FinishReason]],
        longest: int,
        prompt_tokens: int,
        epoch: int,
        logprobs: int | None = None,
    ) -> AsyncIterator[EngineStep]:
        for step in range(longest):
            if self.aborted != epoch:  # abort_all() was called: end every choice as vLLM does
                aborted = tuple(
                    ChoiceDelta(index=i, text="", token_ids=(), finish_reason="abort") for i in range(len(outputs))
                )
                yield EngineStep(prompt_tokens=prompt_tokens, choices=aborted, finished=True)
                return
            if self.fail_with is not None and step == self.fail_after:
                raise self.fail_with
            if step == self.vanish_after:
                return
            if self.delay_s:
                await asyncio.sleep(self.delay_s)
            else:
                await asyncio.sleep(0)
            deltas = []
            for index, (tokens, reason) in enumerate(outputs):
                if step >= len(tokens):
                    continue
                last = step == len(tokens) - 1
                part = self.script_parts[step] if self.script_parts and step < len(self.script_parts) else None
                deltas.append(
                    ChoiceDelta(
                        index=index,
                        text=tokens[step],
                        token_ids=(1000 + step,),
                        finish_reason=reason if last else None,
                        content=part.content if part is not None else tokens[step],
                        reasoning=part.reasoning if part is not None else None,
                        tool_calls=part.tool_calls if part is not None else (),
                        logprobs=part.logprobs
                        if part is not None and part.logprobs
                        else _logprobs(tokens[step], logprobs),
                    )
                )
            yield EngineStep(prompt_tokens=prompt_tokens, choices=tuple(deltas), finished=step == longest - 1)

    def _choice(self, max_tokens: int, stop: Sequence[str]) -> tuple[list[str], FinishReason]:
        tokens: list[str] = []
        for token in self.script:
            if len(tokens) == max_tokens:
                return tokens, "length"
            if token in stop:
                return tokens or [""], "stop"
            tokens.append(token)
        return tokens or [""], "stop"

    async def check_health(self) -> None:
        if self.dead:
            raise EngineUnavailableError("the inference engine has stopped")

    async def abort_all(self) -> int:
        self.aborted += 1
        return self.in_flight

    async def shutdown(self) -> None:
        self.dead = True


def _logprobs(token: str, alternatives: int | None) -> tuple[TokenLogprob, ...]:
    """Made-up but well-formed logprobs when the request asks for them: the sampled token, then ``alternatives``."""
    if alternatives is None:
        return ()
    top = tuple(TopLogprob(f"{token}~{k}", -1.0 - k, tuple(f"{token}~{k}".encode())) for k in range(alternatives))
    return (TokenLogprob(token, -0.5, tuple(token.encode()), top),)


def _cache_key(request: EngineRequest) -> tuple[Any, ...]:
    return (request.prompt, request.image_uuids, request.video_uuids, len(request.images), len(request.videos))
