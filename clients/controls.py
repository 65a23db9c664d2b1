"""Per-item Qwen controls of an image or a video, checked on the client so a typo fails here and not as a 400.

They go on the ``image_url``/``video_url`` object (or on the part, for frame lists), exactly as the server reads them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any, Literal

__all__ = ["Detail", "ImageControls", "VideoControls"]

Detail = Literal["auto", "low", "high"]


def _check_positive(owner: Any) -> None:
    for f in fields(owner):
        value = getattr(owner, f.name)
        if f.name == "detail" or value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0 or not math.isfinite(value):
            raise ValueError(f"{f.name} must be a positive number, got {value!r}")


def _present(owner: Any) -> dict[str, Any]:
    return {f.name: getattr(owner, f.name) for f in fields(owner) if getattr(owner, f.name) is not None}


@dataclass(frozen=True, kw_only=True)
class ImageControls:
    """qwen-vl-utils' per-image controls (pixels are H×W, rounded by the server to the 32-pixel grid and clamped to its
    ceilings) and OpenAI's ``detail`` (``low`` ≤ 256 tokens, ``high`` = the server ceiling, ``auto`` = the default)."""

    min_pixels: int | None = None
    max_pixels: int | None = None
    resized_height: int | None = None
    resized_width: int | None = None
    detail: Detail | None = None

    def __post_init__(self) -> None:
        _check_positive(self)
        if (self.resized_height is None) != (self.resized_width is None):
            raise ValueError("resized_height and resized_width go together")
        if self.min_pixels and self.max_pixels and self.min_pixels > self.max_pixels:
            raise ValueError("min_pixels is larger than max_pixels")
        if self.detail not in (None, "auto", "low", "high"):
            raise ValueError(f"detail must be auto, low or high, got {self.detail!r}")

    def as_dict(self) -> dict[str, Any]:
        """The controls that are set, as request fields."""
        return _present(self)


@dataclass(frozen=True, kw_only=True)
class VideoControls:
    """qwen-vl-utils' per-video controls: frame sampling (``fps`` or ``nframes``, ``min_frames``, ``max_frames``; for
    video files) and pixel budgets (``min_pixels``/``max_pixels`` per frame, ``total_pixels`` over all frames)."""

    fps: float | None = None
    nframes: int | None = None
    min_frames: int | None = None
    max_frames: int | None = None
    min_pixels: int | None = None
    max_pixels: int | None = None
    total_pixels: int | None = None
    resized_height: int | None = None
    resized_width: int | None = None

    def __post_init__(self) -> None:
        _check_positive(self)
        if self.fps is not None and self.nframes is not None:
            raise ValueError("set either fps or nframes, not both")
        if (self.resized_height is None) != (self.resized_width is None):
            raise ValueError("resized_height and resized_width go together")
        if self.min_pixels and self.max_pixels and self.min_pixels > self.max_pixels:
            raise ValueError("min_pixels is larger than max_pixels")
        if self.min_frames and self.max_frames and self.min_frames > self.max_frames:
            raise ValueError("min_frames is larger than max_frames")

    @property
    def samples(self) -> bool:
        """Whether a frame-sampling control is set (those apply to video files, not to frame lists)."""
        return any(v is not None for v in (self.fps, self.nframes, self.min_frames, self.max_frames))

    def as_dict(self) -> dict[str, Any]:
        return _present(self)
