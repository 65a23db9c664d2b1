"""Run the server as a real process (``python -m server``), as an orchestrator would, for signal and failure tests."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
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

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


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
