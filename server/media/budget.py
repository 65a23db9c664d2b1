"""Qwen-native pixel budgets and exact visual-token counts.

The resize math is the model's own: ``qwen_vl_utils.smart_resize`` for images and for videos with per-item controls (the
seed README's qwen-vl-utils semantics, 32-pixel rounding for Qwen3-VL), transformers' Qwen3-VL video ``smart_resize`` for
videos left to the processor's defaults. Nothing here re-derives the rounding by hand; only qwen-vl-utils' per-frame budget
formula from ``fetch_video`` (not exposed as a function there) is restated in :func:`video_frame_size`.

A Qwen3-VL item of ``T`` frames resized to ``H×W`` (multiples of ``factor = patch_size × merge_size``) costs
``ceil(T / temporal_patch_size) × (H / factor) × (W / factor)`` visual tokens; an image is one frame.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

from server.errors import MediaUnsupportedError
from server.media.decode import FRAME_FACTOR
from server.vision import VisionSpec

# qwen-vl-utils' defaults for per-item video controls (tokens per frame), as in its vision_process.py.
VIDEO_MIN_TOKENS_PER_FRAME = 128
VIDEO_MAX_TOKENS_PER_FRAME = 768
MAX_ASPECT_RATIO = 200


@dataclass(frozen=True)
class ImageControls:
    min_pixels: int | None = None
    max_pixels: int | None = None
    resized_height: int | None = None
    resized_width: int | None = None
    detail: Literal["auto", "low", "high"] | None = None


@dataclass(frozen=True)
class VideoControls:
    fps: float | None = None
    nframes: int | None = None
    min_frames: int | None = None
    max_frames: int | None = None
    min_pixels: int | None = None
    max_pixels: int | None = None
    total_pixels: int | None = None
    resized_height: int | None = None
    resized_width: int | None = None

    @property
    def sets_pixels(self) -> bool:
        return any(
            v is not None
            for v in (self.min_pixels, self.max_pixels, self.total_pixels, self.resized_height, self.resized_width)
        )


@dataclass(frozen=True)
class Ceilings:
    """The server's upper bounds; request values are clamped to them."""

    image_max_pixels: int
    video_total_pixels: int
    video_max_frames: int


def _smart_resize(
    height: int, width: int, factor: int, min_pixels: int, max_pixels: int, param: str
) -> tuple[int, int]:
    from qwen_vl_utils.vision_process import smart_resize

    if max(height, width) / max(1, min(height, width)) > MAX_ASPECT_RATIO:
        raise MediaUnsupportedError(
            f"{param} has an aspect ratio of {max(height, width) / max(1, min(height, width)):.0f}:1; "
            f"the limit is {MAX_ASPECT_RATIO}:1",
            param=param,
        )
    h, w = smart_resize(height, width, factor=factor, min_pixels=min_pixels, max_pixels=max(min_pixels, max_pixels))
    return int(h), int(w)


def image_size(
    height: int, width: int, controls: ImageControls, spec: VisionSpec, ceilings: Ceilings, param: str
) -> tuple[int, int]:
    """Target (height, width) of an image: the processor's defaults, narrowed by the part's controls, within ceilings."""
    factor = spec.factor
    floor = factor * factor
    ceiling = max(floor, ceilings.image_max_pixels)
    if controls.resized_height and controls.resized_width:
        return _smart_resize(controls.resized_height, controls.resized_width, factor, floor, ceiling, param)
    min_pixels = spec.image_min_pixels
    max_pixels = min(spec.image_max_pixels, ceiling)
    if controls.detail == "low":
        max_pixels = 256 * floor
    elif controls.detail == "high":
        max_pixels = ceiling
    if controls.max_pixels is not None:
        max_pixels = controls.max_pixels
    if controls.min_pixels is not None:
        min_pixels = controls.min_pixels
        if controls.max_pixels is None:  # an explicit minimum may exceed the processor's default maximum
            max_pixels = max(max_pixels, min_pixels)
    max_pixels = max(floor, min(max_pixels, ceiling))
    min_pixels = max(floor, min(min_pixels, max_pixels))
    return _smart_resize(height, width, factor, min_pixels, max_pixels, param)


