from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from fastapi.testclient import TestClient

from server.app import create_app
from server.config import Settings
from server.engine.fake import FakeEngine


@pytest.fixture
def engine() -> FakeEngine:
    return FakeEngine()


@pytest.fixture
def settings() -> Settings:
    return Settings(warmup=False, limit_mm_per_prompt={"image": 3, "video": 1}, media_max_image_bytes=200_000)


@pytest.fixture
def client(engine: FakeEngine, settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings, engine=engine), raise_server_exceptions=False) as test_client:
        yield test_client


class AssetServer:
    """A loopback HTTP server for test media that counts every hit."""

    def __init__(self) -> None:
        self.files: dict[str, tuple[int, dict[str, str], bytes]] = {}
        self.hits: list[str] = []
        self.delay_s = 0.0
        self.in_flight = 0
        self.max_in_flight = 0
        lock = threading.Lock()
        assets = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                with lock:
                    assets.hits.append(self.path)
                    assets.in_flight += 1
                    assets.max_in_flight = max(assets.max_in_flight, assets.in_flight)
                time.sleep(assets.delay_s)
                with lock:
                    assets.in_flight -= 1
                status, headers, body = assets.files.get(self.path, (404, {}, b""))
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = int(self._server.server_address[1])
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def add(self, path: str, body: bytes, status: int = 200, headers: dict[str, str] | None = None) -> str:
        self.files[path] = (status, headers or {}, body)
        return self.url(path)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def close(self) -> None:
        self._server.shutdown()


@pytest.fixture
def assets() -> Iterator[AssetServer]:
    server = AssetServer()
    yield server
    server.close()


@pytest.fixture
def private_client(engine: FakeEngine) -> Iterator[TestClient]:
    """An app whose operator allowed private addresses (as for an in-cluster object store): loopback fetches work."""
    settings = Settings(warmup=False, limit_mm_per_prompt={"image": 3, "video": 1}, media_allow_loopback=True)
    with TestClient(create_app(settings, engine=engine), raise_server_exceptions=False) as test_client:
        yield test_client
