"""Run the server as a real process (``python -m server``), as an orchestrator would, for signal and failure tests."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.conftest import wait_until_ready

_LISTENING = re.compile(rb"Uvicorn running on http://127\.0\.0\.1:(\d+)")


@dataclass
class ServerProcess:
    process: subprocess.Popen[bytes]
    base_url: str
    log_path: Path

    def metric(self, name: str, headers: dict[str, str] | None = None) -> float:
        """Sum of a metric's samples (all label sets) in a /metrics scrape."""
        text = httpx.get(f"{self.base_url}/metrics", headers=headers, timeout=10).text
        total = 0.0
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name:
                    total += sample.value
        return total

    def engine_core(self) -> psutil.Process:
        children = psutil.Process(self.process.pid).children(recursive=True)
        cores = [p for p in children if "EngineCore" in p.name() + " ".join(p.cmdline())]
        assert cores, [p.name() for p in children]
        return cores[0]

    def engine_processes(self) -> list[psutil.Process]:
        """The engine core and its workers: what stops when the engine is stopped."""
        core = self.engine_core()
        return [core, *core.children(recursive=True)]

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def signal_all(processes: Sequence[psutil.Process], sig: int) -> None:
    for process in processes:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.send_signal(sig)


def stop_engine_when(
    engine: Sequence[psutil.Process], holds: Callable[[], bool], gone: Callable[[], bool], timeout_s: float = 120
) -> bool:
    """Stop the engine (SIGSTOP) at a moment it ``holds`` what a test needs, e.g. two requests still generating; True
    with the engine left stopped, False (engine running) once that is ``gone`` or after ``timeout_s``.

    Neither the client's view nor a check-then-stop can say what the engine holds: on these shared boxes a test's
    client can be descheduled for seconds while the engine runs on, and the loopback buffers hold whole answers. So
    the engine is stopped first and asked after (its last metrics, which cannot change while it is stopped); when it
    does not hold it, it goes on and is asked again a moment later."""
    deadline = time.monotonic() + timeout_s
    while not gone() and time.monotonic() < deadline:
        signal_all(engine, signal.SIGSTOP)
        if holds():
            return True
        signal_all(engine, signal.SIGCONT)
        time.sleep(0.05)
    return False


def listening_port(process: subprocess.Popen[bytes], log_path: Path, timeout_s: float = 300) -> int:
    """The port a ``--port 0`` server bound, read back from uvicorn's start line (the server picks it: never a port
    probed here and released, which another process could take in between)."""
    deadline = time.monotonic() + timeout_s
    while True:
        found = _LISTENING.search(log_path.read_bytes())
        if found:
            return int(found.group(1))
        if process.poll() is not None:
            raise RuntimeError(
                f"server exited with {process.returncode}:\n{log_path.read_text(errors='replace')[-3000:]}"
            )
        if time.monotonic() > deadline:
            raise TimeoutError("the server did not start listening")
        time.sleep(0.2)


@contextlib.contextmanager
def server_process(tmp: Path, extra: Sequence[str] = (), max_model_len: int = 4096) -> Iterator[ServerProcess]:
    log_path = tmp / "server.log"
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "VLLM_CPU_KVCACHE_SPACE": "1",
        "PYTHONUNBUFFERED": "1",
    }
    args = [sys.executable, "-m", "server", "--port", "0", "--enforce-eager", "--max-model-len", str(max_model_len)]
    args += extra
    with log_path.open("wb") as log:
        process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        server = ServerProcess(process, f"http://127.0.0.1:{listening_port(process, log_path)}", log_path)

        def failure() -> str | None:
            if process.poll() is None:
                return None
            return f"server exited with {process.returncode}:\n{server.log()[-3000:]}"

        wait_until_ready(server.base_url, failure)
        yield server
    finally:
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)
