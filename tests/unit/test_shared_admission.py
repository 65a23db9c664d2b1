"""Admission limits that hold for the whole server when several API processes share one ledger (``--api-workers``)."""

from __future__ import annotations

import asyncio
import multiprocessing
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from prometheus_client import CollectorRegistry

from server.errors import OverloadedError
from server.service.admission import Admission, AdmissionLimits, AdmissionMetrics
from server.service.ledger import SharedLedger

SPAWN = multiprocessing.get_context("spawn")


@dataclass(frozen=True)
class Limits:
    max_running: int
    max_running_tokens: int


def grab(ledger: SharedLedger, attempts: int, results: object) -> None:
    """In a spawned process: try to start ``attempts`` requests (never finishing one); count the ones that started."""
    limits = Limits(max_running=50, max_running_tokens=1 << 30)
    started = sum(ledger.try_start(1, limits) for _ in range(attempts))
    results.put(started)  # type: ignore[attr-defined]


def test_a_shared_ledger_never_starts_more_than_the_limit_across_processes() -> None:
    # Two processes race 2000 attempts each at a limit of 50: exactly 50 start in all, none beyond, as the
    # check-and-add is atomic across processes.
    ledger = SharedLedger(SPAWN)
    results = SPAWN.Queue()
    processes = [SPAWN.Process(target=grab, args=(ledger, 2000, results)) for _ in range(2)]
    for process in processes:
        process.start()
    counts = [results.get(timeout=120) for _ in processes]
    for process in processes:
        process.join(timeout=60)
        assert process.exitcode == 0
    assert sum(counts) == 50 and ledger.running == 50, counts


async def until(predicate: Callable[[], bool]) -> None:
    """Wait for a count owned by admission to change (bounded: a failure here is a failure, not a hang)."""
    async with asyncio.timeout(30):
        while not predicate():  # noqa: ASYNC110 (polls counters owned by admission)
            await asyncio.sleep(0.01)


def make(ledger: SharedLedger, **limits: float) -> Admission:
    return Admission(AdmissionLimits(**limits), AdmissionMetrics(CollectorRegistry()), ledger)  # type: ignore[arg-type]


async def test_two_processes_admission_share_the_running_limit_and_a_waiter_sees_capacity_freed_elsewhere() -> None:
    ledger = SharedLedger(SPAWN)
    first, second = (make(ledger, max_running=2, max_queued=4, max_running_tokens=1000, max_wait_s=60) for _ in "ab")
    release = asyncio.Event()
    admitted: list[str] = []

    async def job(admission: Admission, name: str) -> None:
        async with admission.admit(10):
            admitted.append(name)
            await release.wait()

    holders = [asyncio.create_task(job(first, f"first-{i}")) for i in range(2)]
    await until(lambda: len(admitted) == 2)
    waiter = asyncio.create_task(job(second, "second"))
    await until(lambda: ledger.queued == 1)  # it waits in the second process's line: the server runs its limit of two
    assert second.running == 0 and second.queued == 1 and ledger.running == 2
    assert first.saturated and second.saturated  # either process's /ready answers for the whole server
    release.set()  # the first process's requests finish: nothing in that process wakes the second's waiter
    async with asyncio.timeout(30):
        await asyncio.gather(*holders, waiter)
    assert admitted[-1] == "second" and ledger.running == 0 and ledger.queued == 0


async def test_the_line_limit_is_the_whole_servers() -> None:
    ledger = SharedLedger(SPAWN)
    first, second = (make(ledger, max_running=1, max_queued=1, max_running_tokens=1000, max_wait_s=60) for _ in "ab")
    release = asyncio.Event()

    async def job(admission: Admission) -> None:
        async with admission.admit(10):
            await release.wait()

    running = asyncio.create_task(job(first))
    await until(lambda: ledger.running == 1)
    waiting = asyncio.create_task(job(first))
    await until(lambda: ledger.queued == 1)
    assert second.saturated  # the other process's /ready sees the whole server's line
    with pytest.raises(OverloadedError, match="1 requests running, 1 waiting"):
        async with second.admit(10):
            pass
    release.set()
    async with asyncio.timeout(30):
        await asyncio.gather(running, waiting)
    assert (ledger.running, ledger.queued) == (0, 0)
