"""README claims about a real server process that stalls or stops, on the real engine (one server start for both):

* ``/health`` (and ``/ready``) turn 503 once the engine is *wedged* (requests in flight, no output for
  ``--engine-wedged-after`` seconds), and turn back to 200 when it makes progress again;
* a drain whose ``--drain-timeout`` passes with a stream still running cuts that stream (an SSE error event, then
  ``[DONE]``), and the process exits 0 soon after the deadline.

The engine is wedged for real: its EngineCore process is stopped (SIGSTOP) while a long stream is generating. On the
shared server the watchdog, which would stop the whole process once it sees the wedge, looks only every 300 s, so the
probes' answers can be observed; a second server, with the watchdog looking every second, shows the rest of the claim:
the stream in flight gets its error event (never a hang) and the process exits 1.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from tests.e2e.process import ServerProcess, listening_port, server_process

pytestmark = pytest.mark.e2e

WEDGED_AFTER_S = 3.0
DRAIN_TIMEOUT_S = 4.0
LONG_CONTEXT = 16384
LONG = 16000  # tokens, nearly the whole context: tens of seconds of work on this CPU at the least
CHAT = {"model": "tiny-qwen3vl", "messages": [{"role": "user", "content": "Keep going."}]}


PROBES = ("/health", "/startup", "/ready")
Answer = tuple[int, dict[str, Any]]


@dataclass
class Started:
    server: ServerProcess
    seen: dict[str, list[Answer]]  # each probe's successive distinct answers, from listening to ready
    early_chat: httpx.Response  # a chat request sent at the first answer, while the model was still loading


@pytest.fixture(scope="module")
def started(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Started]:
    """``python -m server`` as tests/e2e/process.py starts it, but watched from its first answer: every probe is
    recorded until /ready says 200."""
    log_path = tmp_path_factory.mktemp("stall") / "server.log"
    args = [
        sys.executable, "-m", "server", "--port", "0", "--enforce-eager", "--max-model-len", str(LONG_CONTEXT),
        "--engine-wedged-after", str(WEDGED_AFTER_S),
        "--engine-health-interval", "300",
        "--drain-timeout", str(DRAIN_TIMEOUT_S),
    ]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "VLLM_CPU_KVCACHE_SPACE": "1"}
    with log_path.open("wb") as log:
        process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        server = ServerProcess(process, f"http://127.0.0.1:{listening_port(process, log_path)}", log_path)
        early_chat = httpx.post(f"{server.base_url}/v1/chat/completions", json=CHAT, timeout=60)
        seen: dict[str, list[Answer]] = {path: [] for path in PROBES}
        deadline = time.monotonic() + 600
        while not seen["/ready"] or seen["/ready"][-1][0] != 200:
            assert process.poll() is None, server.log()[-3000:]
            assert time.monotonic() < deadline, f"never ready; probes seen: {seen}"
            for path in PROBES:
                answer = probe(server, path)
                if not seen[path] or answer != seen[path][-1]:
                    seen[path].append(answer)
            time.sleep(0.1)
        yield Started(server, seen, early_chat)
    finally:
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)


@pytest.fixture(scope="module")
def server(started: Started) -> ServerProcess:
    return started.server


def wait_for(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def probe(server: ServerProcess, path: str) -> tuple[int, dict[str, Any]]:
    response = httpx.get(f"{server.base_url}{path}", timeout=10)
    return response.status_code, response.json()


def idle(server: ServerProcess) -> bool:
    return server.metric("qwen3vl_requests_running") == 0 and server.metric("vllm:num_requests_running") == 0


class LongStream:
    """A streamed chat request of ``LONG`` tokens in a thread; ``started`` is set when its headers arrive (they leave
    with the first token: it is admitted and generating)."""

    def __init__(self, server: ServerProcess) -> None:
        self.started = threading.Event()
        self.done = threading.Event()
        self.lines: list[str] = []
        self.status = 0
        self.ended_at: float | None = None
        self.error: BaseException | None = None
        self._stop = threading.Event()
        request = {**CHAT, "stream": True, "max_tokens": LONG, "ignore_eos": True}
        self._thread = threading.Thread(target=self._run, args=(server, request), daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 120
        while not (self.started.is_set() or self.done.is_set()):
            assert time.monotonic() < deadline, "the stream did not start"
            time.sleep(0.05)
        assert self.started.is_set() and self.status == 200, (self.status, self.error, self.lines[-3:])

    def _run(self, server: ServerProcess, request: dict[str, Any]) -> None:
        try:
            with httpx.stream("POST", f"{server.base_url}/v1/chat/completions", json=request, timeout=120) as r:
                self.status = r.status_code
                self.started.set()
                for line in r.iter_lines():
                    if line:
                        self.lines.append(line)
                    if self._stop.is_set():
                        return  # leaving closes the connection: the server aborts the engine request
        except httpx.HTTPError as exc:
            self.error = exc
        finally:
            self.ended_at = time.monotonic()
            self.done.set()

    @property
    def live(self) -> bool:
        return not self.done.is_set()

    def join(self, timeout_s: float) -> bool:
        return self.done.wait(timeout_s)

    def leave(self) -> None:
        self._stop.set()


def test_while_the_model_loads_the_process_is_live_not_started_and_requests_get_503(started: Started) -> None:
    # The engine takes tens of seconds to load here, and uvicorn answers before it starts: each probe's first answer
    # is the loading state's, then it changes once, to its answer for a started engine (/ready after the warm-up), and
    # never back.
    assert started.seen == {
        "/health": [(200, {"status": "starting"}), (200, {"status": "ok"})],
        "/startup": [(503, {"status": "loading"}), (200, {"status": "started"})],
        "/ready": [(503, {"status": "starting"}), (200, {"status": "ready"})],
    }
    assert started.early_chat.status_code == 503, started.early_chat.text
    error = started.early_chat.json()["error"]
    assert error["code"] == "engine_unavailable", error


def test_a_wedged_engine_turns_health_503_and_progress_turns_it_back(server: ServerProcess) -> None:
    assert probe(server, "/health") == (200, {"status": "ok"})
    stream = LongStream(server)
    core = server.engine_core()
    stalled = [core, *core.children(recursive=True)]
    try:
        assert probe(server, "/ready")[0] == 200  # generating, not wedged: one stream saturates nothing
        for process in stalled:
            process.send_signal(signal.SIGSTOP)
        stopped_at = time.monotonic()
        # Stopped mid-stream (the engine cannot finish it now): a request is in flight, the wedge's condition.
        assert stream.live, ("the stream ended before the engine was stopped", stream.lines[-3:])
        wait_for(lambda: probe(server, "/health")[0] == 503, 60, f"/health stayed 200 with a stopped engine {stalled}")
        flipped_after = time.monotonic() - stopped_at
        assert probe(server, "/health") == (503, {"status": "dead"})
        assert probe(server, "/ready") == (503, {"status": "dead"})
        # Not at once: only after the engine made no progress for --engine-wedged-after seconds (less the output that
        # was already on its way when the process stopped).
        assert flipped_after >= WEDGED_AFTER_S - 1.0, flipped_after
        assert server.process.poll() is None  # the server itself still answers: it is the engine that is stuck
    finally:
        for process in stalled:
            process.send_signal(signal.SIGCONT)
    # The engine runs again: its next output is progress, and the probes say so.
    wait_for(lambda: probe(server, "/health") == (200, {"status": "ok"}), 60, "/health stayed 503 after SIGCONT")
    wait_for(lambda: probe(server, "/ready") == (200, {"status": "ready"}), 60, "/ready stayed 503 after SIGCONT")
    # The stream survived the stall: it is still generating, or (on a fast machine) it already ran to its length.
    if stream.live:
        stream.leave()
        assert stream.join(120), "the stream did not end after the client left"
    else:
        assert stream.error is None and stream.lines[-1] == "data: [DONE]", (stream.error, stream.lines[-3:])
        events = [json.loads(line[6:]) for line in stream.lines[:-1] if line.startswith("data: ")]
        assert not any("error" in event for event in events), events[-1]
        assert [c["finish_reason"] for e in events for c in e["choices"] if c.get("finish_reason")] == ["length"]
    wait_for(lambda: idle(server), 60, "the engine is still busy after the client left")


def error_events(stream: LongStream) -> list[dict[str, Any]]:
    """The stream's events, checked to end with ``[DONE]`` after an error and no finish reason before it."""
    assert stream.status == 200 and stream.lines[-1] == "data: [DONE]", stream.lines[-3:]
    events = [json.loads(line[6:]) for line in stream.lines[:-1] if line.startswith("data: ")]
    assert "error" in events[-1], events[-1]
    assert not any(c.get("finish_reason") for e in events[:-1] for c in e.get("choices", ())), "it was not cut"
    return events


