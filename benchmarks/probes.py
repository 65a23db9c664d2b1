"""What the side-by-side benchmark measures beside the load: ``/health`` latency (how responsive the server stays while
saturated). The server's process tree (CPU by role, peak memory) is ``benchmarks.process_tree``'s.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import time
from collections.abc import Sequence
from multiprocessing.connection import Connection
from multiprocessing.synchronize import Event
from types import TracebackType

import httpx

__all__ = ["HEALTH_PERIOD_S", "HealthProbe", "idle_health", "percentiles"]

HEALTH_PERIOD_S = 0.02


class HealthProbe:
    """GET /health every HEALTH_PERIOD_S from a process of its own while the ``with`` block runs; ``samples`` are the
    latencies in ms (a failed probe counts as its full duration).

    Not from the load client's event loop: that loop parses the streams and encodes the bodies of every request in
    flight, and its own lag would be counted as the server's (it was, up to 2026-11-30)."""

    def __init__(self, base: str) -> None:
        context = multiprocessing.get_context("spawn")
        self._stop, self._started = context.Event(), context.Event()
        self._results, sender = context.Pipe(duplex=False)
        self._process = context.Process(
            target=_probe, args=(base, self._stop, self._started, sender), name="health-probe", daemon=True
        )
        self.samples: list[float] = []

    def __enter__(self) -> HealthProbe:
        self._process.start()
        deadline = time.monotonic() + 60
        while not self._started.wait(0.1):
            if not self._process.is_alive() or time.monotonic() > deadline:
                self._process.kill()
                raise RuntimeError(f"the /health probe process did not start (exit code {self._process.exitcode})")
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None) -> None:
        self._stop.set()
        if self._results.poll(60):
            self.samples = list(self._results.recv())
        self._process.join(10)
        if self._process.is_alive():
            self._process.kill()


def _probe(base: str, stop: Event, started: Event, results: Connection) -> None:
    samples: list[float] = []
    with httpx.Client(timeout=10) as client:
        while not stop.is_set():
            start = time.perf_counter()
            with contextlib.suppress(httpx.HTTPError):
                client.get(base + "/health")
            samples.append((time.perf_counter() - start) * 1000)
            started.set()
            stop.wait(HEALTH_PERIOD_S)
    results.send(samples)


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


def idle_health(base: str) -> list[float]:
    """/health latencies over two seconds of an idle server (the baseline of the loaded ones)."""
    with HealthProbe(base) as probe:
        time.sleep(2)
    return probe.samples
