"""``DecodePool``: long-lived sandboxed decode worker processes (``media.worker``), driven from the event loop.

Untrusted media is never decoded in the API process. A job borrows one idle worker: the bytes go into the worker's
shared input buffer, the worker reads the header and reports it, the caller's ``choose`` checks it against the limits
and picks the target grid (raising a ``MediaError`` aborts the job and the worker stays), the decoded-bytes budget is
held for the job's estimated peak, and the worker writes RGB at the target grid into its shared output buffer, from
which exactly one copy is taken. A worker that crashes, exits on ``MemoryError``, breaks the protocol, overruns the
job's deadline, or whose caller is cancelled (client gone, request deadline) is killed at once (SIGKILL: the work really
stops) and replaced in the background; the death is counted by cause. Every other job and the engine carry on.

Workers start on demand (up to ``workers``), or all at once with :meth:`DecodePool.start` (the server does that before
it reports ready, so that a missing sandbox is a start-up error, not a first-request surprise).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar

import numpy as np

from server.errors import (
    EngineUnavailableError,
    MediaError,
    MediaTimeoutError,
    MediaTooLargeError,
)
from server.media.decode import IMAGE_FORMATS, VIDEO_CONTAINERS, ImageHeader, VideoHeader, sniff
from server.media.handle import DeathCause, Worker, WorkerDied, WorkerLimits, start_worker
from server.media.metrics import MediaMetrics
from server.media.replies import death_error, failure, header_or_raise, image_header, video_header

logger = logging.getLogger(__name__)

H = TypeVar("H")
P = TypeVar("P")
R = TypeVar("R")
_COPY_IN_THREAD_ABOVE = 4 * 1024 * 1024


@dataclass(frozen=True)
class PoolConfig:
    workers: int = 2
    job_timeout_s: float = 60.0
    memory_bytes: int = 3 * 1024**3  # RLIMIT_DATA of each worker
    input_bytes: int = 200 * 1024 * 1024  # the largest media item a job takes
    output_bytes: int = 256 * 1024 * 1024  # the largest decoded result (RGB at the target grid)
    budget_bytes: int = 2 * 1024**3  # estimated decoded bytes in flight across all jobs
    sandbox: bool = True  # refuse workers whose seccomp filter is not on
    start_timeout_s: float = 60.0


@dataclass(frozen=True)
class ImagePlan:
    height: int
    width: int


@dataclass(frozen=True)
class VideoPlan:
    indices: tuple[int, ...]
    height: int
    width: int
    max_decoded_frames: int


class DecodeBudget:
    """A byte-weighted semaphore: jobs wait until their estimated peak fits beside the others (FIFO, no starvation)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.used = 0
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []

    @contextlib.asynccontextmanager
    async def hold(self, size: int) -> AsyncIterator[None]:
        size = min(size, self.capacity)  # one job alone may always run; its worker's memory limit still applies
        if self._waiters or self.used + size > self.capacity:
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            entry = (size, waiter)
            self._waiters.append(entry)
            try:
                await waiter
            except BaseException:
                if entry in self._waiters:
                    self._waiters.remove(entry)
                elif waiter.done() and not waiter.cancelled():
                    self._release(size)  # granted just as we were cancelled: give it back
                raise
        else:
            self.used += size
        try:
            yield
        finally:
            self._release(size)

    def _release(self, size: int) -> None:
        self.used -= size
        while self._waiters and self.used + self._waiters[0][0] <= self.capacity:
            size, waiter = self._waiters.pop(0)
            if not waiter.done():
                self.used += size
                waiter.set_result(None)


