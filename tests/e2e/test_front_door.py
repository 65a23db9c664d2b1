"""The HTTP front door of a real ``python -m server`` process: the head size cap and the head deadline hold with the
HTTP parser the server really runs (the bug: the cap was set for h11, uvicorn picked httptools, a 200 KB header passed).

Only /health is needed, so the engine's start is not waited for; the process is killed at the end."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.e2e.process import listening_port

pytestmark = pytest.mark.e2e

HEADER_TIMEOUT_S = 2.0


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int]]:
    log_path = tmp_path_factory.mktemp("front-door") / "server.log"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "VLLM_CPU_KVCACHE_SPACE": "1"}
    args = [sys.executable, "-m", "server", "--port", "0", "--http-header-timeout", str(HEADER_TIMEOUT_S)]
    with log_path.open("wb") as log:
        process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        port = listening_port(process, log_path)
        deadline = time.monotonic() + 120
        while True:  # /health answers while the engine is still starting
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=5).status_code == 200:
                    break
            assert process.poll() is None, log_path.read_text(errors="replace")[-3000:]
            assert time.monotonic() < deadline, "the server did not answer /health"
            time.sleep(0.2)
        yield "127.0.0.1", port
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)


def exchange(address: tuple[str, int], data: bytes, timeout_s: float = 30) -> bytes:
    """Send ``data``, then read until the server closes (a reset after its answer counts as the close)."""
    with socket.create_connection(address, timeout=timeout_s) as sock:
        with contextlib.suppress(ConnectionError):
            sock.sendall(data)
        received = b""
        with contextlib.suppress(ConnectionError):
            while chunk := sock.recv(65536):
                received += chunk
        return received


def healthy(address: tuple[str, int]) -> bool:
    return httpx.get(f"http://{address[0]}:{address[1]}/health", timeout=10).status_code == 200


@pytest.mark.parametrize("size", [40_000, 200_000])
def test_a_head_over_32_kb_is_refused(server: tuple[str, int], size: int) -> None:
    head = b"GET /health HTTP/1.1\r\nHost: t\r\nX-Big: " + b"a" * size + b"\r\n\r\n"
    response = exchange(server, head)
    # 431, or closed before the answer could be read (the rest of the head unread): refused either way, never served.
    assert response == b"" or response.startswith(b"HTTP/1.1 431"), response[:200]
    assert healthy(server)


def test_a_slow_head_is_cut_at_the_deadline(server: tuple[str, int]) -> None:
    with socket.create_connection(server, timeout=30) as sock:
        start = time.monotonic()
        stop = threading.Event()

        def drip() -> None:  # slowloris: a byte every 0.3 s, never finishing the head
            with contextlib.suppress(OSError):
                sock.sendall(b"GET /health HTTP/1.1\r\nHost: t\r\nX-Slow: ")
                while not stop.wait(0.3):
                    sock.sendall(b"a")

        dripper = threading.Thread(target=drip, daemon=True)
        dripper.start()
        received = b""
        with contextlib.suppress(ConnectionError):
            while chunk := sock.recv(65536):
                received += chunk
        elapsed = time.monotonic() - start
        stop.set()
        dripper.join(timeout=10)
    assert HEADER_TIMEOUT_S - 0.2 <= elapsed < HEADER_TIMEOUT_S + 10, elapsed
    assert received == b"" or received.startswith(b"HTTP/1.1 408"), received[:200]
    assert healthy(server)
