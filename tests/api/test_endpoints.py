from __future__ import annotations

import asyncio

import pytest
from fastapi.testclient import TestClient

from server.app import create_app
from server.config import Settings
from server.engine.fake import FakeEngine


def test_models(client: TestClient, engine: FakeEngine) -> None:
    body = client.get("/v1/models").json()
    assert body["object"] == "list"
    assert [m["id"] for m in body["data"]] == [engine.model.name]  # the engine's model, under its served name
    assert body["data"][0]["max_model_len"] == engine.model.max_model_len
    assert client.get(f"/v1/models/{engine.model.name}").json()["id"] == engine.model.name
    missing = client.get("/v1/models/other")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "model_not_found"


def test_health_ready_and_dead_engine(client: TestClient, engine: FakeEngine) -> None:
    assert client.get("/health").json() == {"status": "ok"}
    assert client.get("/ready").status_code == 200
    engine.dead = True
    assert client.get("/health").status_code == 503
    assert client.get("/ready").status_code == 503


def test_ready_waits_for_warmup() -> None:
    engine = FakeEngine(delay_s=0.3)
    with TestClient(create_app(Settings(warmup=True), engine=engine)) as client:
        assert client.get("/ready").status_code == 503  # warm-up still running
        assert client.get("/health").status_code == 200
        for _ in range(50):
            if client.get("/ready").status_code == 200:
                break
            asyncio.run(asyncio.sleep(0.1))
        assert client.get("/ready").status_code == 200
    warm = engine.requests[0]
    assert len(warm.images) == 1 and len(warm.videos) == 1


def test_warmup_without_video_when_videos_are_off() -> None:
    engine = FakeEngine()
    with TestClient(
        create_app(Settings(warmup=True, limit_mm_per_prompt={"image": 1, "video": 0}), engine=engine)
    ) as c:
        for _ in range(50):
            if c.get("/ready").status_code == 200:
                break
            asyncio.run(asyncio.sleep(0.05))
    assert engine.requests[0].videos == ()


def test_version(client: TestClient) -> None:
    body = client.get("/version").json()
    assert body["version"] == "0.1.0"
    assert body["model"] == "fake-qwen3vl"


def test_metrics_counts_requests_by_route_and_status(client: TestClient) -> None:
    client.get("/v1/models")
    client.post("/v1/chat/completions", json={"model": "x", "messages": []})
    text = client.get("/metrics").text
    assert 'qwen3vl_http_requests_total{method="GET",route="/v1/models",status="200"} 1.0' in text
    assert 'qwen3vl_http_requests_total{method="POST",route="/v1/chat/completions",status="400"} 1.0' in text
    assert "qwen3vl_http_request_duration_seconds_bucket" in text


@pytest.mark.parametrize(("method", "path", "status"), [("GET", "/nope", 404), ("GET", "/v1/chat/completions", 405)])
def test_unknown_routes_in_openai_format(client: TestClient, method: str, path: str, status: int) -> None:
    response = client.request(method, path)
    assert response.status_code == status
    assert set(response.json()["error"]) == {"message", "type", "param", "code", "request_id"}


def test_two_apps_do_not_collide_on_metrics() -> None:
    for _ in range(2):
        with TestClient(create_app(Settings(warmup=False), engine=FakeEngine())) as client:
            assert client.get("/metrics").status_code == 200


def test_routes_answer_with_the_thread_pool_exhausted(client: TestClient, engine: FakeEngine) -> None:
    """No route's dependencies hop to FastAPI's thread pool: /health stays quick however busy that pool is."""
    import anyio.to_thread

    assert client.portal is not None
    limiter = client.portal.call(anyio.to_thread.current_default_thread_limiter)
    holders = [object() for _ in range(int(limiter.total_tokens))]
    for holder in holders:
        client.portal.call(limiter.acquire_on_behalf_of, holder)
    try:
        assert client.get("/health").status_code == 200
        assert client.get("/ready").status_code == 200
        assert client.get("/v1/models").status_code == 200
        body = {"model": engine.model.name, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
        assert client.post("/v1/chat/completions", json=body).status_code == 200
        assert client.post("/v1/completions", json={"model": engine.model.name, "prompt": "hi"}).status_code == 200
    finally:
        for holder in holders:
            client.portal.call(limiter.release_on_behalf_of, holder)
