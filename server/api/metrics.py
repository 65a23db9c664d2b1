"""Gateway metrics on our own registry, exposed on ``/metrics`` beside vLLM's ``vllm:*`` metrics.

vLLM's in-process engine registers its metrics in ``prometheus_client.REGISTRY``; ours live in a registry per app so that
several apps (tests) never collide. ``/metrics`` renders both.

With several API processes (``--api-workers``) prometheus-client runs in multiprocess mode (the supervisor sets
``PROMETHEUS_MULTIPROC_DIR`` before it spawns anything): every process's samples, ours and vLLM's, are in that folder, and
``/metrics`` renders them all, whichever process answers (counters summed, our gauges summed over live processes).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time

import prometheus_client
from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse, Response
from prometheus_client import CollectorRegistry, Counter, Histogram, multiprocess
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server.errors import MediaError, ServerError
from server.media.metrics import MediaMetrics
from server.schemas.openapi import GUARD_ERRORS, error_responses
from server.service.admission import AdmissionMetrics
from server.service.batches import BatchMetrics
from server.service.metrics import GenerationMetrics

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


class GatewayMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._multiprocess = os.environ.get("PROMETHEUS_MULTIPROC_DIR") is not None
        self.requests = Counter(
            "qwen3vl_http_requests",
            "HTTP requests by route, method and status code.",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.errors = Counter(
            "qwen3vl_request_errors",
            "Requests that ended in an error, by HTTP status and stable error code.",
            ["status", "code"],
            registry=self.registry,
        )
        self.media = MediaMetrics(self.registry)
        self.admission = AdmissionMetrics(self.registry)
        self.generation = GenerationMetrics(self.registry)
        self.batches = BatchMetrics(self.registry)
        self.latency = Histogram(
            "qwen3vl_http_request_duration_seconds",
            "Time from request start to the last byte of the response, by route.",
            ["route", "method"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )

    def count_error(self, error: ServerError) -> None:
        self.errors.labels(str(error.status_code), error.code).inc()
        if isinstance(error, MediaError) or error.code == "too_many_media_items":
            self.media.rejections.labels(error.code).inc()

    def render(self) -> bytes:
        if self._multiprocess:
            everyone = CollectorRegistry()
            multiprocess.MultiProcessCollector(everyone)  # type: ignore[no-untyped-call]
            return prometheus_client.generate_latest(everyone)
        return prometheus_client.generate_latest(self.registry) + prometheus_client.generate_latest(
            prometheus_client.REGISTRY
        )


class MetricsMiddleware:
    """Pure ASGI middleware (streams stay streams): counts requests and times them to the last byte; with JSON logs,
    writes one access line per request (ids, route, status, error code, stage timings, token counts; never content)."""

    def __init__(self, app: ASGIApp, metrics: GatewayMetrics, access_log: bool = False) -> None:
        self.app = app
        self.metrics = metrics
        self.access_log = access_log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", None) or "unmatched"
            method = str(scope.get("method", ""))
            elapsed = time.perf_counter() - start
            self.metrics.requests.labels(path, method, str(status)).inc()
            self.metrics.latency.labels(path, method).observe(elapsed)
            if self.access_log:
                _access_line(scope, path, method, status, elapsed)


access_logger = logging.getLogger("server.access")


def _access_line(scope: Scope, route: str, method: str, status: int, elapsed: float) -> None:
    state = scope.get("state", {})
    fields: dict[str, object] = {
        "request_id": state.get("request_id"),
        "route": route,
        "method": method,
        "status": status,
        "duration_ms": round(elapsed * 1000, 1),
        "error_code": state.get("error_code"),
    }
    timings = state.get("timings")
    if timings is not None:
        fields.update(timings.as_log())
    access_logger.info("request", extra={"fields": fields, "request_id": state.get("request_id")})


router = APIRouter()


@router.get(
    "/metrics",
    response_class=PlainTextResponse,
    response_description="Prometheus metrics (text exposition format).",
    responses=error_responses(*GUARD_ERRORS),
)
async def metrics(request: Request) -> Response:
    gateway: GatewayMetrics = request.app.state.qwen3vl.metrics
    # Rendering vLLM's registry takes ≈14 ms (benchmarks/overhead.py): off the event loop, like any other CPU work.
    body = await asyncio.to_thread(gateway.render)
    return Response(body, media_type=prometheus_client.CONTENT_TYPE_LATEST)
