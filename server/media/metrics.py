"""Prometheus metrics of the media stage, registered in the app's own registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

SECONDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
SIZES = (1e3, 1e4, 1e5, 1e6, 4e6, 1.6e7, 6.4e7, 2.56e8)


class MediaMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.fetch_seconds = Histogram(
            "qwen3vl_media_fetch_seconds",
            "Time to fetch one media item's bytes.",
            ["scheme"],
            buckets=SECONDS,
            registry=registry,
        )
        self.fetch_bytes = Histogram(
            "qwen3vl_media_fetch_bytes", "Size of fetched media items.", ["kind"], buckets=SIZES, registry=registry
        )
        self.stage_seconds = Histogram(
            "qwen3vl_media_stage_seconds",
            "Time in each stage of media preparation (base64, hash; decode: a worker's whole job, header to target grid).",
            ["kind", "stage"],
            buckets=SECONDS,
            registry=registry,
        )
        self.cache = Counter(
            "qwen3vl_media_cache_requests",
            "Media cache look-ups by cache (bytes: fetched bytes by URL; prepared: decoded items by content and budget).",
            ["cache", "result"],
            registry=registry,
        )
        self.rejections = Counter(
            "qwen3vl_media_rejections",
            "Requests refused by the media stage, by error code.",
            ["code"],
            registry=registry,
        )
        self.workers = Gauge(
            "qwen3vl_media_decode_workers",
            "Live sandboxed media decode worker processes.",
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.worker_deaths = Counter(
            "qwen3vl_media_decode_worker_deaths",
            "Decode workers killed or lost, by cause (crash: a signal such as SIGSEGV; memory: over its memory limit; "
            "timeout: over the job deadline; cancelled: the request went away mid-job; protocol; exit).",
            ["cause"],
            registry=registry,
        )
        self.budget_bytes = Gauge(
            "qwen3vl_media_decode_budget_used_bytes",
            "Estimated decoded bytes held by jobs in flight (bounded by --media-decode-budget-bytes).",
            registry=registry,
            multiprocess_mode="livesum",  # per API process; their sum with --api-workers
        )
