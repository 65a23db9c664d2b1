"""The visual value types that both ``media`` (which makes them) and ``engine`` (which hands them to vLLM) use.

A neutral module, so that ``media`` and ``engine`` stay siblings that never import each other.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class VideoInput:
    """A pre-sampled video: frames and the metadata Qwen3-VL needs for its timestamps."""

    frames: np.ndarray  # uint8 [T, H, W, 3]
    fps: float  # frames per second of the source the indices refer to
    total_num_frames: int
    frames_indices: tuple[int, ...]
    duration: float | None = None

    def metadata(self) -> dict[str, Any]:
        meta: dict[str, Any] = {
            "fps": self.fps,
            "total_num_frames": self.total_num_frames,
            "frames_indices": list(self.frames_indices),
        }
        if self.duration is not None:
            meta["duration"] = self.duration
        return meta


@dataclass(frozen=True)
class VisionSpec:
    """The checkpoint's vision geometry and its processor's default budgets (read from the HF processor at start-up)."""

    patch_size: int = 16
    merge_size: int = 2
    temporal_patch_size: int = 2
    image_min_pixels: int = 65536
    image_max_pixels: int = 16777216
    video_min_pixels: int = 4096  # over T×H×W, as Qwen3-VL's video processor counts it
    video_max_pixels: int = 25165824
    video_cap_pixels_per_frame: bool = False
    video_max_tokens_per_frame: int = 768

    @property
    def factor(self) -> int:
        return self.patch_size * self.merge_size
