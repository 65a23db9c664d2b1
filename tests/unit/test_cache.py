from __future__ import annotations

import asyncio

import pytest

from server.media.cache import ByteLRU, SingleFlight


def test_lru_bounded_by_bytes_evicts_least_recently_used() -> None:
    cache: ByteLRU[str] = ByteLRU(max_bytes=10)
    cache.put("a", "A", 4)
    cache.put("b", "B", 4)
    assert cache.get("a") == "A"  # a is now the most recent
    cache.put("c", "C", 4)  # 12 > 10: b goes
    assert (cache.get("a"), cache.get("b"), cache.get("c")) == ("A", None, "C")
    assert cache.size == 8
    cache.put("huge", "H", 11)  # larger than the whole cache: not stored, nothing evicted
    assert cache.get("huge") is None and len(cache) == 2


def test_lru_expiry() -> None:
    now = [0.0]
    cache: ByteLRU[str] = ByteLRU(max_bytes=10, ttl_s=5, clock=lambda: now[0])
    cache.put("a", "A", 1)
    now[0] = 4.9
    assert cache.get("a") == "A"
    now[0] = 5.1
    assert cache.get("a") is None and cache.size == 0


async def test_single_flight_shares_one_execution() -> None:
    flights = SingleFlight()
    calls = 0

    async def work() -> int:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.05)
        return 42

    results = await asyncio.gather(*(flights.run("k", work) for _ in range(5)))
    assert calls == 1
    assert [r for r, _ in results] == [42] * 5
    assert sorted(shared for _, shared in results) == [False, True, True, True, True]
    assert (await flights.run("k", work))[0] == 42 and calls == 2  # finished flights are not cached


async def test_single_flight_survives_a_cancelled_caller() -> None:
    flights = SingleFlight()

    async def work() -> str:
        await asyncio.sleep(0.05)
        return "done"

    first = asyncio.create_task(flights.run("k", work))
    await asyncio.sleep(0.01)
    second = asyncio.create_task(flights.run("k", work))
    await asyncio.sleep(0)
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    assert (await second)[0] == "done"


async def test_single_flight_stops_the_work_when_every_caller_has_gone() -> None:
    flights = SingleFlight()
    started, stopped = asyncio.Event(), asyncio.Event()

    async def work() -> str:
        started.set()
        try:
            await asyncio.Event().wait()  # until cancelled
        finally:
            stopped.set()
        return "never"

    callers = [asyncio.create_task(flights.run("k", work)) for _ in range(2)]
    async with asyncio.timeout(30):
        await started.wait()
        callers[0].cancel()
        await asyncio.sleep(0)
        assert not stopped.is_set()  # one caller is still waiting for it
        callers[1].cancel()
        await stopped.wait()  # the last one gone: the work (a fetch, a decode job) is cancelled
    for caller in callers:
        with pytest.raises(asyncio.CancelledError):
            await caller
