"""What the side-by-side benchmark measures beside the load: ``/health`` latency (how responsive the server stays while
saturated) and the peak resident memory of the server's process tree.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import httpx

__all__ = ["HEALTH_PERIOD_S", "RssSampler", "idle_health", "percentiles", "probe_health"]

HEALTH_PERIOD_S = 0.02


@dataclass
class RssSampler:
    """Peak resident memory of a process tree (the API process and its engine-core child), sampled every 100 ms."""

    pid: int
    peak_main: int = 0
    peak_tree: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)

    def __enter__(self) -> RssSampler:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        import psutil  # type: ignore[import-untyped]

        root = psutil.Process(self.pid)
        while not self._stop.is_set():
            with contextlib.suppress(psutil.Error):
                main = root.memory_info().rss
                tree = main + sum(c.memory_info().rss for c in root.children(recursive=True))
                self.peak_main, self.peak_tree = max(self.peak_main, main), max(self.peak_tree, tree)
            self._stop.wait(0.1)


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
