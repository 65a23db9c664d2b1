"""Running batch lines beside live traffic: one worker per API process claims lines from the batch store (never more
running, server-wide, than ``--batch-max-running``), runs each on the live path at a lower engine priority, and writes
each answer once. A line that could not run for reasons not its own (admission full, the engine gone, the server
draining) goes back to the queue; a line whose worker died is taken again when its lease runs out.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge

from server.service.batch_store import BatchStore, Claimed, new_id

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LineOutcome:
    status_code: int
    body: dict[str, Any]
    request_id: str
    retry: bool = False  # not answered: give the line back


def result_line(line: Claimed, outcome: LineOutcome) -> dict[str, Any]:
    """OpenAI's output/error file line: the response's status code, request id and body."""
    response = {"status_code": outcome.status_code, "request_id": outcome.request_id, "body": outcome.body}
    return {"id": new_id("batch_req"), "custom_id": line.custom_id, "response": response, "error": None}


class BatchMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.running = Gauge(
            "qwen3vl_batch_lines_running",
            "Batch lines this server is running.",
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.queued = Gauge(
            "qwen3vl_batch_lines_queued",
            "Batch lines waiting to run, server-wide (as this process's worker last saw them).",
            registry=registry,
            multiprocess_mode="max",
        )
        self.finished = Counter(
            "qwen3vl_batch_lines",
            "Batch lines finished, by result (completed, failed, requeued).",
            ["result"],
            registry=registry,
        )


class BatchWorker:
    def __init__(
        self,
        store: BatchStore,
        run_line: Callable[[Claimed], Awaitable[LineOutcome]],
        max_running: int,
        metrics: BatchMetrics,
        poll_s: float = 2.0,
        paused: Callable[[], bool] = lambda: False,
        group: str = "",
    ) -> None:
        self.store = store
        self._run_line = run_line
        self._max_running = max_running
        self._metrics = metrics
        self._poll_s = poll_s
        self._paused = paused  # not ready yet, or draining: nothing new is claimed
        self.group = group  # this server (its API processes share the engine and the cap on running lines)
        self.holder = new_id("worker")
        self._wake = asyncio.Event()
        self._tasks: dict[asyncio.Task[None], Claimed] = {}

    def wake(self) -> None:
        """Look for work now (a batch was created, a line finished)."""
        self._wake.set()

    async def run(self) -> None:
        renewed = asyncio.get_running_loop().time()
        try:
            while True:
                self._wake.clear()
                await self._step()
                now = asyncio.get_running_loop().time()
                if self._tasks and now - renewed > self.store.config.lease_s / 4:
                    await self.store.renew(self.holder)
                    renewed = now
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._poll_s):
                        await self._wake.wait()
        finally:
            await self._stop()

    async def _step(self) -> None:
        try:
            if len(self._tasks) < self._max_running and not self._paused():
                claimed = await self.store.claim(self.holder, self._max_running, self.group)
                self._metrics.queued.set(self.store.queued)
                for line in claimed:
                    task = asyncio.create_task(self._one(line), name=f"batch-line-{line.batch}-{line.idx}")
                    self._tasks[task] = line
                    task.add_done_callback(self._done)
            await self.store.finalize()
        except Exception:  # a store hiccup (a locked file, a full disk) costs a round, not the worker
            logger.exception("batch worker round failed")

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.pop(task, None)
        self.wake()

    async def _one(self, line: Claimed) -> None:
        self._metrics.running.inc()
        try:
            outcome = await self._run_line(line)
            if outcome.retry:
                await self.store.release(self.holder, line)
                self._metrics.finished.labels("requeued").inc()
                return
            ok = outcome.status_code == 200
            if await self.store.finish(self.holder, line, ok, result_line(line, outcome)):
                self._metrics.finished.labels("completed" if ok else "failed").inc()
        except Exception:
            logger.exception("batch line %s of %s could not be recorded", line.idx, line.batch)
        finally:
            self._metrics.running.dec()

    async def _stop(self) -> None:
        """Shutdown: the lines still running are cancelled and given back, so the next start runs them again."""
        tasks = list(self._tasks.items())
        for task, _ in tasks:
            task.cancel()
        for task, line in tasks:
            with contextlib.suppress(BaseException):
                await task
            with contextlib.suppress(Exception):
                await self.store.release(self.holder, line)
