"""Admission's estimate is never below the visual tokens the media loader really produces for the same controls.

The "real" tokens here come from the loader's own sizing functions (``image_size``, ``video_frame_size``,
``sample_indices``: qwen-vl-utils' and transformers' resize math) over many source shapes and lengths; the estimate comes
from ``estimate_cost``, which sees only the part's controls. Both read :func:`server.media.budget.pixel_budget`.
"""

from __future__ import annotations

import pytest

from server.engine.base import ModelInfo
from server.media.budget import (
    Ceilings,
    ImageControls,
    VideoControls,
    image_size,
    pixel_budget,
    sample_indices,
    video_frame_size,
    visual_tokens,
)
from server.media.loader import ImageRef, VideoRef
from server.service.cost import estimate_cost
from server.service.prompt import Conversation
from server.vision import VisionSpec

# A processor default below the server ceiling, so that "min_pixels above the default max" and "detail" both matter.
SPEC = VisionSpec(
    image_min_pixels=4096, image_max_pixels=512 * 512, video_min_pixels=8192, video_max_pixels=16 * 256 * 256
)
CEIL = Ceilings(image_max_pixels=1024 * 1024, video_total_pixels=64 * 256 * 256, video_max_frames=64)
MODEL = ModelInfo(name="m", path="m", max_model_len=1 << 20, created=0, vision=SPEC)
SOURCES = [(1, 1), (64, 64), (33, 6000), (6000, 33), (480, 640), (1080, 1920), (1000, 1001), (4000, 4000), (9000, 50)]
LENGTHS = [(2, 1.0), (9, 30.0), (90, 30.0), (900, 30.0), (9000, 30.0), (60, 2.0)]  # (frames, fps) of the source


def estimate(image: ImageControls | None = None, video: VideoControls | None = None, frames: int = 0) -> int:
    url: str | tuple[str, ...] = tuple(f"f{i}" for i in range(frames)) if frames else "v"
    conversation = Conversation(
        messages=[],
        images=[ImageRef("i", "image", image)] if image is not None else [],
        videos=[VideoRef(url, "video", video)] if video is not None else [],
    )
    return estimate_cost(conversation, 0, MODEL, CEIL)  # no text, no completion: the visual tokens alone


def real_image(c: ImageControls) -> int:
    return max(visual_tokens(1, *image_size(h, w, c, SPEC, CEIL, "p"), SPEC) for h, w in SOURCES)


def real_video(c: VideoControls) -> int:
    """The most tokens the loader produces for a video file with these controls, over source lengths and sizes."""
    most = 0
    max_frames = min(c.max_frames or CEIL.video_max_frames, CEIL.video_max_frames)
    fps = c.fps if c.fps is not None else (None if c.nframes is not None else 2.0)
    for total, source_fps in LENGTHS:
        if c.nframes is not None and min(c.nframes, max_frames, total) > total - 1:
            continue  # qwen-vl-utils refuses a count rounded past the source's frames
        n = len(sample_indices(total, source_fps, fps=fps, nframes=c.nframes, min_frames=None, max_frames=max_frames))
        for h, w in SOURCES[1:]:
            most = max(most, visual_tokens(n, *video_frame_size(n, h, w, c, SPEC, CEIL, "v"), SPEC))
    return most


IMAGE_CASES = {
    "default": ImageControls(),
    "auto": ImageControls(detail="auto"),
    "low": ImageControls(detail="low"),
    "high": ImageControls(detail="high"),
    "min above the default max": ImageControls(min_pixels=600 * 600),
    "min above the ceiling": ImageControls(min_pixels=10**8),
    "min equal to max": ImageControls(min_pixels=300 * 300, max_pixels=300 * 300),
    "tiny max": ImageControls(max_pixels=1000),
    "resized, rounded up": ImageControls(resized_height=112, resized_width=112),
    "resized": ImageControls(resized_height=280, resized_width=420),
    "resized past the ceiling": ImageControls(resized_height=4000, resized_width=3000),
    "low with a max": ImageControls(detail="low", max_pixels=2048 * 2048),
}


@pytest.mark.parametrize("controls", IMAGE_CASES.values(), ids=IMAGE_CASES.keys())
def test_image_estimate_is_never_below_the_loaders_tokens(controls: ImageControls) -> None:
    assert estimate(image=controls) >= real_image(controls)


