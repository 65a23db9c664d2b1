"""The API process's handle on one decode worker process (``media.worker``): start it with its two shared-memory
buffers and a clean environment, check that its sandbox is on, exchange messages, tell why it died, kill it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import mmap
import os
import signal
import sys
from dataclasses import dataclass
from typing import Any, Literal

from server.errors import EngineUnavailableError
from server.media import wire
from server.media.worker import MEMORY_EXIT

logger = logging.getLogger(__name__)

DeathCause = Literal["crash", "memory", "timeout", "cancelled", "protocol", "exit"]
_RELEASE_ABOVE = 8 * 1024 * 1024  # buffers used beyond this give their pages back after the job


@dataclass(frozen=True)
class WorkerLimits:
    input_bytes: int  # the largest media item a job takes
    output_bytes: int  # the largest decoded result (RGB at the target grid)
    memory_bytes: int  # RLIMIT_DATA of the worker
    sandbox: bool  # refuse a worker whose seccomp filter is not on
    start_timeout_s: float


class WorkerDied(Exception):
    def __init__(self, cause: DeathCause) -> None:
        super().__init__(cause)
        self.cause = cause


class Worker:
    def __init__(self, proc: asyncio.subprocess.Process, in_buf: mmap.mmap, out_buf: mmap.mmap) -> None:
        self.proc = proc
        self.in_buf = in_buf
        self.out_buf = out_buf
        assert proc.stdin is not None and proc.stdout is not None
        self._writer = proc.stdin
        self._reader = proc.stdout

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def alive(self) -> bool:
        return self.proc.returncode is None

    async def send(self, message: dict[str, Any]) -> None:
        try:
            self._writer.write(wire.encode(message))
            await self._writer.drain()
        except (ConnectionError, RuntimeError) as exc:
            raise WorkerDied(await self.cause()) from exc

    async def receive(self) -> dict[str, Any]:
        try:
            size = wire.length(await self._reader.readexactly(4))
            return wire.decode(await self._reader.readexactly(size))
        except asyncio.IncompleteReadError as exc:
            raise WorkerDied(await self.cause()) from exc
        except wire.WireError as exc:
            raise WorkerDied("protocol") from exc

    async def cause(self) -> DeathCause:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(5):
                await self.proc.wait()
        code = self.proc.returncode
        if code == MEMORY_EXIT:
            return "memory"
        if code is not None and code < 0 and -code != signal.SIGKILL:
            return "crash"
        if code == -signal.SIGKILL:
            return "memory"  # killed from outside while we had not killed it: the kernel's OOM killer
        return "exit"

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.proc.kill()

    def release_pages(self, used_in: int, used_out: int) -> None:
        for buf, used in ((self.in_buf, used_in), (self.out_buf, used_out)):
            if used > _RELEASE_ABOVE:
                length = min(len(buf), -(-used // mmap.PAGESIZE) * mmap.PAGESIZE)
                with contextlib.suppress(OSError):
                    buf.madvise(mmap.MADV_REMOVE, 0, length)

    def close(self) -> None:
        self.kill()
        self._writer.close()  # the subprocess transport closes once its pipes are closed and the process reaped
        # The shared buffers are unmapped when this object goes (a copy on a thread of a cancelled job may still be
        # using them: closing them here could pull the pages from under it).


async def start_worker(cfg: WorkerLimits) -> Worker:
    """Start one worker and wait for its hello (raises EngineUnavailableError if it cannot start sandboxed)."""
    in_fd = os.memfd_create("qwen3vl-media-in", os.MFD_CLOEXEC)
    out_fd = os.memfd_create("qwen3vl-media-out", os.MFD_CLOEXEC)
    try:
        os.ftruncate(in_fd, cfg.input_bytes)
        os.ftruncate(out_fd, cfg.output_bytes)
        in_buf, out_buf = mmap.mmap(in_fd, cfg.input_bytes), mmap.mmap(out_fd, cfg.output_bytes)
        settings = {
            "in_fd": in_fd,
            "out_fd": out_fd,
            "in_bytes": cfg.input_bytes,
            "out_bytes": cfg.output_bytes,
            "memory_bytes": cfg.memory_bytes,
            "sandbox": cfg.sandbox,
        }
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-I",
            "-m",
            "server.media.worker",
            json.dumps(settings),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            pass_fds=(in_fd, out_fd),
            env=worker_environment(),
        )
    finally:
        os.close(in_fd)
        os.close(out_fd)
    worker = Worker(proc, in_buf, out_buf)
    try:
        async with asyncio.timeout(cfg.start_timeout_s):
            hello = await worker.receive()
    except (TimeoutError, WorkerDied) as exc:
        worker.close()
        raise EngineUnavailableError("the media decoders could not start") from exc
    if cfg.sandbox and not (hello.get("socket_refused") is True and hello.get("open_refused") is True):
        worker.close()
        logger.error("a media decode worker started without its sandbox (seccomp); refusing to use it")
        raise EngineUnavailableError("the media decoders could not be sandboxed")
    return worker


def worker_environment() -> dict[str, str]:
    """No secrets (API keys may sit in the server's environment) and no proxies reach a decoder."""
    return {"PATH": os.defpath, "LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1"}
