"""The generation metrics (Prometheus): time to first token, inter-token gaps, media preparation, tokens by kind."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

from server.service.timing import Timings

LATENCY = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
TOKEN_GAP = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


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
