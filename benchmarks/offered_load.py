"""Offering load: the arrival schedule, ``run_load`` (closed loop, open loop, or an open loop capped at a concurrency)
and the ``LoadResult`` of one load point.

Requests are encoded only once they may go, so base64 and JSON stay off the clock (as in vLLM's harness); a failed
request is a record with ``ok=False``, never an exception.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np

from benchmarks.datasets import RequestSpec
from benchmarks.report import RequestRecord, summarize
from benchmarks.stream import request_body, send_request

__all__ = ["CHAT_PATH", "LoadResult", "arrival_offsets", "run_load"]

CHAT_PATH = "/v1/chat/completions"


def arrival_offsets(num_requests: int, rate: float | None, burstiness: float = 1.0, seed: int = 0) -> list[float]:
    """When each request is sent, in seconds from the start: all at 0 without a rate; otherwise cumulative gamma gaps
    (shape ``burstiness``, mean 1/rate; exponential, i.e. Poisson arrivals, at 1), rescaled like vLLM's bench serve so
    the last arrival lands exactly at num_requests/rate."""
    if rate is None or math.isinf(rate):
        return [0.0] * num_requests
    if rate <= 0 or burstiness <= 0:
        raise ValueError("rate and burstiness must be positive")
    if num_requests == 0:
        return []
    gaps = np.random.default_rng(seed).gamma(shape=burstiness, scale=1.0 / (rate * burstiness), size=num_requests)
    cumulative = np.cumsum(gaps)
    cumulative *= (num_requests / rate) / cumulative[-1]
    return [float(t) for t in cumulative]


@dataclass
class LoadResult:
    """One load point: per-request records (in dataset order) and how the load was offered."""

    records: list[RequestRecord]
    duration_s: float
    started_at: float  # perf_counter at the start of the run (request ``start_s`` are on this clock)
    concurrency: int | None = None
    rate: float | None = None
    burstiness: float = 1.0

    def summary(self, slo: dict[str, float] | None = None) -> dict[str, Any]:
        summary = summarize(self.records, duration_s=self.duration_s, slo=slo)
        summary.update(
            {
                "concurrency": self.concurrency,
                "rate": self.rate,
                "burstiness": self.burstiness if self.rate is not None else None,
            }
        )
        return summary

    def records_json(self) -> list[dict[str, Any]]:
        return [r.to_dict(origin=self.started_at) for r in self.records]


async def run_load(
    base_url: str,
    model: str,
    requests: Sequence[RequestSpec],
    *,
    concurrency: int | None = None,
    rate: float | None = None,
    burstiness: float = 1.0,
    api_key: str | None = None,
    seed: int = 0,
    progress: bool = False,
    timeout_s: float = 600,
    ignore_eos: bool = True,
    extra_body: dict[str, Any] | None = None,
) -> LoadResult:
    """Send ``requests`` (closed loop at ``concurrency`` in flight, or open loop at ``rate`` req/s, or both: an open
    loop capped at ``concurrency``; neither: all at once) and measure every one. Never raises for a failed request:
    failures are records with ``ok=False`` and an ``error_code``."""
    if concurrency is not None and concurrency < 1:
        raise ValueError("concurrency must be at least 1")
    offsets = arrival_offsets(len(requests), rate, burstiness, seed)
    url = base_url.rstrip("/") + CHAT_PATH
    headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
    width = concurrency or max(1, len(requests))
    limits = httpx.Limits(max_connections=width, max_keepalive_connections=width)
    gate: contextlib.AbstractAsyncContextManager[Any] = (
        asyncio.Semaphore(concurrency) if concurrency else contextlib.nullcontext()
    )
    bar = _progress_bar(len(requests), progress)
    async with httpx.AsyncClient(headers=headers, timeout=httpx.Timeout(timeout_s), limits=limits) as client:
        started = time.perf_counter()

        async def one(index: int, spec: RequestSpec) -> RequestRecord:
            delay = started + offsets[index] - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            arrived = time.perf_counter()
            async with gate:
                # Encoded once the request may go (base64 + JSON stay off the clock, as in vLLM's harness).
                body = json.dumps(request_body(spec, model, ignore_eos=ignore_eos, extra_body=extra_body)).encode()
                record = await send_request(
                    client, url, body, index=index, max_tokens=spec.max_tokens, timeout_s=timeout_s
                )
            record.queued_s = max(0.0, record.start_s - arrived)
            if bar is not None:
                bar.update(1)
            return record

        try:
            records = list(await asyncio.gather(*(one(i, s) for i, s in enumerate(requests))))
        finally:
            if bar is not None:
                bar.close()
        duration = time.perf_counter() - started
    return LoadResult(records, duration, started, concurrency, rate, burstiness)


def _progress_bar(total: int, enabled: bool) -> Any:
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit="req", dynamic_ncols=True)
