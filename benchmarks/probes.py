"""What the side-by-side benchmark measures beside the load: ``/health`` latency (how responsive the server stays while
saturated). The server's process tree (CPU by role, peak memory) is ``benchmarks.process_tree``'s.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence

import httpx

__all__ = ["HEALTH_PERIOD_S", "idle_health", "percentiles", "probe_health"]

HEALTH_PERIOD_S = 0.02


async def probe_health(base: str, stop: asyncio.Event) -> list[float]:
    """GET /health every HEALTH_PERIOD_S until stopped; latencies in ms (a failed probe counts as its full duration)."""
    samples: list[float] = []
    async with httpx.AsyncClient(timeout=10) as client:
        while not stop.is_set():
            start = time.perf_counter()
            with contextlib.suppress(httpx.HTTPError):
                await client.get(base + "/health")
            samples.append((time.perf_counter() - start) * 1000)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), HEALTH_PERIOD_S)
    return samples


def percentiles(values: Sequence[float]) -> dict[str, float]:
    import numpy as np

    if not values:
        return {}
    arr = np.asarray(values)
    return {
        "p50": float(np.percentile(arr, 50)),
        "p99": float(np.percentile(arr, 99)),
        "max": float(arr.max()),
        "n": float(len(arr)),
    }


async def idle_health(base: str) -> list[float]:
    """/health latencies over two seconds of an idle server (the baseline of the loaded ones)."""
    stop = asyncio.Event()
    task = asyncio.create_task(probe_health(base, stop))
    await asyncio.sleep(2)
    stop.set()
    return await task
