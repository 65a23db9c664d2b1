"""The counts admission decides on: requests running, their estimated token cost, and requests waiting in line.

One API process keeps them in plain integers (``LocalLedger``). Several API processes in front of one engine
(``--api-workers N``) share one ``SharedLedger`` in shared memory, made by the supervisor before it spawns them, so the
limits hold for the whole server, not per process. Starting a request is one atomic check-and-add under a process-shared
lock (held for a few integer operations, never across an ``await``).
"""

from __future__ import annotations

from multiprocessing.context import BaseContext
from typing import Any, Protocol


class Limits(Protocol):
    @property
    def max_running(self) -> int: ...
    @property
    def max_running_tokens(self) -> int: ...


def fits(running: int, tokens: int, cost: int, limits: Limits) -> bool:
    """Fewer than ``max_running`` run and the cost fits the token budget; a request larger than the whole budget runs
    alone rather than never."""
    if running >= limits.max_running:
        return False
    return running == 0 or tokens + cost <= limits.max_running_tokens


class Ledger(Protocol):
    shared: bool

    @property
    def running(self) -> int: ...
    @property
    def queued(self) -> int: ...
    def try_start(self, cost: int, limits: Limits) -> bool: ...
    def finish(self, cost: int) -> None: ...
    def add_queued(self, delta: int) -> None: ...


class LocalLedger:
    shared = False

    def __init__(self) -> None:
        self.running = 0
        self.tokens = 0
        self.queued = 0

    def try_start(self, cost: int, limits: Limits) -> bool:
        if not fits(self.running, self.tokens, cost, limits):
            return False
        self.running += 1
        self.tokens += cost
        return True

    def finish(self, cost: int) -> None:
        self.running -= 1
        self.tokens -= cost

    def add_queued(self, delta: int) -> None:
        self.queued += delta


_RUNNING, _TOKENS, _QUEUED = range(3)


class SharedLedger:
    """The same counts in shared memory, for every API process of one server (picklable into spawned processes)."""

    shared = True

    def __init__(self, context: BaseContext) -> None:
        self._counts: Any = context.RawArray("q", 3)
        self._lock: Any = context.Lock()

    @property
    def running(self) -> int:
        return int(self._counts[_RUNNING])

    @property
    def queued(self) -> int:
        return int(self._counts[_QUEUED])

    def try_start(self, cost: int, limits: Limits) -> bool:
        with self._lock:
            counts = self._counts
            if not fits(counts[_RUNNING], counts[_TOKENS], cost, limits):
                return False
            counts[_RUNNING] += 1
            counts[_TOKENS] += cost
            return True

    def finish(self, cost: int) -> None:
        with self._lock:
            self._counts[_RUNNING] -= 1
            self._counts[_TOKENS] -= cost

    def add_queued(self, delta: int) -> None:
        with self._lock:
            self._counts[_QUEUED] += delta
