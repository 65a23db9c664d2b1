"""One real vLLM engine per test session, behind the real app under uvicorn on a loopback port.

Engine start costs tens of seconds on a CPU, so the dense tiny checkpoint's server is session-scoped and every e2e test
talks to it over HTTP; the MoE server is started only for the test that needs it.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from openai import OpenAI

from offline.tiny import TinySpec, cached_checkpoint
from server.app import create_app
from server.config import Settings
from tests.live import uvicorn_thread

READY_TIMEOUT_S = 600


@dataclass
class LiveServer:
    base_url: str
    app: FastAPI
    checkpoint: Path
    model: str
    logs: list[str]

    def client(self) -> OpenAI:
        return OpenAI(base_url=f"{self.base_url}/v1", api_key="unused", timeout=120, max_retries=0)


def wait_until_ready(base_url: str, failure: Callable[[], str | None]) -> None:
    """Poll /ready until it says 200; ``failure`` returns a reason once the server can no longer come up."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    while True:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{base_url}/ready", timeout=5).status_code == 200:
                return
        reason = failure()
        if reason is not None:
            raise RuntimeError(reason)
        if time.monotonic() > deadline:
            raise TimeoutError("server did not become ready")
        time.sleep(0.5)


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@contextlib.contextmanager
def live_server(*, moe: bool, thinking: bool = False) -> Iterator[LiveServer]:
    """The dense Instruct server runs the default (no --model: the embedded demo); the others name their checkpoint
    (the Thinking edition's chat template opens ``<think>``, so the server picks vLLM's qwen3 reasoning parser)."""
    checkpoint = cached_checkpoint(moe=moe, thinking=thinking)
    named = moe or thinking
    settings = Settings(
        model=str(checkpoint) if named else None,
        served_model_name=TinySpec(moe=moe, thinking=thinking).name if named else None,
        max_model_len=4096,
        enforce_eager=True,
        kv_cache_memory_bytes=1 << 30,
        limit_mm_per_prompt={"image": 4, "video": 2},
        # The tests serve media from loopback: the operator's explicit switch (off by default) allows that.
        media_allow_loopback=True,
        media_image_max_pixels=1024 * 1024,
    )
    with serve(settings, checkpoint) as server:
        yield server


@contextlib.contextmanager
def serve(settings: Settings, checkpoint: Path) -> Iterator[LiveServer]:
    """The real app with ``settings`` under uvicorn on a loopback port, until the block ends."""
    app = create_app(settings)
    collect = _Collect()
    for name in ("server", "vllm"):
        logging.getLogger(name).addHandler(collect)
    try:
        with uvicorn_thread(app) as live:

            def failure() -> str | None:
                alive = live.thread.is_alive() and app.state.qwen3vl.start_error is None
                return None if alive else f"server failed to start: {app.state.qwen3vl.start_error}"

            wait_until_ready(live.base_url, failure)
            model = app.state.qwen3vl.engine.model.name
            yield LiveServer(base_url=live.base_url, app=app, checkpoint=checkpoint, model=model, logs=collect.lines)
    finally:
        for name in ("server", "vllm"):
            logging.getLogger(name).removeHandler(collect)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Run the subprocess-server tests first: they start engines of their own, and on two cores two live engines
    (each binding its OpenMP threads to both cores) starve each other. The shared in-process engine starts after."""
    own_servers = (
        "test_process.py",
        "test_startup_states.py",
        "test_wedged_engine.py",
        "test_batch_restart.py",
        "test_batch_replicas.py",
    )
    items.sort(key=lambda item: 0 if any(name in item.nodeid for name in own_servers) else 1)


@pytest.fixture(scope="session")
def dense_server() -> Iterator[LiveServer]:
    with live_server(moe=False) as server:
        yield server


@pytest.fixture(scope="session")
def processor(dense_server: LiveServer):  # type: ignore[no-untyped-def]
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(str(dense_server.checkpoint))
