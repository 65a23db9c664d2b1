"""README's startup states on a real server process and the real engine: from its first answer until ready, each probe
answers for the loading state, then changes once to its answer for a started engine (/ready after the warm-up), and a
request sent while loading gets 503.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.e2e.process import ServerProcess, listening_port

pytestmark = pytest.mark.e2e

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
        sys.executable, "-m", "server", "--port", "0", "--enforce-eager", "--max-model-len", "4096",
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
