"""What the API processes of one server share when there are several in front of one engine (``--api-workers N``).

The supervisor makes a ``Fleet`` in shared memory before it spawns the processes, and each gets it with its index (its
``Seat``): the admission ledger, each process's state, and the engine's death as the supervisor saw it. The probes read
it, so ``/ready`` is the whole server's answer whichever process the kernel handed the probe's connection to.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from multiprocessing.context import BaseContext
from typing import Any

from server.service.ledger import SharedLedger


class Phase(enum.IntEnum):
    LOADING = 0  # its engine client is being made
    STARTED = 1  # engine up, warming
    READY = 2
    FAILED = 3  # its start failed, or its watchdog condemned the engine


class Fleet:
    def __init__(self, context: BaseContext, size: int) -> None:
        self.size = size
        self.ledger = SharedLedger(context)
        self._phases: Any = context.RawArray("b", size)
        self._engine_dead: Any = context.RawValue("b", 0)

    def phases(self) -> list[Phase]:
        return [Phase(value) for value in self._phases]

    def set_phase(self, index: int, phase: Phase) -> None:
        self._phases[index] = int(phase)

    @property
    def engine_dead(self) -> bool:
        return bool(self._engine_dead.value)

    def mark_engine_dead(self) -> None:
        self._engine_dead.value = 1


@dataclass(frozen=True)
class Seat:
    """One API process's place in the fleet."""

    fleet: Fleet
    index: int

    def set_phase(self, phase: Phase) -> None:
        self.fleet.set_phase(self.index, phase)

    @property
    def all_started(self) -> bool:
        return all(phase >= Phase.STARTED for phase in self.fleet.phases())

    @property
    def all_ready(self) -> bool:
        return all(phase == Phase.READY for phase in self.fleet.phases())

    @property
    def any_failed(self) -> bool:
        return self.fleet.engine_dead or Phase.FAILED in self.fleet.phases()
