"""README's wedged-engine claim on a real server process and the real engine: with a request in flight and no engine
output for ``--engine-wedged-after`` seconds, ``/health`` turns 503, the request in flight gets its error (never a
hang), and the process exits 1 so the orchestrator restarts it.

The engine is wedged for real: its EngineCore process is stopped (SIGSTOP) *before* the request is sent. Stopping it
mid-stream would prove nothing here: on this box the engine core runs far ahead of the API process (a long answer can be
done at the engine while the client still reads its first chunks), so the API process would go on making progress from
what is already on its way, and the stop could land on an idle engine.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from pathlib import Path

import httpx
import psutil
import pytest

from tests.e2e.process import ServerProcess, server_process

pytestmark = pytest.mark.e2e

WEDGED_AFTER_S = 3.0
HEALTH_INTERVAL_S = 10.0
CHAT = {"model": "tiny-qwen3vl", "messages": [{"role": "user", "content": "Keep going."}], "max_tokens": 50}


def stop(processes: list[psutil.Process], sig: signal.Signals) -> None:
    for process in processes:
        with contextlib.suppress(psutil.NoSuchProcess):  # gone already: the server is stopping it
            process.send_signal(sig)


def health(server: ServerProcess) -> int:
    try:
        return httpx.get(f"{server.base_url}/health", timeout=10).status_code
    except httpx.HTTPError:
        return 0  # the server stopped listening: it is exiting


def test_a_wedged_engine_turns_health_503_fails_the_request_in_flight_and_exits_one(tmp_path: Path) -> None:
    # The watchdog looks every HEALTH_INTERVAL_S, well after the wedge shows at WEDGED_AFTER_S: /health says 503 from
    # the wedge on (and stays so once the watchdog has condemned the engine), a window of seconds for the probes here.
    extra = ["--engine-wedged-after", str(WEDGED_AFTER_S), "--engine-health-interval", str(HEALTH_INTERVAL_S)]
    with server_process(tmp_path, extra) as server:
        assert health(server) == 200
        core = server.engine_core()
        stalled = [core, *core.children(recursive=True)]
        answers: list[httpx.Response | BaseException] = []

        def send() -> None:
            try:
                answers.append(httpx.post(f"{server.base_url}/v1/chat/completions", json=CHAT, timeout=120))
            except httpx.HTTPError as exc:
                answers.append(exc)

        stop(stalled, signal.SIGSTOP)
        sent = time.monotonic()
        sender = threading.Thread(target=send, daemon=True)
        first_503: float | None = None
        try:
            sender.start()
            while sender.is_alive() and time.monotonic() - sent < 120:
                if first_503 is None and health(server) == 503:
                    first_503 = time.monotonic() - sent
                sender.join(0.2)
            assert not sender.is_alive(), "the request hung on a wedged engine"
        finally:
            stop(stalled, signal.SIGCONT)
        failed_after = time.monotonic() - sent
        (answer,) = answers
        assert isinstance(answer, httpx.Response), answer
        assert answer.status_code == 503, answer.text
        assert answer.json()["error"]["code"] == "engine_unavailable", answer.text
        # Not at once: only after the engine made no progress for --engine-wedged-after seconds.
        assert first_503 is not None, "/health never said 503 while the request waited on a stopped engine"
        assert first_503 >= WEDGED_AFTER_S - 0.5, first_503
        assert failed_after >= WEDGED_AFTER_S, failed_after
        assert server.process.wait(timeout=120) == 1, server.log()[-3000:]
        assert "engine failure (the inference engine made no progress" in server.log()
