"""Overload is refused early (429 + Retry-After, before any media fetch); deadlines give 504 and abort the work."""

from __future__ import annotations

import json
import threading
from typing import Any

from fastapi.testclient import TestClient

from server.app import create_app
from server.config import Settings
from server.engine.fake import FakeEngine
from tests.api.conftest import AssetServer
from tests.api.test_chat import assert_openai_error, chat, user
from tests.media_factory import image_bytes


def test_burst_above_capacity_gets_only_200_and_429_and_rejections_fetch_nothing(assets: AssetServer) -> None:
    engine = FakeEngine(delay_s=0.1)
    settings = Settings(
        warmup=False,
        media_allow_loopback=True,
        admission_max_running=1,
        admission_max_queued=1,
        admission_max_wait=5,
    )
    urls = [assets.add(f"/b{i}.png", image_bytes(40, 40, seed=50 + i)) for i in range(8)]
    results: list[Any] = []
    with TestClient(create_app(settings, engine=engine), raise_server_exceptions=False) as client:

        def send(url: str) -> None:
            results.append(chat(client, messages=user({"type": "image_url", "image_url": {"url": url}})))

        threads = [threading.Thread(target=send, args=(u,)) for u in urls]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        metrics = client.get("/metrics").text
    statuses = sorted(r.status_code for r in results)
    assert set(statuses) <= {200, 429} and 429 in statuses and 200 in statuses
    for response in results:
        if response.status_code == 429:
            assert int(response.headers["retry-after"]) >= 1
            assert response.json()["error"]["code"] == "overloaded"
    assert len(assets.hits) == statuses.count(200)  # refused requests fetched nothing
    assert 'qwen3vl_admission_decisions_total{result="rejected_queue_full"}' in metrics
    assert "qwen3vl_requests_running 0.0" in metrics


def test_deadline_is_504_and_frees_the_slot(client: TestClient, engine: FakeEngine) -> None:
    engine.delay_s = 0.2
    body = {"model": "fake-qwen3vl", "messages": [{"role": "user", "content": "x"}]}
    response = client.post("/v1/chat/completions", json=body, headers={"X-Request-Timeout": "0.3"})
    assert_openai_error(response, 504, code="request_timeout")
    stream = client.post("/v1/chat/completions", json={**body, "stream": True}, headers={"X-Request-Timeout": "0.5"})
    events = [line[6:] for line in stream.text.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]" and json.loads(events[-2])["error"]["code"] == "request_timeout"
    bad = client.post("/v1/chat/completions", json=body, headers={"X-Request-Timeout": "soon"})
    assert_openai_error(bad, 400, param="x-request-timeout")
    engine.delay_s = 0
    assert client.post("/v1/chat/completions", json=body).status_code == 200
    assert "qwen3vl_requests_running 0.0" in client.get("/metrics").text
