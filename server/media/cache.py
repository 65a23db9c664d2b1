"""Content-addressed caches for the media stage: bounded by bytes, least recently used first out, optional expiry.

No library in our stack offers an LRU bounded by the *size* of its values with expiry and an async single-flight, so
these few lines are written here (``functools.lru_cache`` counts entries, not bytes, and cannot expire).
"""

from __future__ import annotations

import asyncio
import contextvars
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

V = TypeVar("V")

# Who the current request's cache entries belong to (one scope per API key; "" without auth). Set by the API layer.
cache_scope: contextvars.ContextVar[str] = contextvars.ContextVar("cache_scope", default="")
T = TypeVar("T")


@dataclass
class _Entry(Generic[V]):
    value: V
    size: int
    expires: float


class ByteLRU(Generic[V]):
    def __init__(self, max_bytes: int, ttl_s: float | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_bytes = max_bytes
        self.ttl_s = ttl_s
        self._clock = clock
        self._entries: OrderedDict[Hashable, _Entry[V]] = OrderedDict()
        self.size = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: Hashable) -> V | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry.expires < self._clock():
            self._drop(key)
            return None
        self._entries.move_to_end(key)
        return entry.value

    def put(self, key: Hashable, value: V, size: int) -> None:
        if size > self.max_bytes:
            return  # larger than the whole cache: not worth evicting everything for
        if key in self._entries:
            self._drop(key)
        expires = self._clock() + self.ttl_s if self.ttl_s is not None else float("inf")
        self._entries[key] = _Entry(value, size, expires)
        self.size += size
        while self.size > self.max_bytes:
            oldest = next(iter(self._entries))
            self._drop(oldest)

    def _drop(self, key: Hashable) -> None:
        entry = self._entries.pop(key)
        self.size -= entry.size


@dataclass
class _Flight:
    task: asyncio.Task[object]
    waiters: int = 0


class SingleFlight:
    """Concurrent calls with the same key share one execution (e.g. the same URL requested by many clients at once).

    The shared work runs in its own task, so a caller that is cancelled does not cancel it for the others; when the
    last caller has gone (clients disconnected, deadlines passed), the work is cancelled too, so that nobody's fetch or
    decode goes on for no one.
    """

    def __init__(self) -> None:
        self._running: dict[Hashable, _Flight] = {}

    async def run(self, key: Hashable, work: Callable[[], Awaitable[T]]) -> tuple[T, bool]:
        """Return (result, shared): ``shared`` is True when another caller's execution was joined."""
        flight = self._running.get(key)
        shared = flight is not None
        if flight is None:

            async def wrapped() -> object:
                return await work()

            flight = _Flight(asyncio.get_running_loop().create_task(wrapped()))
            self._running[key] = flight
            flight.task.add_done_callback(lambda t: self._done(key, t))
        flight.waiters += 1
        try:
            result = await asyncio.shield(flight.task)
        finally:
            flight.waiters -= 1
            if flight.waiters == 0 and not flight.task.done():
                flight.task.cancel()  # only reached when this caller was cancelled: the task is not done otherwise
        return result, shared  # type: ignore[return-value]

    def _done(self, key: Hashable, task: asyncio.Task[object]) -> None:
        if (flight := self._running.get(key)) is not None and flight.task is task:
            del self._running[key]
        if not task.cancelled():
            task.exception()  # retrieved: when every caller left, nobody else will (no "never retrieved" noise)
