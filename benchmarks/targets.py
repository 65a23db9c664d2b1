"""The targets the side-by-side benchmark compares, and how a server target is run.

Every target gets the same engine arguments (``ENGINE``: the raw engine as ``AsyncEngineArgs`` fields, the servers as
flags). A server is started as a subprocess on ``--port 0`` and the port it bound is read back, never probed here and
released first (another process on this shared machine could take it in between):

- ours (``python -m server``; ``ours-wN`` adds ``--api-workers N``) logs uvicorn's start line, ``Uvicorn running on
  http://127.0.0.1:PORT``, with the port the OS chose (with several API processes, one such line each, same port: the
  supervisor binds the socket they share);
- vLLM's server binds its socket itself and hands it to uvicorn, so uvicorn logs no start line, and vLLM's own
  ``Starting vLLM server on http://127.0.0.1:0`` repeats the requested 0. vLLM does accept port 0, so its port is read
  from the API process's one listening TCP socket (psutil), once it listens.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

__all__ = [
    "ENGINE",
    "ROOT",
    "SERVED_NAME",
    "api_workers",
    "child_env",
    "engine_flags",
    "listening_port",
    "running_server",
    "server_command",
    "server_targets",
]

ROOT = Path(__file__).resolve().parents[1]
# The engine arguments every target gets (the raw engine as AsyncEngineArgs fields, the servers as flags).
ENGINE: dict[str, Any] = {
    "max_model_len": 4096,
    "enforce_eager": True,
    "kv_cache_memory_bytes": 1 << 30,
    "limit_mm_per_prompt": {"image": 4, "video": 2},
    "seed": 0,
}
SERVED_NAME = "tiny-qwen3vl"
HOST = "127.0.0.1"
READY_TIMEOUT_S = 600.0
_UVICORN_LISTENING = re.compile(rb"Uvicorn running on http://127\.0\.0\.1:(\d+)")
_OURS = re.compile(r"ours(?:-w([1-9][0-9]*))?")


def api_workers(target: str) -> int | None:
    """How many API processes a target of ours runs (``ours``: 1, ``ours-wN``: N); ``None`` for any other target."""
    found = _OURS.fullmatch(target)
    return None if found is None else int(found.group(1) or 1)


def server_targets(targets: str) -> list[str]:
    """The comma-separated ``--targets`` checked: ``raw``, ``vllm``, ``ours`` and ``ours-wN``, each once."""
    names = [t.strip() for t in targets.split(",") if t.strip()]
    unknown = [t for t in names if t not in ("raw", "vllm") and api_workers(t) is None]
    if unknown or len(set(names)) != len(names) or not names:
        raise ValueError(f"--targets {targets!r}: each of raw, vllm, ours, ours-wN (N >= 1) at most once")
    return names


def engine_flags() -> list[str]:
    flags: list[str] = []
    for key, value in ENGINE.items():
        name = "--" + key.replace("_", "-")
        if value is True:
            flags.append(name)
        elif isinstance(value, dict):
            flags += [name, json.dumps(value)]
        else:
            flags += [name, str(value)]
    return flags


def server_command(target: str, model: str, port: int = 0) -> list[str]:
    """The command line of a server target (``vllm``, ``ours`` or ``ours-wN``); port 0 lets the server pick a free
    port."""
    common = ["--host", HOST, "--port", str(port), "--served-model-name", SERVED_NAME, *engine_flags()]
    if target == "vllm":
        return [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", model, *common]
    workers = ["--api-workers", str(api_workers(target))] if target != "ours" else []
    return [sys.executable, "-m", "server", "--model", model, *common, *workers]


def child_env() -> dict[str, str]:
    """Offline, a small CPU KV cache, and unbuffered output (the log is read while the server starts)."""
    offline = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "VLLM_CPU_KVCACHE_SPACE": "1"}
    return {**os.environ, **offline, "PYTHONUNBUFFERED": "1"}


def listening_port(target: str, pid: int, log: Path) -> int | None:
    """The port a ``--port 0`` server bound, once it listens (``None`` before): ours from uvicorn's start line in its
    log, vLLM's from its API process's listening socket (see the module docstring)."""
    if api_workers(target) is not None:
        found = _UVICORN_LISTENING.search(log.read_bytes())
        return int(found.group(1)) if found else None
    import psutil  # type: ignore[import-untyped]

    try:
        sockets = psutil.Process(pid).net_connections("tcp")
    except psutil.Error:
        return None
    ports = {s.laddr.port for s in sockets if s.status == psutil.CONN_LISTEN and s.laddr.ip == HOST}
    if len(ports) > 1:
        raise RuntimeError(f"{target} server (pid {pid}) listens on several ports {sorted(ports)}: which is HTTP?")
    return ports.pop() if ports else None


def wait_until_ready(target: str, proc: subprocess.Popen[bytes], log: Path) -> str:
    """The server's base URL, once its port is known and its readiness endpoint answers 200."""
    ready = "/ready" if api_workers(target) is not None else "/v1/models"
    deadline = time.monotonic() + READY_TIMEOUT_S
    port: int | None = None
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{target} server exited with {proc.returncode}; see {log}")
        port = port or listening_port(target, proc.pid, log)
        if port is not None:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"http://{HOST}:{port}{ready}", timeout=5).status_code == 200:
                    return f"http://{HOST}:{port}"
        if time.monotonic() > deadline:
            raise TimeoutError(f"{target} server not ready after {READY_TIMEOUT_S} s; see {log}")
        time.sleep(0.5)


@contextlib.contextmanager
def running_server(target: str, model: str, log: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """Start a server target, yield (base URL, process) once it is ready; SIGINT it afterwards (SIGKILL after 60 s)."""
    with log.open("wb") as out:
        proc = subprocess.Popen(
            server_command(target, model), stdout=out, stderr=subprocess.STDOUT, env=child_env(), cwd=ROOT
        )
    try:
        yield wait_until_ready(target, proc, log), proc
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
