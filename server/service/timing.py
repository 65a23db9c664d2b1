"""Per-request stage timings and token counts (for Server-Timing, the metrics and the access log)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass
class Timings:
    started: float = field(default_factory=time.perf_counter)
    queue_s: float | None = None
    media_s: float | None = None
    first_token_s: float | None = None
    total_s: float | None = None
    prompt_tokens: int = 0
    image_tokens: int = 0
    video_tokens: int = 0
    completion_tokens: int = 0

    def since_start(self) -> float:
        return time.perf_counter() - self.started

    def server_timing(self) -> str:
        """``Server-Timing`` value: queue, media, ttft (prefill to first token) and total, in milliseconds."""
        stages = (
            ("queue", self.queue_s),
            ("media", self.media_s),
            ("ttft", self.first_token_s),
            ("total", self.total_s),
        )
        return ", ".join(f"{name};dur={seconds * 1000:.1f}" for name, seconds in stages if seconds is not None)

    def as_log(self) -> dict[str, float | int | None]:
        return {
            "queue_ms": _ms(self.queue_s),
            "media_ms": _ms(self.media_s),
            "ttft_ms": _ms(self.first_token_s),
            "total_ms": _ms(self.total_s),
            "prompt_tokens": self.prompt_tokens,
            "image_tokens": self.image_tokens,
            "video_tokens": self.video_tokens,
            "completion_tokens": self.completion_tokens,
        }


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)
