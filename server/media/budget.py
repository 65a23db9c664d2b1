"""Qwen-native pixel budgets and exact visual-token counts.

One function, :func:`pixel_budget`, says how many pixels a part may have after resizing, from its controls, the model's
:class:`VisionSpec` and the server's :class:`Ceilings`. The media loader resizes within that budget, and admission's
estimate (``server.service.cost``), made before anything is fetched, counts tokens from the same budget, so the two
cannot disagree.

The resize math is the model's own: ``qwen_vl_utils.smart_resize`` for images and for videos with per-item controls (the
seed README's qwen-vl-utils semantics, 32-pixel rounding for Qwen3-VL), transformers' Qwen3-VL video ``smart_resize`` for
videos left to the processor's defaults. Only qwen-vl-utils' per-frame budget formula from ``fetch_video`` (not exposed as
a function there) is restated, in :func:`_controlled_video_budget`. Where qwen-vl-utils' rounding goes past its own
maximum (rounding a small item up to ``min_pixels``) the result is kept and the budget's bound covers it
(:attr:`PixelBudget.most_pixels`); only a zero or over-large one-patch-thin side is corrected (:func:`_fit`).

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
LOW_DETAIL_TOKENS = 256  # OpenAI's detail "low": one small, fixed-size look at the image
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


@dataclass(frozen=True)
class PixelBudget:
    """The pixels an image, or each frame of a video, may have after resizing: what the loader enforces.

    ``min_pixels`` and ``max_pixels`` are per image or per frame (what the resize math is given); ``frames`` is 1 for an
    image and the sampled frame count for a video. :meth:`tokens` is the most visual tokens an item within it costs.
    """

    min_pixels: int
    max_pixels: int
    frames: int = 1
    size: tuple[int, int] | None = None  # an explicit resized_height/width, already resized: the exact target

    def most_pixels(self, factor: int) -> int:
        """The most pixels per image or frame the resize can give: ``max_pixels``, or more where qwen-vl-utils'
        smart_resize rounds both sides of a small item up to reach ``min_pixels`` (kept as it is, for fidelity)."""
        if self.size is not None:
            return self.size[0] * self.size[1]
        return max(self.max_pixels, _rounded_up(self.min_pixels, factor))

    def tokens(self, spec: VisionSpec) -> int:
        # Sides are multiples of the factor, so H × W <= most_pixels gives (H / f) × (W / f) <= most_pixels // f².
        return _groups(self.frames, spec) * (self.most_pixels(spec.factor) // (spec.factor * spec.factor))


def _rounded_up(min_pixels: int, factor: int) -> int:
    """A bound on smart_resize's ceil branch: an item scaled to ``min_pixels`` with both sides rounded up to the factor.

    With ``a × b = min_pixels`` the rounded item is at most ``(a + f)(b + f) = min_pixels + f(a + b) + f²``, largest at
    the thinnest shape allowed (``MAX_ASPECT_RATIO``). It exceeds ``max_pixels`` only when a part sets ``min_pixels``
    near or above it (or a video's per-frame minimum outweighs its share of ``total_pixels``).
    """
    a, b = math.sqrt(min_pixels / MAX_ASPECT_RATIO), math.sqrt(min_pixels * MAX_ASPECT_RATIO)
    return math.ceil((a + factor) * (b + factor))


def pixel_budget(
    controls: ImageControls | VideoControls,
    spec: VisionSpec,
    ceilings: Ceilings,
    *,
    frames: int | None = None,
    param: str = "media",
) -> PixelBudget:
    """The budget of one part: its controls, else the processor's defaults, within the server's ceilings.

    A video's per-frame budget depends on how many frames are sampled: the loader passes the count it sampled; the
    estimate, made before the video is seen, passes none and gets the budget of the costliest count the part may sample
    (a frame list's count is known up front: it is passed). An explicit ``resized_height``/``resized_width`` is resized
    here already (its budget is its exact size), so a too-thin one is refused (``param`` names it) before any fetch.
    """
    if isinstance(controls, ImageControls):
        return _image_budget(controls, spec, ceilings, param)
    if frames is not None:
        return _video_budget(frames, controls, spec, ceilings, param)
    counts = range(FRAME_FACTOR, _most_frames(controls, ceilings) + 1, FRAME_FACTOR)
    budgets = (_video_budget(n, controls, spec, ceilings, param) for n in counts)
    return max(budgets, key=lambda b: b.tokens(spec))


def _image_budget(c: ImageControls, spec: VisionSpec, ceilings: Ceilings, param: str) -> PixelBudget:
    floor = spec.factor * spec.factor
    ceiling = max(floor, ceilings.image_max_pixels)
    if c.resized_height and c.resized_width:
        h, w = _smart_resize(c.resized_height, c.resized_width, spec.factor, floor, ceiling, param)
        return PixelBudget(floor, h * w, size=(h, w))
    min_pixels = spec.image_min_pixels
    max_pixels = min(spec.image_max_pixels, ceiling)
    if c.detail == "low":
        max_pixels = LOW_DETAIL_TOKENS * floor
    elif c.detail == "high":
        max_pixels = ceiling
    if c.max_pixels is not None:
        max_pixels = c.max_pixels
    if c.min_pixels is not None:
        min_pixels = c.min_pixels
        if c.max_pixels is None:  # an explicit minimum may exceed the processor's default maximum
            max_pixels = max(max_pixels, min_pixels)
    max_pixels = max(floor, min(max_pixels, ceiling))
    return PixelBudget(max(floor, min(min_pixels, max_pixels)), max_pixels)


def _video_budget(frames: int, c: VideoControls, spec: VisionSpec, ceilings: Ceilings, param: str) -> PixelBudget:
    if c.sets_pixels:
        return _controlled_video_budget(frames, c, spec, ceilings, param)
    # The checkpoint's own video processor counts its budgets over T × H × W; the server's ceiling bounds it too.
    floor = spec.factor * spec.factor
    total = min(spec.video_max_pixels, ceilings.video_total_pixels)
    per_frame = total // frames
    if spec.video_cap_pixels_per_frame:  # Qwen3VLVideoProcessor.resize's per-frame cap
        per_frame = max(min(spec.video_max_tokens_per_frame * floor, per_frame), int(spec.video_min_pixels * 1.05))
    return PixelBudget(-(-spec.video_min_pixels // frames), max(floor, per_frame), frames)


def _controlled_video_budget(
    frames: int, c: VideoControls, spec: VisionSpec, ceilings: Ceilings, param: str
) -> PixelBudget:
    """qwen-vl-utils' ``fetch_video`` per-frame budget, with the server's ceilings."""
    floor = spec.factor * spec.factor
    if c.resized_height and c.resized_width:
        # An explicit size still answers to the video's pixel ceiling: per frame, the share of the total budget a
        # frame may take (qwen-vl-utils' total_pixels / nframes × temporal factor), so frames × size stays bounded.
        share = min(ceilings.image_max_pixels, max(floor, int(ceilings.video_total_pixels / frames * 2)))
        h, w = _smart_resize(c.resized_height, c.resized_width, spec.factor, floor, share, param)
        return PixelBudget(floor, h * w, frames, size=(h, w))
    min_pixels = c.min_pixels if c.min_pixels is not None else VIDEO_MIN_TOKENS_PER_FRAME * floor
    total = min(c.total_pixels or ceilings.video_total_pixels, ceilings.video_total_pixels)
    # As in qwen-vl-utils, a frame keeps 1.05 × min_pixels even when that takes the video past total_pixels.
    max_pixels = max(min(VIDEO_MAX_TOKENS_PER_FRAME * floor, total / frames * 2), int(min_pixels * 1.05))
    if c.max_pixels is not None:
        max_pixels = min(c.max_pixels, max_pixels)
    max_pixels = max(floor, int(max_pixels))
    return PixelBudget(max(floor, min(min_pixels, max_pixels)), max_pixels, frames)


def _most_frames(c: VideoControls, ceilings: Ceilings) -> int:
    """The most frames a video file's part may be sampled to (:func:`sample_indices`), rounded up to the frame factor."""
    most = ceilings.video_max_frames
    if c.nframes is not None:
        most = min(most, c.nframes)
    elif c.max_frames is not None:
        most = min(most, c.max_frames)
    return max(FRAME_FACTOR, -(-most // FRAME_FACTOR) * FRAME_FACTOR)


def image_size(
    height: int, width: int, controls: ImageControls, spec: VisionSpec, ceilings: Ceilings, param: str
) -> tuple[int, int]:
    """Target (height, width) of an image: qwen-vl-utils' resize within :func:`pixel_budget`."""
    budget = pixel_budget(controls, spec, ceilings, param=param)
    if budget.size is not None:
        return budget.size
    return _smart_resize(height, width, spec.factor, budget.min_pixels, budget.max_pixels, param)


def video_frame_size(
    frames: int, height: int, width: int, controls: VideoControls, spec: VisionSpec, ceilings: Ceilings, param: str
) -> tuple[int, int]:
    """Per-frame target size of a video of ``frames`` sampled frames, within :func:`pixel_budget`.

    With pixel controls, qwen-vl-utils' resize (as ``fetch_video``); without, the checkpoint's own video processor's
    (transformers' Qwen3-VL math), so that the processor leaves the frames as they are.
    """
    budget = pixel_budget(controls, spec, ceilings, frames=frames, param=param)
    if budget.size is not None:
        return budget.size
    if controls.sets_pixels:
        return _smart_resize(height, width, spec.factor, budget.min_pixels, budget.max_pixels, param)
    from transformers.models.qwen3_vl.video_processing_qwen3_vl import smart_resize

    _check_aspect(height, width, param)
    h, w = smart_resize(
        num_frames=frames,
        height=height,
        width=width,
        temporal_factor=spec.temporal_patch_size,
        factor=spec.factor,
        min_pixels=budget.min_pixels * frames,
        max_pixels=budget.max_pixels * frames,
    )
    return _fit(int(h), int(w), spec.factor, budget.max_pixels)


def _smart_resize(
    height: int, width: int, factor: int, min_pixels: int, max_pixels: int, param: str
) -> tuple[int, int]:
    from qwen_vl_utils.vision_process import smart_resize

    _check_aspect(height, width, param)
    h, w = smart_resize(height, width, factor=factor, min_pixels=min_pixels, max_pixels=max(min_pixels, max_pixels))
    if h < factor or w < factor:  # its floor branch rounds a thin side to 0: one patch, within max_pixels
        return _fit(int(h), int(w), factor, max_pixels)
    return int(h), int(w)


def _check_aspect(height: int, width: int, param: str) -> None:
    ratio = max(height, width) / max(1, min(height, width))
    if ratio > MAX_ASPECT_RATIO:
        raise MediaUnsupportedError(
            f"{param} has an aspect ratio of {ratio:.0f}:1; the limit is {MAX_ASPECT_RATIO}:1", param=param
        )


def _fit(height: int, width: int, factor: int, max_pixels: int) -> tuple[int, int]:
    """``height × width`` within ``max_pixels``, sides multiples of ``factor`` and at least one patch each.

    For the two misses of the resize math that no processor would accept or the budget cannot bound: qwen-vl-utils'
    floor branch rounding the thin side of a long item to 0, and transformers' one-patch floor on that side making the
    item larger than its maximum. Such a result is scaled down, as the floor branch would.
    """
    height, width = max(factor, height), max(factor, width)
    if height * width <= max(max_pixels, factor * factor):
        return height, width
    scale = math.sqrt(max_pixels / (height * width))
    h = max(factor, math.floor(height * scale / factor) * factor)
    w = max(factor, math.floor(width * scale / factor) * factor)
    if h * w > max_pixels:  # one side is at its one-patch floor: the other gives way
        if h <= w:
            w = max(factor, max_pixels // h // factor * factor)
        else:
            h = max(factor, max_pixels // w // factor * factor)
    return h, w


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
    return _groups(frames, spec) * (height // spec.factor) * (width // spec.factor)


def _groups(frames: int, spec: VisionSpec) -> int:
    return math.ceil(frames / spec.temporal_patch_size) if frames > 1 else 1


def preload() -> None:
    """Import the resize math's modules now (qwen-vl-utils pulls in torch and torchvision: seconds, holding the GIL).

    Called once at start-up, so that the first media request does not stall the event loop with an import.
    """
    import qwen_vl_utils.vision_process  # noqa: F401
    import transformers.models.qwen3_vl.video_processing_qwen3_vl  # noqa: F401
