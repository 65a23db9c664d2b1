"""``--api-workers N``: one engine core, N API processes in front of it, and this process watching them.

The supervisor resolves the engine options once (building the embedded demo checkpoint if no model is given), binds the
listening socket (port 0 is read back), and lets vLLM's own machinery start the engine core and spawn the API processes
(``server.engine.vllm_launch``). It then only watches:

* SIGTERM or SIGINT: passed on to every API process as SIGTERM; each drains (``--drain-timeout``) and exits 0, then
  the engine core is stopped and the supervisor exits 0. A second signal is passed on too: they stop at once.
* the engine core exits: the fleet is told (every API process's watchdog then fails what it has in flight and exits
  1), and the supervisor exits 1 so the orchestrator restarts the pod.
* an API process exits on its own (its watchdog condemned the engine, or it crashed): the others are stopped as for
  SIGTERM, and the supervisor exits 1.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import socket
import time
from multiprocessing.connection import wait
from multiprocessing.process import BaseProcess
from types import FrameType

from prometheus_client import multiprocess

from server import api_process
from server.app import resolve_options
from server.config import Settings
from server.engine.vllm_launch import Launched, launch, multiprocess_metrics
from server.engine.vllm_options import resolve_reasoning_parser
from server.service.fleet import Fleet

logger = logging.getLogger(__name__)

STOP_GRACE_S = 60.0  # beyond the drain (and after an engine death): how long API processes get to exit on their own


def run(settings: Settings) -> int:
    options = resolve_reasoning_parser(resolve_options(settings))
    multiprocess_metrics()  # before anything is spawned: every process writes its samples to the shared folder
    family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
    sock = socket.create_server((settings.host, settings.port), family=family, backlog=2048)
    port = sock.getsockname()[1]
    fleet = Fleet(multiprocessing.get_context("spawn"), settings.api_workers)
    supervisor = Supervisor(settings, fleet)
    supervisor.install_signals()
    logger.info("starting the engine core and %d API processes on http://%s:%d", fleet.size, settings.host, port)
    try:
        args = api_process.ProcessArgs(settings, options, fleet)
        address = f"http://{settings.host}:{port}"
        launched = launch(options, fleet.size, api_process.main, args, sock, address, supervisor.attach)
    except Exception as exc:
        if supervisor.stopping:
            logger.info("stopped while starting")
            return 0
        logger.error("the engine failed to start (%s: %s)", type(exc).__name__, exc)
        return 1
    finally:
        sock.close()  # the API processes hold their own copies
    return supervisor.watch(launched)


class Supervisor:
    def __init__(self, settings: Settings, fleet: Fleet) -> None:
        self.settings = settings
        self.fleet = fleet
        self.stopping = False
        self.exit_code = 0
        self._processes: list[BaseProcess] = []
        self._signals = 0

    def install_signals(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)

    def attach(self, launched: Launched) -> None:
        self._processes = list(launched.api_processes)
        for _ in range(self._signals):  # a signal that came before the processes existed
            self._pass_on()

    def _on_signal(self, sig: int, frame: FrameType | None) -> None:
        self._signals += 1
        if not self.stopping:
            logger.info("signal %d: draining the API processes (up to %.0f s)", sig, self.settings.drain_timeout)
        self.stopping = True
        self._pass_on()

    def _pass_on(self) -> None:
        for process in self._processes:
            if process.is_alive() and process.pid is not None:
                os.kill(process.pid, signal.SIGTERM)

    def _stop(self, why: str, *, drain: bool = True) -> None:
        if not self.stopping:
            logger.error("%s: stopping the API processes, then exiting with code 1", why)
            self.stopping = True
            if drain:
                self._pass_on()
        self.exit_code = 1

    def watch(self, launched: Launched) -> int:
        engine = set(launched.engine_sentinels())
        deadline: float | None = None
        while live := [p for p in self._processes if p.exitcode is None]:
            if self.stopping and deadline is None:
                deadline = time.monotonic() + self.settings.drain_timeout + STOP_GRACE_S
            if deadline is not None and time.monotonic() > deadline:
                logger.error("API processes still running after the stop deadline: killing them")
                break
            ready = wait([p.sentinel for p in live] + list(engine), timeout=1.0)
            if engine & set(ready):
                engine.clear()  # it exited: nothing more to watch there
                if not self.stopping:
                    # No drain (it would wait for requests that cannot finish): their watchdogs see it, fail what
                    # is in flight and exit 1.
                    self.fleet.mark_engine_dead()
                    self._stop("the engine core exited", drain=False)
            for process in live:
                if process.sentinel in ready:
                    self._exited(process)
        launched.shutdown_api(timeout_s=5)
        launched.shutdown_engine(timeout_s=30)
        return self.exit_code

    def _exited(self, process: BaseProcess) -> None:
        folder = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
        if process.pid is not None and folder:  # its live gauges leave the sums
            multiprocess.mark_process_dead(process.pid, folder)  # type: ignore[no-untyped-call]
        if not self.stopping:
            self._stop(f"API process {process.name} exited with code {process.exitcode}")
        elif process.exitcode not in (0, None):
            self.exit_code = 1
