"""Drain and watchdog with the fake engine (the real-process versions live in tests/e2e/test_startup_states.py and
test_wedged_engine.py)."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

from fastapi.testclient import TestClient

from server import lifecycle
from server.app import create_app
from server.config import Settings
from server.engine.fake import FakeEngine

BODY = {"model": "fake-qwen3vl", "messages": [{"role": "user", "content": "x"}]}


def test_drain_finishes_quick_requests_and_aborts_slow_ones_with_an_error_event() -> None:
    engine = FakeEngine(script=tuple(f"t{i}" for i in range(50)), delay_s=0.05)
    with TestClient(create_app(Settings(warmup=False), engine=engine)) as client:
        state = client.app.state.qwen3vl  # type: ignore[attr-defined]
        results: dict[str, Any] = {}

        def stream() -> None:
            results["stream"] = client.post("/v1/chat/completions", json={**BODY, "stream": True})

        worker = threading.Thread(target=stream)
        worker.start()
        deadline = time.monotonic() + 60
        while state.busy == 0:  # the stream is admitted (bounded: a failure here is a failure, not a hang)
            assert time.monotonic() < deadline, "the stream never started"
            time.sleep(0.01)
        # 50 tokens at 0.05 s would take 2.5 s: a drain with 0.3 s to spare must abort the stream, not wait for it.
        client.portal.call(lifecycle.drain, state, 0.3)  # type: ignore[union-attr]
        worker.join(60)
        assert not worker.is_alive()
        assert client.get("/ready").status_code == 503
        assert client.post("/v1/chat/completions", json=BODY).status_code == 503
    events = [line[6:] for line in results["stream"].text.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    assert json.loads(events[-2])["error"]["code"] == "engine_unavailable"
    assert engine.aborted == 1 and engine.in_flight == 0


def test_drain_with_nothing_in_flight_aborts_nothing() -> None:
    engine = FakeEngine()
    with TestClient(create_app(Settings(warmup=False), engine=engine)) as client:
        assert client.post("/v1/chat/completions", json=BODY).status_code == 200
        client.portal.call(lifecycle.drain, client.app.state.qwen3vl, 5.0)  # type: ignore[union-attr,attr-defined]
    assert engine.aborted == 0


def test_watchdog_asks_for_a_non_zero_exit_when_the_engine_dies() -> None:
    engine = FakeEngine()
    exits: list[int] = []
    with TestClient(create_app(Settings(warmup=False, engine_health_interval=0.05), engine=engine)) as client:
        client.app.state.qwen3vl.request_exit = exits.append  # type: ignore[attr-defined]
        engine.dead = True
        deadline = time.monotonic() + 5
        while not exits and time.monotonic() < deadline:
            time.sleep(0.02)
        assert client.get("/health").status_code == 503
    assert exits == [1]


def test_a_condemned_engine_fails_the_stream_in_flight_and_the_server_stays_dead_until_it_exits() -> None:
    engine = FakeEngine(script=tuple(f"t{i}" for i in range(400)), delay_s=0.05)  # 20 s if nothing cut it
    exits: list[int] = []
    settings = Settings(warmup=False, engine_health_interval=0.05)
    with TestClient(create_app(settings, engine=engine)) as client:
        state = client.app.state.qwen3vl  # type: ignore[attr-defined]
        state.request_exit = exits.append
        results: dict[str, Any] = {}
        worker = threading.Thread(
            target=lambda: results.update(stream=client.post("/v1/chat/completions", json={**BODY, "stream": True}))
        )
        worker.start()
        deadline = time.monotonic() + 60
        while state.busy == 0:  # the stream is admitted (bounded: a failure here is a failure, not a hang)
            assert time.monotonic() < deadline, "the stream never started"
            time.sleep(0.01)
        engine.dead = True  # what check_health says of a wedged engine too: it raises
        worker.join(60)
        assert not worker.is_alive(), "the stream hung on a condemned engine"
        deadline = time.monotonic() + 60
        while not exits:
            assert time.monotonic() < deadline, "the watchdog never asked to exit"
            time.sleep(0.02)
        engine.dead = False  # the engine answers again, but the watchdog's verdict stands until the process exits
        assert client.get("/health").json() == {"status": "dead"}
        assert client.get("/ready").json() == {"status": "dead"}
        refused = client.post("/v1/chat/completions", json=BODY)
        assert refused.status_code == 503 and refused.json()["error"]["code"] == "engine_unavailable", refused.text
    assert exits == [1]
    events = [line[6:] for line in results["stream"].text.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    assert json.loads(events[-2])["error"]["code"] == "engine_unavailable"
    assert engine.aborted == 1


def test_startup_probe(client: TestClient) -> None:
    assert client.get("/startup").json() == {"status": "started"}