def test_the_watchdog_fails_the_streams_of_a_wedged_engine_then_exits_one(tmp_path: Path) -> None:
    extra = ["--engine-wedged-after", str(WEDGED_AFTER_S), "--engine-health-interval", "1"]
    with server_process(tmp_path, extra, max_model_len=LONG_CONTEXT) as server:
        stream = LongStream(server)
        core = server.engine_core()
        stalled = [core, *core.children(recursive=True)]
        for process in stalled:
            process.send_signal(signal.SIGSTOP)
        try:
            assert stream.live, ("the stream ended before the engine was stopped", stream.lines[-3:])
            assert stream.join(120), "the stream hung on a wedged engine"
        finally:
            for process in stalled:  # the process may be gone already: the server is stopping it
                with contextlib.suppress(psutil.NoSuchProcess):
                    process.send_signal(signal.SIGCONT)
        assert stream.error is None, stream.error
        assert error_events(stream)[-1]["error"]["code"] == "engine_unavailable"
        assert server.process.wait(timeout=120) == 1, server.log()[-3000:]
        assert "engine failure" in server.log()


def test_drain_aborts_a_stream_at_its_deadline_and_exits_zero(server: ServerProcess) -> None:
    """Last in this module: it stops the shared server."""
    wait_for(lambda: idle(server), 60, "the server is still busy with an earlier request")
    stream = LongStream(server)
    sent = time.monotonic()
    os.kill(server.process.pid, signal.SIGTERM)
    wait_for(lambda: probe(server, "/ready") == (503, {"status": "draining"}), 30, "readiness still 200")
    assert stream.join(DRAIN_TIMEOUT_S + 60), "the stream outlived the drain"
    assert stream.ended_at is not None and stream.error is None, stream.error
    cut_after = stream.ended_at - sent
    # Cut at the deadline, not before it (the drain waited) and not long after (the abort ended it).
    assert DRAIN_TIMEOUT_S - 1.0 <= cut_after <= DRAIN_TIMEOUT_S + 30, cut_after
    assert error_events(stream)[-1]["error"]["code"] == "engine_unavailable"
    code = server.process.wait(timeout=60)
    exited_after = time.monotonic() - sent
    assert code == 0, server.log()[-3000:]
    assert exited_after <= DRAIN_TIMEOUT_S + 60, exited_after