def test_image_estimates_follow_the_loader_not_a_restated_rule() -> None:
    assert estimate(image=ImageControls(detail="low")) == 256  # the loader's low-detail budget (was 256 of 1024: auto)
    assert estimate(image=ImageControls()) == 256  # the processor's default max, 512² pixels
    assert estimate(image=ImageControls(detail="high")) == 1024  # the server ceiling
    # an explicit minimum above the default maximum raises the budget to it, and qwen-vl-utils rounds a small image's
    # sides up past it: the loader makes up to 506 tokens here; the old estimate (the default maximum) said 256
    assert real_image(ImageControls(min_pixels=600 * 600)) == 506
    assert estimate(image=ImageControls(min_pixels=600 * 600)) == 619
    # 112 rounds up to 128 on both sides: 16 tokens (the old estimate, 112² // 32², said 12)
    assert estimate(image=ImageControls(resized_height=112, resized_width=112)) == 16


def test_the_loader_keeps_every_image_within_its_budget() -> None:
    """Within the bound the estimate counts (qwen-vl-utils' round-up to min_pixels included), never a zero side."""
    for controls in IMAGE_CASES.values():
        budget = pixel_budget(controls, SPEC, CEIL)
        for h, w in SOURCES:
            th, tw = image_size(h, w, controls, SPEC, CEIL, "p")
            assert th * tw <= budget.most_pixels(32) and th % 32 == tw % 32 == 0 and th >= 32 and tw >= 32


VIDEO_CASES = {
    "default": VideoControls(),
    "fps": VideoControls(fps=8.0),
    "max_frames": VideoControls(max_frames=8),
    "nframes": VideoControls(nframes=6),
    "total_pixels": VideoControls(total_pixels=32 * 256 * 256),
    "total_pixels below the frames' minimum": VideoControls(total_pixels=8 * 64 * 64),
    "total_pixels past the ceiling": VideoControls(total_pixels=10**10),
    "min_pixels": VideoControls(min_pixels=512 * 512),
    "max_pixels": VideoControls(max_pixels=128 * 128),
    "resized": VideoControls(resized_height=256, resized_width=320),
    "resized past the share": VideoControls(resized_height=4096, resized_width=4096),
    "resized and max_frames": VideoControls(resized_height=600, resized_width=800, max_frames=4),
}


@pytest.mark.parametrize("controls", VIDEO_CASES.values(), ids=VIDEO_CASES.keys())
def test_video_estimate_is_never_below_the_loaders_tokens(controls: VideoControls) -> None:
    assert estimate(video=controls) >= real_video(controls)


def test_video_estimates_count_qwen_vl_utils_total_pixels_as_it_does() -> None:
    # qwen-vl-utils lets nframes frames share 2 × total_pixels: up to total_pixels / 32² tokens, not half of it.
    total = VideoControls(total_pixels=32 * 256 * 256, max_frames=8)
    assert estimate(video=total) == 2048 and real_video(total) == 2028  # the old estimate: 1024
    # a frame keeps 1.05 × its minimum even past total_pixels, rounded up on a thin frame (the old estimate said 16)
    starved = VideoControls(total_pixels=8 * 64 * 64)
    assert real_video(starved) == 4608 and estimate(video=starved) == 9248
    # fewer frames, a smaller worst case
    assert estimate(video=VideoControls(max_frames=8)) == 4 * 128
    assert estimate(video=VideoControls()) == 512  # transformers' T×H×W budget: 16 × 256² / 32² / 2


@pytest.mark.parametrize("frames", [1, 2, 5, 64])
def test_a_frame_lists_estimate_uses_its_count(frames: int) -> None:
    count = frames + frames % 2  # the loader pads a frame list to an even count
    for controls in (VideoControls(), VideoControls(total_pixels=8 * 64 * 64), VideoControls(resized_height=900)):
        real = max(
            visual_tokens(count, *video_frame_size(count, h, w, controls, SPEC, CEIL, "v"), SPEC)
            for h, w in SOURCES[1:]
        )
        assert estimate(video=controls, frames=frames) >= real


def test_the_default_video_budget_answers_to_the_server_ceiling() -> None:
    low = Ceilings(image_max_pixels=CEIL.image_max_pixels, video_total_pixels=4 * 256 * 256, video_max_frames=64)
    h, w = video_frame_size(2, 1080, 1920, VideoControls(), SPEC, low, "v")
    assert 2 * h * w <= low.video_total_pixels  # the processor's default (16 × 256²) would allow four times as much
    assert pixel_budget(VideoControls(), SPEC, low).tokens(SPEC) >= visual_tokens(2, h, w, SPEC)