class DecodePool:
    def __init__(self, config: PoolConfig, metrics: MediaMetrics) -> None:
        self.config = config
        self.metrics = metrics
        self.budget = DecodeBudget(config.budget_bytes)
        self._idle: asyncio.Queue[Worker] = asyncio.Queue()
        self._live: set[Worker] = set()
        self._starting = 0
        self._closed = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._dying: set[Worker] = set()  # killed, not yet reaped

    # --- lifecycle -----------------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Start every worker now and wait until they are ready (raises when a worker cannot start or be sandboxed)."""
        missing = self.config.workers - len(self._live) - self._starting
        workers = await asyncio.gather(*(self._spawn() for _ in range(max(0, missing))))
        for worker in workers:
            self._idle.put_nowait(worker)

    async def close(self) -> None:
        self._closed = True
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for worker in [*self._live, *self._dying]:
            worker.close()
            with contextlib.suppress(Exception):
                await worker.proc.wait()
        self._live.clear()
        self._dying.clear()

    @property
    def pids(self) -> list[int]:
        """The live workers' process ids (for tests and operators)."""
        return sorted(w.pid for w in self._live if w.alive)

    async def _spawn(self) -> Worker:
        self._starting += 1
        try:
            return await self._spawn_one()
        finally:
            self._starting -= 1

    async def _spawn_one(self) -> Worker:
        cfg = self.config
        limits = WorkerLimits(cfg.input_bytes, cfg.output_bytes, cfg.memory_bytes, cfg.sandbox, cfg.start_timeout_s)
        worker = await start_worker(limits)
        self._live.add(worker)
        self.metrics.workers.set(len(self._live))
        return worker

    def _retire(self, worker: Worker, cause: DeathCause) -> None:
        worker.close()
        self._live.discard(worker)
        self._dying.add(worker)
        self.metrics.workers.set(len(self._live))
        self.metrics.worker_deaths.labels(cause).inc()
        logger.warning("media decode worker %d stopped (%s); starting a replacement", worker.pid, cause)
        if not self._closed:
            task = asyncio.get_running_loop().create_task(self._replace(worker))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _replace(self, dead: Worker) -> None:
        with contextlib.suppress(ProcessLookupError, ChildProcessError):
            await dead.proc.wait()
        self._dying.discard(dead)
        if self._closed or len(self._live) + self._starting >= self.config.workers:
            return
        try:
            self._idle.put_nowait(await self._spawn())
        except EngineUnavailableError:
            logger.exception("a replacement media decode worker failed to start")

    @contextlib.asynccontextmanager
    async def _borrow(self) -> AsyncIterator[Worker]:
        worker = await self._acquire()
        try:
            yield worker
        except WorkerDied as died:
            self._retire(worker, died.cause)
            raise
        except TimeoutError:
            self._retire(worker, "timeout")
            raise
        except asyncio.CancelledError:
            self._retire(worker, "cancelled")
            raise
        except MediaError:  # the worker refused the media (or we did, from its header) and is ready for more
            self._idle.put_nowait(worker)
            raise
        except BaseException:
            self._retire(worker, "protocol")
            raise
        else:
            self._idle.put_nowait(worker)

    async def _acquire(self) -> Worker:
        while True:
            if self._idle.empty() and len(self._live) + self._starting < self.config.workers:
                worker = await self._spawn()
            else:
                worker = await self._idle.get()
            if worker.alive:
                return worker
            self._retire(worker, await worker.cause())

    # --- jobs ----------------------------------------------------------------------------------------------------

    async def image(
        self, data: bytes, *, param: str, max_source_pixels: int, choose: Callable[[ImageHeader], ImagePlan]
    ) -> np.ndarray:
        """Decode an image to the grid ``choose`` picks from its header: RGB, uint8 [H, W, 3], exactly that size.

        An array, not a PIL image: vLLM's renderer hands PIL images to the HF processor through a slower path (a
        conversion and an EXIF pass), 3.3× the processor's time on a 448² image, 2.3× on 1536², same pixel values."""

        def estimate(header: ImageHeader, plan: ImagePlan) -> int:
            return header.width * header.height * 4 + plan.height * plan.width * 3

        def take(header: ImageHeader, plan: ImagePlan, out: memoryview) -> np.ndarray:
            return np.frombuffer(out, np.uint8).reshape(plan.height, plan.width, 3).copy()

        def size(plan: ImagePlan) -> int:
            return plan.height * plan.width * 3

        job: _Job[ImageHeader, ImagePlan, np.ndarray] = _Job(
            "image", {"max_source_pixels": max_source_pixels}, image_header, choose, estimate, _image_go, size, take
        )
        return await self._run(job, data, param)

    async def video(
        self, data: bytes, *, param: str, choose: Callable[[VideoHeader], VideoPlan]
    ) -> tuple[VideoHeader, VideoPlan, np.ndarray]:
        """Decode the planned frames of a video at the planned grid: uint8 [T, H, W, 3]."""

        def estimate(header: VideoHeader, plan: VideoPlan) -> int:
            # FFmpeg keeps reference and threading frames (YUV 4:2:0) at the source size; the output is RGB.
            return header.width * header.height * 3 // 2 * 20 + size(plan)

        def size(plan: VideoPlan) -> int:
            return len(plan.indices) * plan.height * plan.width * 3

        def take(header: VideoHeader, plan: VideoPlan, out: memoryview) -> tuple[VideoHeader, VideoPlan, np.ndarray]:
            shape = (len(plan.indices), plan.height, plan.width, 3)
            return header, plan, np.frombuffer(out, np.uint8).reshape(shape).copy()

        job: _Job[VideoHeader, VideoPlan, tuple[VideoHeader, VideoPlan, np.ndarray]] = _Job(
            "video", {}, video_header, choose, estimate, _video_go, size, take
        )
        return await self._run(job, data, param)

    async def _run(self, job: _Job[H, P, R], data: bytes, param: str) -> R:
        kind = sniff(data)  # the first bytes, read here too: what no worker would decode never reaches one
        if kind not in (IMAGE_FORMATS if job.kind == "image" else VIDEO_CONTAINERS):
            raise failure({"error": "unsupported" if kind else "decode_failed", "detail": kind}, job.kind, param)
        if len(data) > self.config.input_bytes:
            raise MediaTooLargeError(
                f"{param} is larger than the decoders' limit of {self.config.input_bytes} bytes", param=param
            )
        with self.metrics.stage_seconds.labels(job.kind, "decode").time():
            try:
                async with self._borrow() as worker, asyncio.timeout(self.config.job_timeout_s):
                    return await self._converse(worker, job, data, param)
            except TimeoutError as exc:
                raise MediaTimeoutError(
                    f"{param}: decoding took longer than {self.config.job_timeout_s:g} s", param=param
                ) from exc
            except WorkerDied as died:
                raise death_error(died.cause, job.kind, param) from died

    async def _converse(self, worker: Worker, job: _Job[H, P, R], data: bytes, param: str) -> R:
        await _off_loop_if_large(len(data), lambda: worker.in_buf.__setitem__(slice(0, len(data)), data))
        await worker.send({"op": job.kind, "size": len(data), **job.extra})
        header = header_or_raise(await worker.receive(), job.kind, job.parse, param)
        try:
            plan = job.choose(header)
            expected = job.size(plan)
            if expected > self.config.output_bytes:
                raise MediaTooLargeError(
                    f"{param} would decode to {expected} bytes; the decoders' limit is {self.config.output_bytes}",
                    param=param,
                )
        except MediaError:
            await worker.send({"op": "abort"})
            raise
        async with self.budget.hold(job.estimate(header, plan)):
            self.metrics.budget_bytes.set(self.budget.used)
            await worker.send({"op": "go", **job.go(plan)})
            answer = await worker.receive()
        self.metrics.budget_bytes.set(self.budget.used)
        if "error" in answer:
            raise failure(answer, job.kind, param)
        done = answer.get("done")
        if not isinstance(done, dict) or done.get("bytes") != expected:
            raise WorkerDied("protocol")  # the worker must write exactly the grid the server asked for

        def take() -> R:  # the view lives and dies on the thread that copies (a cancelled await leaves it running)
            with memoryview(worker.out_buf) as whole, whole[:expected] as view:
                return job.take(header, plan, view)

        result = await _off_loop_if_large(expected, take)
        worker.release_pages(len(data), expected)
        return result


async def _off_loop_if_large(size: int, copy: Callable[[], R]) -> R:
    """Copies of more than a few MiB run on a thread (memcpy releases the GIL), the small ones right here."""
    if size > _COPY_IN_THREAD_ABOVE:
        return await asyncio.to_thread(copy)
    return copy()


@dataclass(frozen=True)
class _Job(Generic[H, P, R]):
    """One kind of job: how to read its header, plan it, estimate and size it, and take its result."""

    kind: Literal["image", "video"]
    extra: dict[str, Any]
    parse: Callable[[dict[str, Any]], H]
    choose: Callable[[H], P]
    estimate: Callable[[H, P], int]
    go: Callable[[P], dict[str, Any]]
    size: Callable[[P], int]
    take: Callable[[H, P, memoryview], R]


def _image_go(plan: ImagePlan) -> dict[str, Any]:
    return {"height": plan.height, "width": plan.width}


def _video_go(plan: VideoPlan) -> dict[str, Any]:
    return {
        "indices": list(plan.indices),
        "height": plan.height,
        "width": plan.width,
        "max_decoded_frames": plan.max_decoded_frames,
    }
