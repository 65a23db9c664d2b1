"""Budgets follow qwen-vl-utils' and the processor's own math; request values are clamped to server ceilings."""

from __future__ import annotations

import pytest
from qwen_vl_utils.vision_process import smart_resize

from server.engine.base import VisionSpec
from server.errors import MediaUnsupportedError
from server.media.budget import (
    Ceilings,
    ImageControls,
    VideoControls,
    image_size,
    video_frame_size,
    visual_tokens,
)

SPEC = VisionSpec(
    image_min_pixels=4096, image_max_pixels=512 * 512, video_min_pixels=8192, video_max_pixels=16 * 256 * 256
)
CEIL = Ceilings(image_max_pixels=1024 * 1024, video_total_pixels=64 * 256 * 256, video_max_frames=64)


def size(h: int, w: int, **controls: object) -> tuple[int, int]:
    return image_size(h, w, ImageControls(**controls), SPEC, CEIL, "p")  # type: ignore[arg-type]


def test_default_image_budget_is_the_processors() -> None:
    assert size(480, 640) == smart_resize(480, 640, factor=32, min_pixels=4096, max_pixels=512 * 512)
    assert size(480, 640) == (416, 576)


def test_image_controls() -> None:
    assert size(480, 640, max_pixels=65536) == smart_resize(480, 640, factor=32, min_pixels=4096, max_pixels=65536)
    assert size(64, 64, min_pixels=256 * 256) == (256, 256)
    assert size(480, 640, resized_height=280, resized_width=420) == (288, 416)
    assert size(480, 640, detail="low") == smart_resize(480, 640, factor=32, min_pixels=4096, max_pixels=256 * 1024)
    # "high" and an over-large max_pixels reach the server ceiling, never beyond it
    assert size(4000, 4000, detail="high") == smart_resize(4000, 4000, 32, 4096, 1024 * 1024)
    assert size(4000, 4000, max_pixels=10**9) == smart_resize(4000, 4000, 32, 4096, 1024 * 1024)
    # min above max is narrowed, not an error
    assert size(480, 640, min_pixels=10**8, max_pixels=65536) == smart_resize(480, 640, 32, 65536, 65536)


def test_degenerate_images() -> None:
    assert size(1, 1) == (64, 64)  # resized up to the processor's minimum (4096 px)
    with pytest.raises(MediaUnsupportedError):
        size(10, 5000)


def test_tokens() -> None:
    assert visual_tokens(1, 448, 576, SPEC) == 14 * 18
    assert visual_tokens(8, 64, 96, SPEC) == 4 * 2 * 3
    assert visual_tokens(3, 64, 64, SPEC) == 2 * 4  # odd frame counts are padded by the processor


def test_video_controls_follow_qwen_vl_utils() -> None:
    frames = 8
    controls = VideoControls(max_pixels=128 * 128)
    h, w = video_frame_size(frames, 480, 640, controls, SPEC, CEIL, "v")
    min_pixels = 128 * 32 * 32
    max_pixels = max(min(768 * 1024, CEIL.video_total_pixels / frames * 2), int(min_pixels * 1.05))
    assert (h, w) == smart_resize(480, 640, 32, min(min_pixels, 128 * 128), min(128 * 128, max_pixels))
    total = VideoControls(total_pixels=8 * 64 * 64, min_pixels=1024)
    h2, w2 = video_frame_size(frames, 480, 640, total, SPEC, CEIL, "v")
    assert h2 * w2 <= 64 * 64 * 2


def test_default_video_size_is_the_processors() -> None:
    from transformers.models.qwen3_vl.video_processing_qwen3_vl import smart_resize as processor_resize

    assert video_frame_size(4, 96, 128, VideoControls(), SPEC, CEIL, "v") == processor_resize(
        num_frames=4, height=96, width=128, temporal_factor=2, factor=32, min_pixels=8192, max_pixels=16 * 256 * 256
    )


def test_an_explicit_video_size_cannot_escape_the_total_pixel_ceiling() -> None:
    frames = 64
    controls = VideoControls(resized_height=4096, resized_width=4096)
    h, w = video_frame_size(frames, 480, 640, controls, SPEC, CEIL, "v")
    assert h * w <= CEIL.video_total_pixels / frames * 2  # the frame's share of the whole video's budget
    assert frames * h * w <= 2 * CEIL.video_total_pixels  # not 64 × 4096² (3 GB of RGB) as before
    few = video_frame_size(2, 480, 640, VideoControls(resized_height=256, resized_width=320), SPEC, CEIL, "v")
    assert few == (256, 320)  # within its share, an explicit size is kept exactly
