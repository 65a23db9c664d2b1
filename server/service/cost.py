"""A request's estimated token cost, known before any media is fetched: what admission control weighs.

Visual tokens are bounded from the budgets each part is allowed (its own ``max_pixels``/``total_pixels`` or the model's
defaults, within the server's ceilings), text from its length (≈ 3 characters per token, an over-estimate for Qwen's
tokenizer on English), and the completion by ``max_tokens`` (or what the context leaves).
"""

from __future__ import annotations

from typing import Any

from server.engine.base import ModelInfo
from server.media.budget import Ceilings
from server.service.prompt import Conversation

CHARS_PER_TOKEN = 3


def estimate_cost(conversation: Conversation, max_tokens: int | None, model: ModelInfo, ceilings: Ceilings) -> int:
    spec = model.vision
    per_token = spec.factor * spec.factor
    visual = 0
    for image in conversation.images:
        c = image.controls
        if c.resized_height and c.resized_width:
            pixels = c.resized_height * c.resized_width
        else:
            pixels = c.max_pixels or (ceilings.image_max_pixels if c.detail == "high" else spec.image_max_pixels)
        visual += max(1, min(pixels, ceilings.image_max_pixels) // per_token)
    for video in conversation.videos:
        total = video.controls.total_pixels or min(spec.video_max_pixels, ceilings.video_total_pixels)
        visual += max(1, min(total, ceilings.video_total_pixels) // per_token // spec.temporal_patch_size)
    text = sum(len(str(part.get("text", ""))) for m in conversation.messages for part in _parts(m))
    prompt = visual + text // CHARS_PER_TOKEN + 16 * len(conversation.messages)
    completion = max_tokens if max_tokens is not None else max(1, model.max_model_len - prompt)
    return min(prompt + completion, 4 * model.max_model_len)


def _parts(message: dict[str, Any]) -> list[dict[str, Any]]:
    content = message.get("content")
    if isinstance(content, str):
        return [{"text": content}]
    return [p for p in content or [] if isinstance(p, dict)]
