"""README's startup and drain claims on one real server process and the real engine:

* from its first answer until ready, each probe answers for the loading state, then changes once to its answer for a
  started engine (/ready after the warm-up), and a request sent while loading gets 503;
* a drain whose ``--drain-timeout`` passes with requests still running cuts them at the deadline (a stream with an SSE
  error event and ``[DONE]``, a whole answer with a JSON error), and the process exits 0 (last: it stops the server).
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
from typing import Any

import httpx
import psutil
import pytest

from tests.e2e.process import ServerProcess, listening_port, signal_all, stop_engine_when

pytestmark = pytest.mark.e2e

DRAIN_TIMEOUT_S = 3.0
LONG_CONTEXT = 32768
LONG = 32000  # tokens: the engine cannot have produced them all within a second of the first
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
        ready = False
        while not ready:  # one more whole pass after /ready said 200: the engine may start between two probes of a pass
            ready = bool(seen["/ready"]) and seen["/ready"][-1][0] == 200
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


def probe(server: ServerProcess, path: str) -> tuple[int, dict[str, Any]]:
    response = httpx.get(f"{server.base_url}{path}", timeout=10)
    return response.status_code, response.json()


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


class Request:
    """A chat request in a thread. ``headers`` is set when its status arrives (a stream's leave with its first token)."""

    def __init__(self, server: ServerProcess, body: dict[str, Any]) -> None:
        self.headers = threading.Event()
        self.status = 0
        self.lines: list[str] = []
        self.error: BaseException | None = None
        self.ended_at = 0.0
        self._leave = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(server, body), daemon=True)
        self._thread.start()

    def _run(self, server: ServerProcess, body: dict[str, Any]) -> None:
        try:
            with httpx.stream("POST", f"{server.base_url}/v1/chat/completions", json=body, timeout=120) as response:
                self.status = response.status_code
                self.headers.set()
                for line in response.iter_lines():
                    if self._leave.is_set():
                        return  # leaving closes the connection: the server aborts the request
                    if line:
                        self.lines.append(line)
        except httpx.HTTPError as exc:
            self.error = exc
        finally:
            self.ended_at = time.monotonic()
            self.headers.set()

    def leave(self) -> None:
        self._leave.set()

    def join(self, timeout_s: float) -> bool:
        self._thread.join(timeout_s)
        return not self._thread.is_alive()


def wait_for(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def stream_on_a_stopped_engine(server: ServerProcess, body: dict[str, Any]) -> tuple[Request, list[psutil.Process]]:
    """A stream the engine still generates when it is stopped (SIGSTOP), so it cannot finish (see
    ``stop_engine_when``). When the engine finishes it first, the client leaves and another starts (three at most)."""
    engine = server.engine_processes()
    for _ in range(3):
        stream = Request(server, {**body, "stream": True})
        generating = lambda: server.metric("vllm:num_requests_running") == 1  # noqa: E731
        if stop_engine_when(engine, generating, gone=lambda: stream.join(0)):  # noqa: B023
            assert stream.headers.wait(120) and stream.status == 200, (stream.status, stream.error)
            return stream, engine
        stream.leave()
        assert stream.join(120), "the client could not leave"
        wait_for(lambda: server.metric("qwen3vl_requests_running") == 0, 60, "still busy after the client left")
    raise AssertionError("three streams ran to their end before the engine could be stopped")


def test_drain_cuts_what_still_runs_at_its_deadline_and_exits_zero(started: Started) -> None:
    server = started.server
    running = "qwen3vl_requests_running"
    wait_for(lambda: server.metric(running) == 0, 60, "the server is still busy with an earlier request")
    long_body = {**CHAT, "max_tokens": LONG, "ignore_eos": True}
    stream, stalled = stream_on_a_stopped_engine(server, long_body)
    try:
        whole = Request(server, long_body)  # admitted, then waits for a first token that cannot come
        wait_for(lambda: server.metric(running) == 2, 60, "the second request was not admitted")
        sent = time.monotonic()
        os.kill(server.process.pid, signal.SIGTERM)
        wait_for(lambda: probe(server, "/ready") == (503, {"status": "draining"}), 30, "readiness still 200")
        assert stream.join(DRAIN_TIMEOUT_S + 60) and whole.join(60), "a request outlived the drain"
    finally:
        signal_all(stalled, signal.SIGCONT)
    # Cut at the deadline, not before it (the drain waited) and not long after (the abort ended them).
    for request in (stream, whole):
        assert request.error is None, request.error
        assert DRAIN_TIMEOUT_S - 0.5 <= request.ended_at - sent <= DRAIN_TIMEOUT_S + 30, request.ended_at - sent
    assert stream.lines[-1] == "data: [DONE]", stream.lines[-3:]
    events = [json.loads(line[6:]) for line in stream.lines[:-1] if line.startswith("data: ")]
    assert events[-1]["error"]["code"] == "engine_unavailable", events[-1]
    assert not any(c.get("finish_reason") for e in events[:-1] for c in e.get("choices", ())), "it was not cut"
    assert whole.status == 503, whole.lines
    assert json.loads(whole.lines[0])["error"]["code"] == "engine_unavailable", whole.lines
    assert server.process.wait(timeout=120) == 0, server.log()[-3000:]