def video_frame_size(
    frames: int, height: int, width: int, controls: VideoControls, spec: VisionSpec, ceilings: Ceilings, param: str
) -> tuple[int, int]:
    """Per-frame target size of a video with pixel controls: qwen-vl-utils' ``fetch_video`` budget formula."""
    factor = spec.factor
    floor = factor * factor
    if controls.resized_height and controls.resized_width:
        # An explicit size still answers to the video's pixel ceiling: per frame, the share of the total budget a
        # frame may take (qwen-vl-utils' total_pixels / nframes × temporal factor), so frames × size stays bounded.
        per_frame = min(ceilings.image_max_pixels, max(floor, int(ceilings.video_total_pixels / frames * 2)))
        return _smart_resize(controls.resized_height, controls.resized_width, factor, floor, per_frame, param)
    min_pixels = controls.min_pixels if controls.min_pixels is not None else VIDEO_MIN_TOKENS_PER_FRAME * floor
    total = min(controls.total_pixels or ceilings.video_total_pixels, ceilings.video_total_pixels)
    max_pixels = max(min(VIDEO_MAX_TOKENS_PER_FRAME * floor, total / frames * 2), int(min_pixels * 1.05))
    if controls.max_pixels is not None:
        max_pixels = min(controls.max_pixels, max_pixels)
    max_pixels = max(floor, int(max_pixels))
    min_pixels = max(floor, min(min_pixels, max_pixels))
    return _smart_resize(height, width, factor, min_pixels, max_pixels, param)


def default_video_frame_size(frames: int, height: int, width: int, spec: VisionSpec, param: str) -> tuple[int, int]:
    """What the checkpoint's own video processor will resize frames to (transformers' Qwen3-VL math)."""
    from transformers.models.qwen3_vl.video_processing_qwen3_vl import smart_resize

    if max(height, width) / max(1, min(height, width)) > MAX_ASPECT_RATIO:
        raise MediaUnsupportedError(f"{param} has an aspect ratio over {MAX_ASPECT_RATIO}:1", param=param)
    max_pixels = spec.video_max_pixels
    if spec.video_cap_pixels_per_frame:  # Qwen3VLVideoProcessor.resize's per-frame cap
        per_frame = max(
            min(spec.video_max_tokens_per_frame * spec.factor**2, spec.video_max_pixels // frames),
            int(spec.video_min_pixels * 1.05),
        )
        max_pixels = per_frame * frames
    h, w = smart_resize(
        num_frames=frames,
        height=height,
        width=width,
        temporal_factor=spec.temporal_patch_size,
        factor=spec.factor,
        min_pixels=spec.video_min_pixels,
        max_pixels=max_pixels,
    )
    return int(h), int(w)


def sample_indices(
    total: int,
    source_fps: float,
    *,
    fps: float | None,
    nframes: int | None,
    min_frames: int | None,
    max_frames: int,
) -> tuple[int, ...]:
    """Frame indices spread uniformly over the video, counted by qwen-vl-utils' ``smart_nframes`` rule."""
    from qwen_vl_utils.vision_process import smart_nframes

    ceiling = min(max_frames, total)
    rule: dict[str, float | int] = {}
    if nframes is not None:
        rule["nframes"] = max(FRAME_FACTOR, min(nframes, ceiling))
    else:
        rule.update({"fps": fps if fps is not None else 2.0, "max_frames": ceiling})
        if min_frames is not None:
            rule["min_frames"] = min(min_frames, ceiling)
    count = smart_nframes(rule, total_frames=total, video_fps=source_fps)
    return tuple(int(i) for i in np.linspace(0, total - 1, count).round())


def visual_tokens(frames: int, height: int, width: int, spec: VisionSpec) -> int:
    groups = math.ceil(frames / spec.temporal_patch_size) if frames > 1 else 1
    return groups * (height // spec.factor) * (width // spec.factor)


def preload() -> None:
    """Import the resize math's modules now (qwen-vl-utils pulls in torch and torchvision: seconds, holding the GIL).

    Called once at start-up, so that the first media request does not stall the event loop with an import.
    """
    import qwen_vl_utils.vision_process  # noqa: F401
    import transformers.models.qwen3_vl.video_processing_qwen3_vl  # noqa: F401
