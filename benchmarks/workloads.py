"""The side-by-side benchmark's workloads: one definition, used by every target (raw engine, vLLM's server, ours)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from benchmarks.datasets import RequestSpec, make_dataset


@dataclass(frozen=True)
class Workload:
    name: str
    kind: str  # a benchmarks.datasets kind
    requests: int = 160
    output_len: int = 16
    image_size: tuple[int, int] = (448, 448)
    pool_size: int = 4
    frames: int = 8
    video_format: Literal["frames", "mp4"] = "mp4"  # mp4 by default: vLLM's server does not take Qwen frame lists

    def dataset(self, count: int, seed: int = 0) -> list[RequestSpec]:
        return make_dataset(
            self.kind,
            count,
            seed=seed,
            output_len=self.output_len,
            image_size=self.image_size,
            size_jitter=0.0,  # fixed sizes: every target sees exactly the same pixels
            pool_size=self.pool_size,
            frames=self.frames,
            video_format=self.video_format,
        )


# PERFORMANCE.md's shapes (one JPEG per request, 16 output tokens, 160 requests at concurrency 8), plus repeated images,
# videos (mp4 at 2 fps: 8 frames, and 30 frames, 15 s, heavy enough to load the front end's decode) and text only.
WORKLOADS: dict[str, Workload] = {
    w.name: w
    for w in (
        Workload("unique-448", "unique-images"),
        Workload("unique-1536", "unique-images", image_size=(1536, 1536)),
        Workload("repeated-448", "repeated-images"),
        Workload("video-8f", "videos", requests=64, image_size=(224, 224)),
        Workload("video-30f", "videos", requests=48, image_size=(224, 224), frames=30),
        Workload("text", "text"),
    )
}
