"""Per-request stage timings and token counts (for Server-Timing, metrics and the access log)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Histogram

LATENCY = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
TOKEN_GAP = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


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


class GenerationMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.ttft = Histogram(
            "qwen3vl_time_to_first_token_seconds",
            "From request arrival to the first generated token (admission, media and prefill included).",
            buckets=LATENCY,
            registry=registry,
        )
        self.itl = Histogram(
            "qwen3vl_inter_token_latency_seconds",
            "Time between consecutive engine outputs of a request.",
            buckets=TOKEN_GAP,
            registry=registry,
        )
        self.media = Histogram(
            "qwen3vl_media_preparation_seconds",
            "Time to fetch, decode and resize a request's media.",
            buckets=LATENCY,
            registry=registry,
        )
        self.tokens = Counter(
            "qwen3vl_tokens",
            "Tokens by kind (prompt_text, prompt_image, prompt_video, completion).",
            ["kind"],
            registry=registry,
        )

    def finish(self, timings: Timings) -> None:
        text = max(0, timings.prompt_tokens - timings.image_tokens - timings.video_tokens)
        for kind, count in (
            ("prompt_text", text),
            ("prompt_image", timings.image_tokens),
            ("prompt_video", timings.video_tokens),
            ("completion", timings.completion_tokens),
        ):
            if count:
                self.tokens.labels(kind).inc(count)
