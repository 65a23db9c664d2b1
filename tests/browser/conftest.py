"""The playground in real headless Chromium: Debian's /usr/bin/chromium driven by Playwright (never its own download).

The real app runs under uvicorn on a loopback port with a fake engine (cheap: no model), one server and one browser per
session, a fresh page (its own browser context: no shared storage) per test. Chromium missing is a failure, not a skip:
``make test`` installs it (the ``tools`` target).
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from playwright.sync_api import Browser, ConsoleMessage, Page, Request, Response, sync_playwright

from server.app import create_app
from server.config import Settings
from server.engine.base import EngineRequest, EngineStep
from server.engine.fake import FAKE_TOKENS_PER_IMAGE, FAKE_TOKENS_PER_VIDEO, FakeEngine
from tests.live import uvicorn_thread

CHROMIUM = Path("/usr/bin/chromium")
# Headless on a closed network: no GPU, no sandbox (root in CI), and none of Chromium's own outbound traffic (its
# refused connections would otherwise show up as noise in the logs the tests read).
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "build" / "test-artifacts"
VIEWPORT = {"width": 1200, "height": 800}


@dataclass
class VisualFakeEngine(FakeEngine):
    """The fake engine, also reporting the visual tokens it counts in ``usage`` as the real engine does."""

    async def generate(self, request: EngineRequest) -> AsyncIterator[EngineStep]:
        images = FAKE_TOKENS_PER_IMAGE * len(request.images)
        videos = FAKE_TOKENS_PER_VIDEO * len(request.videos)
        # aclosing: a cancelled request closes the fake's own generator at once (its in_flight count drops then)
        async with contextlib.aclosing(super().generate(request)) as steps:
            async for step in steps:
                yield dataclasses.replace(step, image_tokens=images, video_tokens=videos)


ENGINE_DEFAULTS = {f.name: f for f in dataclasses.fields(FakeEngine)}


def reset(engine: FakeEngine) -> None:
    """Back to a fresh fake: the default script, no delay, no failure, nothing recorded."""
    for name in ("script", "delay_s", "fail_with", "fail_after", "vanish_after", "script_parts", "dead"):
        spec = ENGINE_DEFAULTS[name]
        default = spec.default_factory() if spec.default_factory is not dataclasses.MISSING else spec.default
        setattr(engine, name, default)
    engine.requests.clear()
    engine.rendered.clear()


@dataclass
class Served:
    base_url: str
    app: FastAPI
    engine: VisualFakeEngine

    def metric(self, name: str) -> float:
        """One unlabelled sample from /metrics."""
        text = httpx.get(f"{self.base_url}/metrics", timeout=5).text
        match = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
        assert match is not None, f"{name} not in /metrics"
        return float(match.group(1))


@contextlib.contextmanager
def serve(settings: Settings, engine: VisualFakeEngine) -> Iterator[Served]:
    """The real app under uvicorn on a loopback port, in a thread."""
    app = create_app(settings, engine=engine)
    with uvicorn_thread(app, shutdown_timeout=10) as live:
        deadline = time.monotonic() + 30
        while not live.server.started:
            assert live.thread.is_alive(), "uvicorn stopped before it started"
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.02)
        yield Served(base_url=live.base_url, app=app, engine=engine)


def playground_settings(**overrides: Any) -> Settings:
    # The tests serve URL media from loopback: the operator's explicit switch (off by default) allows that.
    defaults: dict[str, Any] = {
        "warmup": False,
        "limit_mm_per_prompt": {"image": 4, "video": 1},
        "media_allow_loopback": True,
    }
    return Settings(**{**defaults, **overrides})


@pytest.fixture(scope="package")
def live() -> Iterator[Served]:
    with serve(playground_settings(), VisualFakeEngine()) as served:
        yield served


@pytest.fixture
def server(live: Served) -> Served:
    reset(live.engine)
    return live


@pytest.fixture(scope="package")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: `make tools` installs Debian's chromium and chromium-driver")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@dataclass
class Tab:
    """A fresh page and everything it did: console errors, page errors, failed and refused requests."""

    page: Page
    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    bad_status: list[str] = field(default_factory=list)
    requests: list[Request] = field(default_factory=list)

    def open(self, base_url: str) -> None:
        self.page.goto(f"{base_url}/")
        self.page.wait_for_selector("#status[data-kind]:not(:empty)")

    def assert_clean(self) -> None:
        assert self.console_errors == [], self.console_errors
        assert self.page_errors == [], self.page_errors
        assert self.failed == [], self.failed
        assert self.bad_status == [], self.bad_status

    def api_requests(self, path: str) -> list[Request]:
        return [r for r in self.requests if r.url.endswith(path)]


@pytest.fixture
def tab(browser: Browser) -> Iterator[Tab]:
    context = browser.new_context(viewport=VIEWPORT, device_scale_factor=1)  # type: ignore[arg-type]
    page = context.new_page()
    page.set_default_timeout(10_000)
    recorded = Tab(page)

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error":
            recorded.console_errors.append(message.text)

    def on_response(response: Response) -> None:
        if response.status >= 400:
            recorded.bad_status.append(f"{response.status} {response.url}")

    page.on("console", on_console)
    page.on("pageerror", lambda error: recorded.page_errors.append(str(error)))
    page.on("requestfailed", lambda request: recorded.failed.append(f"{request.url}: {request.failure}"))
    page.on("request", lambda request: recorded.requests.append(request))
    page.on("response", on_response)
    yield recorded
    context.close()


def wait_for(condition: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


class MediaServer:
    """A loopback HTTP server for URL media (the server fetches it; the page never does)."""

    def __init__(self) -> None:
        self.files: dict[str, tuple[str, bytes]] = {}
        self.hits: list[str] = []
        media = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                media.hits.append(self.path)
                mime, body = media.files.get(self.path, ("text/plain", b""))
                self.send_response(200 if self.path in media.files else 404)
                self.send_header("Content-Type", mime)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def add(self, path: str, mime: str, body: bytes) -> str:
        self.files[path] = (mime, body)
        return f"http://127.0.0.1:{self._server.server_address[1]}{path}"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def media_server() -> Iterator[MediaServer]:
    media = MediaServer()
    yield media
    media.close()
