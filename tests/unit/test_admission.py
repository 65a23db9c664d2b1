from __future__ import annotations

import asyncio

import pytest
from prometheus_client import CollectorRegistry

from server.errors import OverloadedError
from server.service.admission import Admission, AdmissionLimits, AdmissionMetrics


def make(**limits: float) -> Admission:
    return Admission(AdmissionLimits(**limits), AdmissionMetrics(CollectorRegistry()))  # type: ignore[arg-type]


async def test_runs_within_bounds_then_queues_in_order() -> None:
    admission = make(max_running=2, max_queued=5, max_running_tokens=100, max_wait_s=5)
    order: list[int] = []
    release = asyncio.Event()

    async def job(i: int, cost: int) -> None:
        async with admission.admit(cost):
            order.append(i)
            await release.wait()

    tasks = [asyncio.create_task(job(i, 40)) for i in range(4)]
    await asyncio.sleep(0.01)
    assert order == [0, 1] and admission.running == 2
    release.set()
    await asyncio.gather(*tasks)
    assert order == [0, 1, 2, 3] and admission.running == 0


async def test_token_budget_weighs_requests() -> None:
    admission = make(max_running=10, max_queued=5, max_running_tokens=100, max_wait_s=5)
    async with admission.admit(70):
        waiter = asyncio.create_task(_enter(admission, 40))
        await asyncio.sleep(0.01)
        assert not waiter.done()  # 70 + 40 > 100
    await waiter
    async with admission.admit(500):  # larger than the whole budget: runs alone rather than never
        assert admission.running == 1


async def _enter(admission: Admission, cost: int) -> None:
    async with admission.admit(cost):
        pass


async def test_full_queue_and_long_wait_are_429_with_retry_after() -> None:
    admission = make(max_running=1, max_queued=1, max_running_tokens=100, max_wait_s=0.1)
    hold = asyncio.Event()

    async def holder() -> None:
        async with admission.admit(1):
            await hold.wait()

    running = asyncio.create_task(holder())
    await asyncio.sleep(0)
    queued = asyncio.create_task(_enter(admission, 1))
    await asyncio.sleep(0)
    with pytest.raises(OverloadedError) as full:
        await _enter(admission, 1)
    assert full.value.status_code == 429 and full.value.headers()["Retry-After"].isdigit()
    with pytest.raises(OverloadedError):
        await queued  # waited longer than max_wait_s
    hold.set()
    await running
    assert admission.running == 0


async def test_cancelled_waiter_leaves_the_line() -> None:
    admission = make(max_running=1, max_queued=4, max_running_tokens=100, max_wait_s=5)
    async with admission.admit(1):
        waiter = asyncio.create_task(_enter(admission, 1))
        await asyncio.sleep(0.01)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
    assert admission.running == 0
    await _enter(admission, 1)
