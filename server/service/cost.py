"""A request's estimated token cost, known before any media is fetched: what admission control weighs.

Visual tokens come from :func:`server.media.budget.pixel_budget`, the same budget the media loader resizes within, so
the estimate is never below what the loader will produce (for a video, at the costliest frame count it may sample);
text is bounded from its length (≈ 3 characters per token, an over-estimate for Qwen's tokenizer on English), and the
completion by ``max_tokens`` (or what the context leaves).
"""

from __future__ import annotations

from typing import Any

from server.engine.base import ModelInfo
from server.media.budget import Ceilings, pixel_budget
from server.media.decode import FRAME_FACTOR
from server.service.prompt import Conversation

CHARS_PER_TOKEN = 3


def estimate_cost(conversation: Conversation, max_tokens: int | None, model: ModelInfo, ceilings: Ceilings) -> int:
    spec = model.vision
    visual = sum(pixel_budget(i.controls, spec, ceilings, param=i.param).tokens(spec) for i in conversation.images)
    for video in conversation.videos:
        # A frame list's count is known now (padded to an even count, as the loader does); a file's is not yet.
        frames = len(video.url) + len(video.url) % FRAME_FACTOR if isinstance(video.url, tuple) else None
        visual += pixel_budget(video.controls, spec, ceilings, frames=frames, param=video.param).tokens(spec)
    text = sum(len(str(part.get("text", ""))) for m in conversation.messages for part in _parts(m))
    prompt = visual + text // CHARS_PER_TOKEN + 16 * len(conversation.messages)
    completion = max_tokens if max_tokens is not None else max(1, model.max_model_len - prompt)
    return min(prompt + completion, 4 * model.max_model_len)


def _parts(message: dict[str, Any]) -> list[dict[str, Any]]:
    content = message.get("content")
    if isinstance(content, str):
        return [{"text": content}]
    return [p for p in content or [] if isinstance(p, dict)]
