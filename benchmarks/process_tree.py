"""A server's process tree, by role, measured beside the load: the CPU seconds (user + system) each role spent over the
run, and peak resident memory.

Roles (``role_of``, from a process's name, command line and process title):

- ``engine``: vLLM's engine processes (``VLLM::EngineCore``, ``VLLM::Worker``/``VllmWorker``): the same work behind
  every server, reported apart and never counted as the gateway's;
- ``media``: our decode workers (``python -m server.media.worker``);
- ``api``: the root process (vLLM's API server; ours, or with ``--api-workers N`` its supervisor) and the API processes
  (multiprocessing children, ``ApiServer_N``/``VLLM::APIServer_N``);
- ``other``: anything else (multiprocessing's resource tracker, …).

The **gateway** is every role but ``engine``. A process is keyed by (pid, start time), so a reused pid is a new process.
Its CPU over the run is its last reading minus its reading at the start: a process that appears mid-run counts from 0,
and one that exits mid-run keeps its last reading (taken every ``SAMPLE_PERIOD_S``: at most that much of its life is
lost).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "GATEWAY_ROLES",
    "ROLES",
    "SAMPLE_PERIOD_S",
    "CpuLedger",
    "Reading",
    "TreeSampler",
    "cpu_summary",
    "read_tree",
    "role_of",
]

ROLES = ("api", "media", "other", "engine")
GATEWAY_ROLES = ("api", "media", "other")
SAMPLE_PERIOD_S = 0.1
_ENGINE_MARKERS = ("EngineCore", "VLLM::Worker", "VllmWorker")
_API_MARKERS = ("ApiServer", "APIServer", "multiprocessing.spawn")
_MEDIA_MARKER = "server.media.worker"


def role_of(name: str, cmdline: str, *, is_root: bool) -> str:
    """The role of one process of a server's tree (see the module docstring); engine markers win, as vLLM retitles its
    spawned engine processes ``VLLM::EngineCore`` / ``VLLM::Worker``."""
    text = f"{name} {cmdline}"
    if any(marker in text for marker in _ENGINE_MARKERS):
        return "engine"
    if _MEDIA_MARKER in cmdline:
        return "media"
    if is_root or any(marker in text for marker in _API_MARKERS):
        return "api"
    return "other"


@dataclass(frozen=True)
class Reading:
    """One process at one instant: (pid, start time) identify it; ``cpu_s`` is user + system CPU since it started."""

    pid: int
    started: float
    role: str
    cpu_s: float
    rss: int = 0


@dataclass
class CpuLedger:
    """CPU seconds per role between ``begin`` and the last ``update``, from readings of the tree taken at any times."""

    _base: dict[tuple[int, float], float] = field(default_factory=dict)
    _last: dict[tuple[int, float], Reading] = field(default_factory=dict)

    def begin(self, readings: Iterable[Reading]) -> None:
        for r in readings:
            self._base[(r.pid, r.started)] = r.cpu_s
            self._last[(r.pid, r.started)] = r

    def update(self, readings: Iterable[Reading]) -> None:
        for r in readings:
            self._last[(r.pid, r.started)] = r  # one seen for the first time counts from 0 (it began mid-run)

    def cpu_s(self) -> dict[str, float]:
        totals = dict.fromkeys(ROLES, 0.0)
        for key, r in self._last.items():
            totals[r.role] += max(0.0, r.cpu_s - self._base.get(key, 0.0))
        return totals

    def processes(self) -> dict[str, int]:
        """How many processes of each role were seen over the run (those that came and went included)."""
        counts = dict.fromkeys(ROLES, 0)
        for r in self._last.values():
            counts[r.role] += 1
        return counts


def cpu_summary(ledger: CpuLedger, requests: int) -> dict[str, Any]:
    """The CPU part of a workload's summary: seconds by role, ms per request by role and for the gateway."""
    seconds = ledger.cpu_s()
    gateway = sum(seconds[r] for r in GATEWAY_ROLES)
    per = 1000.0 / requests if requests else 0.0
    return {
        "cpu_s": {**seconds, "gateway": gateway},
        "cpu_ms_per_request": {**{r: s * per for r, s in seconds.items()}, "gateway": gateway * per},
        "processes": ledger.processes(),
    }


def read_tree(pid: int) -> list[Reading]:
    """Every live process of the tree rooted at ``pid`` (one that exits while read is left out)."""
    import psutil  # type: ignore[import-untyped]

    root = psutil.Process(pid)
    readings = []
    for proc in [root, *root.children(recursive=True)]:
        try:
            with proc.oneshot():
                times = proc.cpu_times()
                role = role_of(proc.name(), " ".join(proc.cmdline()), is_root=proc.pid == pid)
                rss = proc.memory_info().rss
                readings.append(Reading(proc.pid, proc.create_time(), role, times.user + times.system, rss))
        except psutil.Error:
            continue
    return readings


@dataclass
class TreeSampler:
    """Over a ``with`` block: the CPU of the tree rooted at ``pid`` by role (read at entry, every ``SAMPLE_PERIOD_S``
    and at exit) and its peak RSS: the largest API process, the gateway (every process but the engine's), the tree."""

    pid: int
    ledger: CpuLedger = field(default_factory=CpuLedger)
    peak: dict[str, int] = field(default_factory=lambda: {"api_process": 0, "gateway": 0, "process_tree": 0})
    _stop: threading.Event = field(default_factory=threading.Event)

    def __enter__(self) -> TreeSampler:
        self.ledger.begin(self._read())
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.ledger.update(self._read())

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_PERIOD_S):
            self.ledger.update(self._read())

    def _read(self) -> list[Reading]:
        import psutil

        try:
            readings = read_tree(self.pid)
        except psutil.Error:  # the root itself is gone
            return []
        sizes = {
            "api_process": max((r.rss for r in readings if r.role == "api"), default=0),
            "gateway": sum(r.rss for r in readings if r.role != "engine"),
            "process_tree": sum(r.rss for r in readings),
        }
        self.peak = {k: max(v, sizes[k]) for k, v in self.peak.items()}
        return readings

    def summary(self, requests: int) -> dict[str, Any]:
        return {**cpu_summary(self.ledger, requests), "rss_peak_mb": {k: v / 2**20 for k, v in self.peak.items()}}
