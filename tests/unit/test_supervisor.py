"""The supervisor of several API processes, with real child processes standing in for the API processes and the engine
core: what it does when one exits on its own, when the engine core exits, and on SIGTERM."""

from __future__ import annotations

import multiprocessing
import signal
import sys
import threading
import time
from multiprocessing.process import BaseProcess
from typing import Any

from server.config import Settings
from server.engine.vllm_launch import Launched
from server.service.fleet import Fleet
from server.supervisor import Supervisor

SPAWN = multiprocessing.get_context("spawn")
BOUND_S = 60.0  # every wait here is an event with this bound, never a window


def exits_with(code: int, after: Any = None) -> None:
    if after is not None:  # once the other process serves (its SIGTERM handler is in place)
        after.wait(BOUND_S)
    sys.exit(code)


def drains_on_sigterm(serving: Any = None) -> None:
    """An API process: serves until SIGTERM, then drains (here: nothing) and exits 0."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    if serving is not None:
        serving.set()
    stop.wait(BOUND_S)
    sys.exit(0 if stop.is_set() else 2)


def fails_when_the_engine_dies(fleet: Fleet) -> None:
    """An API process whose watchdog sees the supervisor's mark, fails what is in flight and exits 1."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(3))  # a SIGTERM would show as exit code 3
    deadline = time.monotonic() + BOUND_S
    while not fleet.engine_dead and time.monotonic() < deadline:
        time.sleep(0.05)
    sys.exit(1 if fleet.engine_dead else 2)


def started(*processes: BaseProcess) -> list[BaseProcess]:
    for process in processes:
        process.start()
    return list(processes)


def watch(supervisor: Supervisor, api: list[BaseProcess], engine: list[BaseProcess] | None = None) -> int:
    launched = Launched(api, None, None)
    launched.engine_sentinels = lambda: [p.sentinel for p in engine or []]  # type: ignore[method-assign]
    supervisor.attach(launched)
    return supervisor.watch(launched)


def test_an_api_process_exiting_on_its_own_stops_the_others_and_exits_one() -> None:
    fleet = Fleet(SPAWN, 2)
    serving = SPAWN.Event()
    api = started(
        SPAWN.Process(target=exits_with, args=(3, serving)), SPAWN.Process(target=drains_on_sigterm, args=(serving,))
    )
    assert watch(Supervisor(Settings(), fleet), api) == 1
    assert [p.exitcode for p in api] == [3, 0]  # the other one was asked to drain, and did
    assert not fleet.engine_dead


def test_the_engine_core_exiting_marks_the_fleet_and_each_api_process_fails_by_itself() -> None:
    fleet = Fleet(SPAWN, 2)
    engine = started(SPAWN.Process(target=exits_with, args=(0,)))
    api = started(*(SPAWN.Process(target=fails_when_the_engine_dies, args=(fleet,)) for _ in range(2)))
    assert watch(Supervisor(Settings(), fleet), api, engine) == 1
    # No SIGTERM (a drain would wait for requests that cannot finish): each saw the mark and exited 1.
    assert fleet.engine_dead and [p.exitcode for p in api] == [1, 1]


def test_sigterm_drains_every_api_process_then_exits_zero() -> None:
    fleet = Fleet(SPAWN, 2)
    serving = [SPAWN.Event() for _ in range(2)]
    api = started(*(SPAWN.Process(target=drains_on_sigterm, args=(event,)) for event in serving))
    supervisor = Supervisor(Settings(drain_timeout=5), fleet)

    def signal_once_serving() -> None:
        if all(event.wait(BOUND_S) for event in serving):
            supervisor._on_signal(signal.SIGTERM, None)  # as the signal handler would

    sender = threading.Thread(target=signal_once_serving)
    sender.start()
    try:
        assert watch(supervisor, api) == 0
    finally:
        sender.join(BOUND_S)
    assert [p.exitcode for p in api] == [0, 0]
