"""The sandboxed decode workers, for real: separate processes, seccomp on, killed and replaced when a job goes wrong."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import struct
import time
import zlib
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import psutil
import pytest
from prometheus_client import CollectorRegistry

from server.errors import MediaDecodeError, MediaTimeoutError, MediaTooLargeError, MediaUnsupportedError
from server.media.decode import ImageHeader, VideoHeader
from server.media.metrics import MediaMetrics
from server.media.pool import DecodeBudget, DecodePool, ImagePlan, PoolConfig, VideoPlan
from tests.hostile_media import encode_video, hls_playlist, mp4_offsets_outside
from tests.media_factory import image_bytes

LIMIT_S = 120  # every test's own bound: a hang fails the test instead of stalling CI


def solid_png_raw(width: int, height: int) -> bytes:
    """A valid PNG of width×height black pixels written row by row (never held whole in the test's memory)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    packer = zlib.compressobj(1)
    row = b"\x00" * (1 + 3 * width)
    idat = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def gone(pid: int, within_s: float = 30.0) -> bool:
    """Whether the process exits (or is left a zombie for the event loop to reap) within a generous bound."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.05)
    return False


def deaths(metrics: MediaMetrics, cause: str) -> float:
    return metrics.worker_deaths.labels(cause)._value.get()


@pytest.fixture
async def pool() -> AsyncIterator[DecodePool]:
    pool = DecodePool(PoolConfig(workers=1), MediaMetrics(CollectorRegistry()))
    try:
        yield pool
    finally:
        await pool.close()


def fixed(height: int, width: int) -> ImagePlan:
    return ImagePlan(height=height, width=width)


async def image(pool: DecodePool, data: bytes, height: int = 32, width: int = 32) -> np.ndarray:
    return await pool.image(data, param="p", max_source_pixels=1 << 40, choose=lambda _h: fixed(height, width))


async def test_workers_are_sandboxed_processes(pool: DecodePool) -> None:
    async with asyncio.timeout(LIMIT_S):
        await pool.start()
    (pid,) = pool.pids
    assert pid != os.getpid()
    lines = (await asyncio.to_thread(Path(f"/proc/{pid}/status").read_text)).splitlines()
    status = dict(line.split(":", 1) for line in lines if ":" in line)
    assert status["Seccomp"].strip() == "2"  # a seccomp filter is loaded
    assert status["NoNewPrivs"].strip() == "1"
    environ = psutil.Process(pid).environ()
    assert not [k for k in environ if k.startswith("QWEN3VL_") or "KEY" in k]  # no secrets reach a decoder


async def test_images_come_back_at_the_planned_grid(pool: DecodePool) -> None:
    seen: list[ImageHeader] = []

    def plan(header: ImageHeader) -> ImagePlan:
        seen.append(header)
        return fixed(64, 96)

    async with asyncio.timeout(LIMIT_S):
        result = await pool.image(image_bytes(300, 200, "JPEG"), param="p", max_source_pixels=1 << 30, choose=plan)
    assert result.shape == (64, 96, 3) and result.dtype == np.uint8
    assert seen == [ImageHeader(format="JPEG", width=300, height=200)]


async def test_refusals_keep_the_worker_and_name_the_part(pool: DecodePool) -> None:
    async with asyncio.timeout(LIMIT_S):
        await pool.start()
        (pid,) = pool.pids
        with pytest.raises(MediaDecodeError) as garbage:
            await image(pool, b"\x89PNG\r\n\x1a\n" + b"\x00" * 100)
        with pytest.raises(MediaUnsupportedError) as playlist:
            await pool.video(hls_playlist("http://127.0.0.1:9/a.ts"), param="v", choose=lambda _h: None)  # type: ignore[arg-type,return-value]

        def refuse(header: ImageHeader) -> ImagePlan:
            raise MediaTooLargeError("p is too large", param="p")

        with pytest.raises(MediaTooLargeError):
            await pool.image(image_bytes(40, 30), param="p", max_source_pixels=1 << 30, choose=refuse)
        assert pool.pids == [pid]  # the same worker served all three refusals
        assert (await image(pool, image_bytes(40, 30))).shape == (32, 32, 3)
    assert garbage.value.param == "p" and "HLS playlist" in playlist.value.message


async def test_a_crashing_worker_costs_one_job_and_is_replaced(pool: DecodePool) -> None:
    async with asyncio.timeout(LIMIT_S):
        await pool.start()
        (victim,) = pool.pids

        def crash(header: VideoHeader) -> VideoPlan:
            os.kill(victim, signal.SIGSEGV)  # as a decoder bug would, while the job is on that worker
            assert gone(victim)  # (not reaped here: its exit status is the event loop's to read)
            return VideoPlan(indices=(0, 1), height=32, width=32, max_decoded_frames=100)

        with pytest.raises(MediaDecodeError) as info:
            await pool.video(encode_video(), param="v", choose=crash)
        assert info.value.code == "media_decode_failed" and "decoder failed" in info.value.message
        assert deaths(pool.metrics, "crash") == 1
        result = await image(pool, image_bytes(40, 30))  # the replacement serves the next job
        assert pool.pids and victim not in pool.pids and result is not None


async def test_memory_over_the_worker_limit_is_media_too_large() -> None:
    pool = DecodePool(PoolConfig(workers=1, memory_bytes=400 * 1024**2), MediaMetrics(CollectorRegistry()))
    try:
        async with asyncio.timeout(LIMIT_S):
            huge = solid_png_raw(12_000, 12_000)  # 432 MB of pixels in ~0.5 MB
            with pytest.raises(MediaTooLargeError) as info:
                await image(pool, huge)
            assert info.value.code == "media_too_large"
            assert deaths(pool.metrics, "memory") == 1
            assert (await image(pool, image_bytes(40, 30))) is not None
    finally:
        await pool.close()


async def test_the_deadline_kills_the_job() -> None:
    pool = DecodePool(PoolConfig(workers=1, job_timeout_s=0.2), MediaMetrics(CollectorRegistry()))
    big = encode_video(frames=16, width=2048, height=2048, solid=True)
    try:
        async with asyncio.timeout(LIMIT_S):
            await pool.start()
            (pid,) = pool.pids
            plan = VideoPlan(indices=tuple(range(16)), height=1024, width=1024, max_decoded_frames=100)
            with pytest.raises(MediaTimeoutError) as info:
                await pool.video(big, param="v", choose=lambda _h: plan)
            assert info.value.code == "media_timeout"
            assert deaths(pool.metrics, "timeout") == 1
            assert await asyncio.to_thread(gone, pid)  # SIGKILLed, not merely abandoned
    finally:
        await pool.close()


async def test_a_cancelled_job_really_stops(pool: DecodePool) -> None:
    big = encode_video(frames=16, width=2048, height=2048, solid=True)
    started = asyncio.Event()

    def plan(header: VideoHeader) -> VideoPlan:
        started.set()
        return VideoPlan(indices=tuple(range(16)), height=1024, width=1024, max_decoded_frames=100)

    async with asyncio.timeout(LIMIT_S):
        await pool.start()
        (pid,) = pool.pids
        job = asyncio.create_task(pool.video(big, param="v", choose=plan))
        await started.wait()
        job.cancel()
        with pytest.raises(asyncio.CancelledError):
            await job
        assert await asyncio.to_thread(gone, pid)
        assert deaths(pool.metrics, "cancelled") == 1


async def test_crafted_chunk_offsets_are_a_clean_refusal(pool: DecodePool) -> None:
    bad = mp4_offsets_outside(encode_video())
    plan = VideoPlan(indices=(0, 5), height=32, width=32, max_decoded_frames=100)
    async with asyncio.timeout(LIMIT_S):
        with pytest.raises(MediaDecodeError):
            await pool.video(bad, param="v", choose=lambda _h: plan)
    assert deaths(pool.metrics, "crash") == 0


async def test_the_budget_queues_jobs_beyond_its_capacity() -> None:
    budget = DecodeBudget(100)
    first_in, release_first = asyncio.Event(), asyncio.Event()
    order: list[str] = []

    async def hold(name: str, size: int, entered: asyncio.Event | None, leave: asyncio.Event | None) -> None:
        async with budget.hold(size):
            order.append(name)
            if entered is not None:
                entered.set()
            if leave is not None:
                await leave.wait()

    async with asyncio.timeout(LIMIT_S):
        first = asyncio.create_task(hold("first", 80, first_in, release_first))
        await first_in.wait()
        second = asyncio.create_task(hold("second", 50, None, None))
        await asyncio.sleep(0)
        assert order == ["first"] and budget.used == 80  # the second waits: 80 + 50 > 100
        release_first.set()
        await asyncio.gather(first, second)
    assert order == ["first", "second"] and budget.used == 0
    async with budget.hold(10_000):  # alone, an oversized job still runs (its worker's memory limit applies)
        assert budget.used == 100


def test_a_worker_holds_no_descriptor_of_the_server_even_under_uvloop() -> None:
    # uvloop (uvicorn's loop) ignores subprocess close_fds: an inheritable descriptor of the server process (with
    # --api-workers, the listening socket received from the supervisor) would reach every decoder.
    import uvloop

    def descriptors(pid: int) -> set[str]:
        return {str(Path(f"/proc/{pid}/fd/{fd}").readlink()) for fd in os.listdir(f"/proc/{pid}/fd")}

    async def started_worker_fds() -> set[str]:
        pool = DecodePool(PoolConfig(workers=1), MediaMetrics(CollectorRegistry()))
        try:
            async with asyncio.timeout(LIMIT_S):
                await pool.start()
            (pid,) = pool.pids
            return await asyncio.to_thread(descriptors, pid)
        finally:
            await pool.close()

    with socket.create_server(("127.0.0.1", 0)) as listening:
        listening.set_inheritable(True)  # as a socket received from the supervisor arrives
        held = uvloop.run(started_worker_fds())
        leaked = str(Path(f"/proc/self/fd/{listening.fileno()}").readlink())
    assert leaked not in held, held
