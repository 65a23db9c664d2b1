"""Per-item Qwen controls really change what the engine sees, exactly as qwen-vl-utils' math predicts.

Expected sizes come from ``qwen_vl_utils.smart_resize`` with the budget written out per case; the observed count is the
engine's own (``usage.prompt_tokens_details``, read from vLLM's placeholders), and the prompt length moves by exactly
the difference.
"""

from __future__ import annotations

from typing import Any

import pytest
from qwen_vl_utils.vision_process import smart_resize

from tests.e2e.conftest import LiveServer
from tests.e2e.test_serving import complete, png
from tests.media_factory import data_url, mp4_bytes

pytestmark = pytest.mark.e2e

TINY_MIN, TINY_MAX = 4096, 512 * 512  # the tiny checkpoint's image processor budget
CEILING = 1024 * 1024  # the e2e server's --media-image-max-pixels


def tokens(h: int, w: int, frames: int = 1) -> int:
    return max(1, frames // 2) * (h // 32) * (w // 32)


def ask_image(server: LiveServer, url_fields: dict[str, Any]) -> tuple[int, int]:
    image = {"url": data_url(png(640, 480, seed=21)), **url_fields}
    messages = [
        {"role": "user", "content": [{"type": "image_url", "image_url": image}, {"type": "text", "text": "Hi"}]}
    ]
    completion = complete(server, messages, max_tokens=1, temperature=0)
    assert completion.usage is not None
    details = completion.usage.model_dump()["prompt_tokens_details"]
    return completion.usage.prompt_tokens, int(details["image_tokens"])


IMAGE_CASES = [
    ({}, smart_resize(480, 640, 32, TINY_MIN, TINY_MAX)),
    ({"max_pixels": 65536}, smart_resize(480, 640, 32, TINY_MIN, 65536)),
    ({"min_pixels": 600 * 800}, smart_resize(480, 640, 32, 600 * 800, CEILING)),  # above the processor's own max
    ({"resized_height": 280, "resized_width": 420}, smart_resize(280, 420, 32, 1024, CEILING)),
    ({"detail": "low"}, smart_resize(480, 640, 32, TINY_MIN, 256 * 1024)),
    ({"detail": "high"}, smart_resize(480, 640, 32, TINY_MIN, CEILING)),
    ({"max_pixels": 10**9}, smart_resize(480, 640, 32, TINY_MIN, CEILING)),  # clamped to the server ceiling
]


def test_image_controls_change_the_engines_token_count_exactly(dense_server: LiveServer) -> None:
    base_prompt, base_tokens = ask_image(dense_server, {})
    assert base_tokens == tokens(*IMAGE_CASES[0][1])
    for fields, (h, w) in IMAGE_CASES[1:]:
        prompt, image_tokens = ask_image(dense_server, fields)
        assert image_tokens == tokens(h, w), fields
        assert prompt - base_prompt == image_tokens - base_tokens, fields


def ask_video(server: LiveServer, fields: dict[str, Any]) -> tuple[int, int]:
    clip = data_url(mp4_bytes(frames=20, width=128, height=96, fps=10.0, seed=5), "video/mp4")
    part = {"type": "video_url", "video_url": {"url": clip, **fields}}
    completion = complete(server, [{"role": "user", "content": [part]}], max_tokens=1, temperature=0)
    assert completion.usage is not None
    details = completion.usage.model_dump()["prompt_tokens_details"]
    return completion.usage.prompt_tokens, int(details["video_tokens"])


# A 2 s clip of 20 frames at 10 fps, 128×96. Per-frame budgets follow qwen-vl-utils' fetch_video:
# min = min_pixels or 128×32×32, max = max(min(768×32×32, total/frames×2), 1.05×min), narrowed by max_pixels.
VIDEO_CASES = [
    ({"fps": 5.0, "max_pixels": 4096}, 10, smart_resize(96, 128, 32, 4096, 4096)),
    ({"nframes": 6, "max_pixels": 4096}, 6, smart_resize(96, 128, 32, 4096, 4096)),
    ({"fps": 10.0, "max_frames": 8, "max_pixels": 4096}, 8, smart_resize(96, 128, 32, 4096, 4096)),
    ({"fps": 1.0, "min_frames": 6, "max_pixels": 4096}, 6, smart_resize(96, 128, 32, 4096, 4096)),
    ({"min_pixels": 256 * 256}, 4, smart_resize(96, 128, 32, 256 * 256, 768 * 1024)),
    ({"total_pixels": 4 * 64 * 64, "min_pixels": 1024}, 4, smart_resize(96, 128, 32, 1024, 2 * 64 * 64)),
    ({"resized_height": 64, "resized_width": 64}, 4, (64, 64)),
]


@pytest.mark.parametrize(("fields", "frames", "size"), VIDEO_CASES)
def test_video_controls_change_the_engines_token_count_exactly(
    dense_server: LiveServer, fields: dict[str, Any], frames: int, size: tuple[int, int]
) -> None:
    _, video_tokens = ask_video(dense_server, fields)
    assert video_tokens == tokens(size[0], size[1], frames)


def test_video_without_controls_is_counted_as_the_processor_resizes_it(dense_server: LiveServer) -> None:
    from transformers.models.qwen3_vl.video_processing_qwen3_vl import smart_resize as processor_resize

    _, video_tokens = ask_video(dense_server, {})
    # The tiny checkpoint's video processor: total budget [8192, 16×256×256] over T×H×W, per-frame cap on.
    per_frame = max(min(768 * 1024, 16 * 256 * 256 // 4), int(8192 * 1.05))
    h, w = processor_resize(
        num_frames=4, height=96, width=128, temporal_factor=2, factor=32, min_pixels=8192, max_pixels=per_frame * 4
    )
    assert video_tokens == tokens(h, w, 4)


def test_context_overflow_lists_each_items_tokens(dense_server: LiveServer) -> None:
    from openai import BadRequestError

    image = {"url": data_url(png(640, 480, seed=22))}
    messages = [
        {"role": "user", "content": [{"type": "image_url", "image_url": image}, {"type": "text", "text": "Hi"}]}
    ]
    with pytest.raises(BadRequestError) as info:
        complete(dense_server, messages, max_tokens=4096 - 100)
    assert info.value.code == "context_length_exceeded"
    expected = tokens(*smart_resize(480, 640, 32, TINY_MIN, TINY_MAX))
    assert f"messages[0].content[0].image_url: {expected} tokens" in str(info.value)
