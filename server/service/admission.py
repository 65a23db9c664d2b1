"""Admission control: bounded concurrency and a bounded FIFO queue, weighted by each request's estimated token cost.

Requests are admitted (or refused with 429 + Retry-After) *before* any media is fetched or decoded. A request runs when
fewer than ``max_running`` requests run and its cost fits the remaining token budget (a request larger than the whole
budget runs alone rather than never). Otherwise it waits in line, if the line is not full, for at most ``max_wait_s``.

The counts decided on live in a ``Ledger``: this process's own, or one shared by every API process of the server
(``--api-workers``), so the limits are the whole server's. The line is FIFO within a process; a waiter cannot be woken by
a request finishing in another process, so with a shared ledger waiters also look again every ``POLL_S``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import math
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Literal

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from server.errors import OverloadedError
from server.service.ledger import Ledger, LocalLedger

# Gauges are per process; with several API processes (prometheus-client multiprocess mode) /metrics shows their sum.
LIVESUM: Literal["livesum"] = "livesum"
POLL_S = 0.02  # with a shared ledger: how often a waiter looks for capacity freed by another process


@dataclass(frozen=True)
class AdmissionLimits:
    max_running: int = 64
    max_queued: int = 256
    max_running_tokens: int = 1 << 20
    max_wait_s: float = 30.0


class AdmissionMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.running = Gauge(
            "qwen3vl_requests_running", "Admitted requests in progress.", registry=registry, multiprocess_mode=LIVESUM
        )
        self.queued = Gauge(
            "qwen3vl_requests_queued", "Requests waiting for admission.", registry=registry, multiprocess_mode=LIVESUM
        )
        self.running_tokens = Gauge(
            "qwen3vl_admitted_cost_tokens",
            "Estimated token cost of the admitted requests.",
            registry=registry,
            multiprocess_mode=LIVESUM,
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
    def __init__(self, limits: AdmissionLimits, metrics: AdmissionMetrics, ledger: Ledger | None = None) -> None:
        self.limits = limits
        self.metrics = metrics
        self._ledger: Ledger = ledger or LocalLedger()
        self._running = 0  # this process's share (its gauges, its drain); the ledger holds the server's
        self._tokens = 0
        self._line: collections.deque[_Waiter] = collections.deque()

    @property
    def running(self) -> int:
        """Requests running in this process."""
        return self._running

    @property
    def queued(self) -> int:
        """Requests waiting in this process's line."""
        return len(self._line)

    @property
    def saturated(self) -> bool:
        """The whole server is at its running limit or its line is full."""
        ledger = self._ledger
        return ledger.running >= self.limits.max_running or ledger.queued >= self.limits.max_queued

    def _retry_after(self) -> int:
        return max(1, math.ceil(self.limits.max_wait_s / 4))

    @contextlib.asynccontextmanager
    async def admit(self, cost: int) -> AsyncIterator[None]:
        started = time.perf_counter()
        if not self._line and self._ledger.try_start(cost, self.limits):
            self._started(cost)
        else:
            await self._wait(cost)
        self.metrics.decisions.labels("admitted").inc()
        self.metrics.wait.observe(time.perf_counter() - started)
        try:
            yield
        finally:
            self._finish(cost)

    async def _wait(self, cost: int) -> None:
        if self._ledger.queued >= self.limits.max_queued:
            self.metrics.decisions.labels("rejected_queue_full").inc()
            raise OverloadedError(
                f"the server is at capacity ({self._ledger.running} requests running, {self._ledger.queued} waiting); "
                "retry later",
                retry_after=self._retry_after(),
            )
        waiter = _Waiter(cost, asyncio.get_running_loop().create_future())
        self._enter(waiter)
        try:
            async with asyncio.timeout(self.limits.max_wait_s):
                if self._ledger.shared:
                    while not waiter.future.done():
                        await asyncio.wait((waiter.future,), timeout=POLL_S)
                        self._wake()
                await waiter.future
        except BaseException as exc:
            future = waiter.future
            if future.done() and not future.cancelled() and future.exception() is None:
                self._finish(cost)  # admitted at the last moment: give the slot back
            self._leave(waiter)
            self._wake()
            if isinstance(exc, TimeoutError):
                self.metrics.decisions.labels("rejected_wait_timeout").inc()
                raise OverloadedError(
                    f"the request waited {self.limits.max_wait_s:g} s for capacity; retry later",
                    retry_after=self._retry_after(),
                ) from None
            raise

    def reject_waiting(self, error: Exception) -> int:
        """Fail every request still waiting in line (e.g. when the server drains); returns how many."""
        rejected = 0
        while self._line:
            waiter = self._line[0]
            self._leave(waiter)
            if not waiter.future.done():
                waiter.future.set_exception(error)
                rejected += 1
        return rejected

    def _enter(self, waiter: _Waiter) -> None:
        self._line.append(waiter)
        self._ledger.add_queued(1)
        self.metrics.queued.set(len(self._line))

    def _leave(self, waiter: _Waiter) -> None:
        try:
            self._line.remove(waiter)
        except ValueError:
            return  # left already (admitted, or rejected)
        self._ledger.add_queued(-1)
        self.metrics.queued.set(len(self._line))

    def _started(self, cost: int) -> None:
        self._running += 1
        self._tokens += cost
        self.metrics.running.set(self._running)
        self.metrics.running_tokens.set(self._tokens)

    def _finish(self, cost: int) -> None:
        self._ledger.finish(cost)
        self._running -= 1
        self._tokens -= cost
        self.metrics.running.set(self._running)
        self.metrics.running_tokens.set(self._tokens)
        self._wake()

    def _wake(self) -> None:
        while self._line:
            waiter = self._line[0]
            if waiter.future.done():  # cancelled while waiting: it leaves without a slot
                self._leave(waiter)
                continue
            if not self._ledger.try_start(waiter.cost, self.limits):
                return
            self._leave(waiter)
            self._started(waiter.cost)
            waiter.future.set_result(None)
