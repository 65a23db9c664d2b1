"""Admission control: bounded concurrency and a bounded FIFO queue, weighted by each request's estimated token cost.

Requests are admitted (or refused with 429 + Retry-After) *before* any media is fetched or decoded. A request runs when
fewer than ``max_running`` requests run and its cost fits the remaining token budget (a request larger than the whole
budget runs alone rather than never). Otherwise it waits in line, if the line is not full, for at most ``max_wait_s``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import math
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from server.errors import OverloadedError


@dataclass(frozen=True)
class AdmissionLimits:
    max_running: int = 64
    max_queued: int = 256
    max_running_tokens: int = 1 << 20
    max_wait_s: float = 30.0


class AdmissionMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.running = Gauge("qwen3vl_requests_running", "Admitted requests in progress.", registry=registry)
        self.queued = Gauge("qwen3vl_requests_queued", "Requests waiting for admission.", registry=registry)
        self.running_tokens = Gauge(
            "qwen3vl_admitted_cost_tokens", "Estimated token cost of the admitted requests.", registry=registry
        )
        self.decisions = Counter(
            "qwen3vl_admission_decisions", "Admission decisions by result.", ["result"], registry=registry
        )
        self.wait = Histogram(
            "qwen3vl_admission_wait_seconds",
            "Time a request waited for admission.",
            buckets=(0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=registry,
        )


@dataclass
class _Waiter:
    cost: int
    future: asyncio.Future[None]


class Admission:
    def __init__(self, limits: AdmissionLimits, metrics: AdmissionMetrics) -> None:
        self.limits = limits
        self.metrics = metrics
        self._running = 0
        self._tokens = 0
        self._line: collections.deque[_Waiter] = collections.deque()

    @property
    def running(self) -> int:
        return self._running

    @property
    def saturated(self) -> bool:
        return self._running >= self.limits.max_running or len(self._line) >= self.limits.max_queued

    def _fits(self, cost: int) -> bool:
        if self._running >= self.limits.max_running:
            return False
        return self._running == 0 or self._tokens + cost <= self.limits.max_running_tokens

    def _retry_after(self) -> int:
        return max(1, math.ceil(self.limits.max_wait_s / 4))

    @contextlib.asynccontextmanager
    async def admit(self, cost: int) -> AsyncIterator[None]:
        started = time.perf_counter()
        if not self._line and self._fits(cost):
            self._start(cost)
        else:
            await self._wait(cost)
        self.metrics.decisions.labels("admitted").inc()
        self.metrics.wait.observe(time.perf_counter() - started)
        try:
            yield
        finally:
            self._finish(cost)

    async def _wait(self, cost: int) -> None:
        if len(self._line) >= self.limits.max_queued:
            self.metrics.decisions.labels("rejected_queue_full").inc()
            raise OverloadedError(
                f"the server is at capacity ({self._running} requests running, {len(self._line)} waiting); retry later",
                retry_after=self._retry_after(),
            )
        waiter = _Waiter(cost, asyncio.get_running_loop().create_future())
        self._line.append(waiter)
        self.metrics.queued.set(len(self._line))
        try:
            async with asyncio.timeout(self.limits.max_wait_s):
                await waiter.future
        except BaseException as exc:
            future = waiter.future
            if future.done() and not future.cancelled() and future.exception() is None:
                self._finish(cost)  # admitted at the last moment: give the slot back
            with contextlib.suppress(ValueError):
                self._line.remove(waiter)
            self.metrics.queued.set(len(self._line))
            self._wake()
            if isinstance(exc, TimeoutError):
                self.metrics.decisions.labels("rejected_wait_timeout").inc()
                raise OverloadedError(
                    f"the request waited {self.limits.max_wait_s:g} s for capacity; retry later",
                    retry_after=self._retry_after(),
                ) from None
            raise

    @property
    def queued(self) -> int:
        return len(self._line)

    def reject_waiting(self, error: Exception) -> int:
        """Fail every request still waiting in line (e.g. when the server drains); returns how many."""
        rejected = 0
        while self._line:
            waiter = self._line.popleft()
            if not waiter.future.done():
                waiter.future.set_exception(error)
                rejected += 1
        self.metrics.queued.set(0)
        return rejected

    def _start(self, cost: int) -> None:
        self._running += 1
        self._tokens += cost
        self.metrics.running.set(self._running)
        self.metrics.running_tokens.set(self._tokens)

    def _finish(self, cost: int) -> None:
        self._running -= 1
        self._tokens -= cost
        self.metrics.running.set(self._running)
        self.metrics.running_tokens.set(self._tokens)
        self._wake()

    def _wake(self) -> None:
        while self._line and self._fits(self._line[0].cost):
            waiter = self._line.popleft()
            if waiter.future.done():
                continue
            self._start(waiter.cost)
            waiter.future.set_result(None)
        self.metrics.queued.set(len(self._line))
