"""Auth, HTTP limits, request ids and drain refusals, in front of every route."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from server.app import create_app
from server.config import Settings
from server.engine.fake import FakeEngine

KEY = "sk-test-0123456789"
BODY = {"model": "fake-qwen3vl", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
def secured(tmp_path: Path) -> Iterator[tuple[TestClient, FastAPI]]:
    key_file = tmp_path / "keys"
    key_file.write_text("# the team's keys, one per line\nsk-from-file\n\n")
    app = create_app(Settings(warmup=False, api_keys=[KEY], api_key_file=key_file), engine=FakeEngine())
    with TestClient(app) as client:
        yield client, app


def test_keys_required_except_on_open_routes(secured: tuple[TestClient, FastAPI]) -> None:
    client, _ = secured
    missing = client.post("/v1/chat/completions", json=BODY)
    assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
    assert missing.json()["error"]["code"] == "invalid_api_key"
    wrong = client.post("/v1/chat/completions", json=BODY, headers={"Authorization": f"Bearer {KEY}x"})
    assert wrong.status_code == 401
    assert client.post("/v1/chat/completions", json=BODY, headers={"Authorization": f"Bearer {KEY}"}).status_code == 200
    assert client.get("/v1/models", headers={"Authorization": "Bearer sk-from-file"}).status_code == 200
    assert client.get("/v1/models", headers={"Authorization": KEY}).status_code == 401  # no scheme
    assert (
        client.get("/v1/models", headers={"Authorization": "Bearer # the team's keys, one per line"}).status_code == 401
    )
    for open_path in ("/health", "/ready", "/startup"):
        assert client.get(open_path).status_code == 200, open_path
    for keyed_path in ("/metrics", "/version"):  # what a scraper or a prober may learn needs a key too
        assert client.get(keyed_path).status_code == 401, keyed_path
        assert client.get(keyed_path, headers={"Authorization": f"Bearer {KEY}"}).status_code == 200, keyed_path


async def _raw(app: FastAPI, path: str, headers: list[tuple[bytes, bytes]], raw_path: bytes | None = None) -> int:
    """Call the ASGI app with a hand-made scope: what a crafted request looks like after the HTTP parser."""
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": raw_path if raw_path is not None else path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 1234),
        "server": ("127.0.0.1", 80),
        "state": {},
    }
    await app(scope, receive, send)  # type: ignore[arg-type]
    return int(next(m["status"] for m in sent if m["type"] == "http.response.start"))


@pytest.mark.parametrize(
    "path",
    [
        "/v1/models",
        "/v1/models/",
        "//v1/models",
        "/health/../v1/models",
        "/HEALTH",
        "/health/",
        "/v1/models%2F",
        "/metrics/../v1/models",
    ],
)
@pytest.mark.parametrize("host", [b"localhost", b"127.0.0.1:8000", b"internal.svc"])
async def test_no_path_or_host_trick_bypasses_auth(secured: tuple[TestClient, FastAPI], path: str, host: bytes) -> None:
    _, app = secured
    headers = [(b"host", host), (b"x-forwarded-host", b"localhost"), (b"x-original-url", b"/health")]
    status = await _raw(app, path, headers)
    assert status == 401, (path, host, status)


def test_request_ids(client: TestClient) -> None:
    given = client.get("/v1/models", headers={"X-Request-Id": "trace-42.abc"})
    assert given.headers["x-request-id"] == "trace-42.abc"
    bad = client.get("/v1/models", headers={"X-Request-Id": "bad id\twith spaces" + "x" * 200})
    assert bad.headers["x-request-id"] != "bad id" and len(bad.headers["x-request-id"]) == 32
    error = client.post("/v1/chat/completions", json={"model": "nope", "messages": [{"role": "user", "content": "x"}]})
    assert error.json()["error"]["request_id"] == error.headers["x-request-id"]


def test_content_type_must_be_json(client: TestClient) -> None:
    response = client.post("/v1/chat/completions", content=json.dumps(BODY), headers={"Content-Type": "text/plain"})
    assert response.status_code == 415 and response.json()["error"]["code"] == "unsupported_media_type"
    ok = client.post(
        "/v1/chat/completions", content=json.dumps(BODY), headers={"Content-Type": "application/json; charset=utf-8"}
    )
    assert ok.status_code == 200
    completions = client.post("/v1/completions", content="prompt=x", headers={"Content-Type": "text/plain"})
    assert completions.status_code == 415
    # A POST to a route that takes none is answered by routing (405 + Allow), not by the body check.
    wrong = client.post("/health", content="x", headers={"Content-Type": "text/plain"})
    assert wrong.status_code == 405 and wrong.headers["allow"] == "GET"


def test_body_limit_by_header_and_while_reading() -> None:
    app = create_app(Settings(warmup=False, max_body_bytes=1000), engine=FakeEngine())
    big = {**BODY, "messages": [{"role": "user", "content": "x" * 2000}]}
    with TestClient(app) as client:
        declared = client.post("/v1/chat/completions", json=big)
        assert declared.status_code == 413 and declared.json()["error"]["code"] == "request_too_large"

        def chunks() -> Iterator[bytes]:  # chunked transfer: no Content-Length to trust
            data = json.dumps(big).encode()
            for i in range(0, len(data), 300):
                yield data[i : i + 300]

        streamed = client.post("/v1/chat/completions", content=chunks(), headers={"Content-Type": "application/json"})
        assert streamed.status_code == 413 and streamed.json()["error"]["code"] == "request_too_large"
        assert client.post("/v1/chat/completions", json=BODY).status_code == 200


def test_header_count_limit(client: TestClient) -> None:
    response = client.get("/v1/models", headers={f"x-h{i}": "v" for i in range(120)})
    assert response.status_code == 431


def test_draining_refuses_new_work_but_keeps_probes(client: TestClient) -> None:
    client.app.state.qwen3vl.draining = True  # type: ignore[attr-defined]
    refused = client.post("/v1/chat/completions", json=BODY)
    assert refused.status_code == 503 and refused.json()["error"]["code"] == "draining"
    assert client.get("/health").status_code == 200
    assert client.get("/ready").json() == {"status": "draining"}


def test_metrics_still_answer_a_key_while_draining(secured: tuple[TestClient, FastAPI]) -> None:
    client, app = secured
    app.state.qwen3vl.draining = True
    auth = {"Authorization": f"Bearer {KEY}"}
    assert client.post("/v1/chat/completions", json=BODY, headers=auth).status_code == 503
    assert client.get("/metrics", headers=auth).status_code == 200
    assert client.get("/version", headers=auth).status_code == 200
    assert client.get("/metrics").status_code == 401  # still behind the key


def test_cors_off_by_default_and_configurable() -> None:
    origin = {"Origin": "https://app.example"}
    with TestClient(create_app(Settings(warmup=False), engine=FakeEngine())) as client:
        assert "access-control-allow-origin" not in client.get("/v1/models", headers=origin).headers
    settings = Settings(warmup=False, cors_allow_origins=["https://app.example"])
    with TestClient(create_app(settings, engine=FakeEngine())) as client:
        assert client.get("/v1/models", headers=origin).headers["access-control-allow-origin"] == "https://app.example"
