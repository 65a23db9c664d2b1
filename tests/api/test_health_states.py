"""The probes' answers in each state the README names (fake engine, real app over real HTTP where load matters):

* engine up, warm-up still running: ``/health`` 200, ``/startup`` 200, ``/ready`` 503;
* a start that failed: every probe 503 with the reason;
* saturated (admission full): ``/ready`` 503 while the load lasts and 200 again once it ends; ``/health`` stays 200;
* one of several API processes (``--api-workers``): each probe answers for the whole server (every process started,
  every one ready, none condemned the engine), and the engine's death as the supervisor saw it fails each process.

The "model still loading" state (no engine yet) needs the real engine's start: tests/e2e/test_startup_states.py
records the probes of a real server process from its first answer to ready.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
from fastapi.testclient import TestClient

from server.app import create_app
from server.config import Settings
from server.engine.base import EngineRequest, EngineStep
from server.engine.fake import FakeEngine
from server.errors import EngineError
from server.service.fleet import Fleet, Phase, Seat
from tests.live import uvicorn_thread

BODY = {"model": "fake-qwen3vl", "messages": [{"role": "user", "content": "x"}]}


@dataclass
class GatedEngine(FakeEngine):
    """The fake engine, but every request waits for ``gate`` before its first token."""

    gate: threading.Event = field(default_factory=threading.Event)

    async def generate(self, request: EngineRequest) -> AsyncIterator[EngineStep]:
        opened = await asyncio.to_thread(self.gate.wait, 60)
        assert opened, "the test never opened the gate"
        async for step in super().generate(request):
            yield step


def probes(get: Callable[[str], Any]) -> dict[str, tuple[int, dict[str, Any]]]:
    answers = {path: get(path) for path in ("/health", "/startup", "/ready")}
    return {path: (r.status_code, r.json()) for path, r in answers.items()}


def wait_for(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


def test_while_the_warm_up_runs_the_process_is_live_and_started_but_not_ready() -> None:
    engine = GatedEngine()
    with TestClient(create_app(Settings(warmup=True), engine=engine)) as client:
        assert probes(client.get) == {
            "/health": (200, {"status": "ok"}),
            "/startup": (200, {"status": "started"}),
            "/ready": (503, {"status": "starting"}),
        }
        engine.gate.set()
        wait_for(lambda: client.get("/ready").status_code == 200, 30, "/ready never turned 200 after the warm-up")
        assert probes(client.get) == {
            "/health": (200, {"status": "ok"}),
            "/startup": (200, {"status": "started"}),
            "/ready": (200, {"status": "ready"}),
        }
    assert len(engine.requests) == 1  # the warm-up, and nothing else, reached the engine


def test_a_failed_start_is_503_on_every_probe_with_its_reason() -> None:
    engine = FakeEngine(fail_with=EngineError("the inference engine failed on this request"))
    with TestClient(create_app(Settings(warmup=True), engine=engine)) as client:
        wait_for(lambda: client.get("/health").status_code == 503, 30, "a failed warm-up never showed on /health")
        answers = probes(client.get)
    assert answers["/health"] == (503, {"status": "failed", "reason": "EngineError"})
    assert answers["/startup"] == (503, {"status": "failed", "reason": "EngineError"})
    assert answers["/ready"][0] == 503 and answers["/ready"][1]["status"] == "failed"


@contextlib.contextmanager
def live_app(engine: FakeEngine, **settings: Any) -> Iterator[str]:
    app = create_app(Settings(warmup=False, **settings), engine=engine)
    with uvicorn_thread(app) as live:
        wait_for(lambda: httpx.get(f"{live.base_url}/ready", timeout=5).status_code == 200, 30, "never ready")
        yield live.base_url


class OpenStream:
    """A streamed chat request held open until ``close`` (the client leaves: its admission slot is given back)."""

    def __init__(self, base_url: str) -> None:
        self._client = httpx.Client(base_url=base_url, timeout=60)
        self._stream = self._client.stream("POST", "/v1/chat/completions", json={**BODY, "stream": True})
        self.response = self._stream.__enter__()

    def close(self) -> None:
        self._stream.__exit__(None, None, None)
        self._client.close()


def test_ready_is_503_while_admission_is_full_and_200_when_the_load_ends() -> None:
    # A long stream (2000 tokens at 20 ms: 40 s) holds its admission slot until its client leaves.
    engine = FakeEngine(script=tuple(f"t{i} " for i in range(2000)), delay_s=0.02)
    with live_app(engine, admission_max_running=2, admission_max_queued=4) as base_url:

        def ready() -> tuple[int, dict[str, Any]]:
            response = httpx.get(f"{base_url}/ready", timeout=10)
            return response.status_code, response.json()

        first = OpenStream(base_url)
        second: OpenStream | None = None
        try:
            assert first.response.status_code == 200
            assert ready() == (200, {"status": "ready"})  # one of two slots taken: not saturated
            second = OpenStream(base_url)
            assert second.response.status_code == 200
            assert ready() == (503, {"status": "saturated"})  # both running slots taken
            assert httpx.get(f"{base_url}/health", timeout=10).json() == {"status": "ok"}  # live, just busy
            second.close()
            second = None
            wait_for(lambda: ready()[0] == 200, 30, "/ready stayed 503 after a slot was given back")
            assert ready() == (200, {"status": "ready"})
        finally:
            for stream in (first, second):
                if stream is not None:
                    stream.close()
        wait_for(lambda: engine.in_flight == 0, 30, "the streams' engine requests were never aborted")
        assert ready() == (200, {"status": "ready"})


def statuses(client: TestClient) -> dict[str, tuple[int, str]]:
    return {path: (code, answer["status"]) for path, (code, answer) in probes(client.get).items()}


def test_with_several_api_processes_the_probes_answer_for_the_whole_server() -> None:
    # This process is seat 0 of a fleet of two; seat 1 stands for the other process's state in shared memory.
    fleet = Fleet(multiprocessing.get_context("spawn"), 2)
    app = create_app(Settings(warmup=False), engine=FakeEngine())
    app.state.qwen3vl.seat = Seat(fleet, 0)
    other = Seat(fleet, 1)
    with TestClient(app) as client:
        wait_for(lambda: client.app.state.qwen3vl.ready, 60, "the app never became ready")  # type: ignore[attr-defined]
        assert fleet.phases()[0] == Phase.READY
        # The other process's engine client is still being made: the server is live but neither started nor ready.
        assert statuses(client) == {"/health": (200, "ok"), "/startup": (503, "loading"), "/ready": (503, "starting")}
        other.set_phase(Phase.STARTED)
        assert statuses(client) == {"/health": (200, "ok"), "/startup": (200, "started"), "/ready": (503, "starting")}
        other.set_phase(Phase.READY)
        assert statuses(client) == {"/health": (200, "ok"), "/startup": (200, "started"), "/ready": (200, "ready")}
        assert client.post("/v1/chat/completions", json=BODY).status_code == 200  # its admission is the fleet's
        assert (fleet.ledger.running, fleet.ledger.queued) == (0, 0)
        other.set_phase(Phase.FAILED)  # the other's watchdog condemned the engine: this one says so too
        assert statuses(client)["/health"] == (503, "dead") and statuses(client)["/ready"] == (503, "dead")


def test_the_supervisor_seeing_the_engine_exit_makes_each_process_fail_and_exit_one() -> None:
    fleet = Fleet(multiprocessing.get_context("spawn"), 1)
    exits: list[int] = []
    app = create_app(Settings(warmup=False, engine_health_interval=0.05), engine=FakeEngine())
    state = app.state.qwen3vl
    state.seat = Seat(fleet, 0)
    state.request_exit = exits.append
    with TestClient(app) as client:
        wait_for(lambda: state.ready, 60, "the app never became ready")
        fleet.mark_engine_dead()  # what the supervisor does when the engine core's process exits
        wait_for(lambda: bool(exits), 60, "the watchdog never asked to exit")
        assert statuses(client)["/health"] == (503, "dead")
        assert client.post("/v1/chat/completions", json=BODY).status_code == 503
    assert exits == [1] and fleet.phases() == [Phase.FAILED]
