"""Server-Timing, the JSON access line and the generation metrics."""

from __future__ import annotations

import json
import logging

import pytest
from fastapi.testclient import TestClient

from server.app import create_app
from server.config import Settings
from server.engine.fake import FakeEngine
from server.logs import JsonFormatter
from tests.api.test_chat import IMAGE, chat, user

SECRET_PROMPT = "my secret prompt 12345"


def _stages(header: str) -> dict[str, float]:
    return {part.split(";dur=")[0].strip(): float(part.split(";dur=")[1]) for part in header.split(",")}


def test_server_timing_on_plain_and_streamed_responses(client: TestClient) -> None:
    plain = chat(
        client, messages=user({"type": "image_url", "image_url": {"url": IMAGE}}, {"type": "text", "text": "x"})
    )
    stages = _stages(plain.headers["server-timing"])
    assert set(stages) == {"queue", "media", "ttft", "total"}
    assert 0 <= stages["queue"] <= stages["ttft"] <= stages["total"]
    assert stages["media"] <= stages["ttft"]
    streamed = chat(client, messages=user({"type": "text", "text": "x"}), stream=True)
    assert set(_stages(streamed.headers["server-timing"])) == {"queue", "media", "ttft"}


def test_json_access_line_has_ids_timings_tokens_and_no_content(caplog: pytest.LogCaptureFixture) -> None:
    engine = FakeEngine()
    app = create_app(Settings(warmup=False, log_format="json"), engine=engine)
    with TestClient(app) as client, caplog.at_level(logging.INFO, logger="server.access"):
        response = chat(
            client,
            messages=user({"type": "image_url", "image_url": {"url": IMAGE}}, {"type": "text", "text": SECRET_PROMPT}),
        )
        chat(client, model="nope", messages=user({"type": "text", "text": SECRET_PROMPT}))
    lines = [json.loads(JsonFormatter().format(r)) for r in caplog.records if r.name == "server.access"]
    ok = next(line for line in lines if line["status"] == 200 and line["route"] == "/v1/chat/completions")
    assert ok["request_id"] == response.headers["x-request-id"]
    # The access line reports the counts the client was given.
    usage = response.json()["usage"]
    details = usage.get("prompt_tokens_details") or {}
    assert ok["prompt_tokens"] == usage["prompt_tokens"] > 0
    assert ok["completion_tokens"] == usage["completion_tokens"] == len(engine.script)
    assert ok["image_tokens"] == details.get("image_tokens", 0)
    assert ok["ttft_ms"] is not None and ok["total_ms"] >= ok["ttft_ms"]
    failed = next(line for line in lines if line["status"] == 404)
    assert failed["error_code"] == "model_not_found"
    text = json.dumps(lines)
    assert SECRET_PROMPT not in text and "base64" not in text


def test_generation_metrics(client: TestClient) -> None:
    chat(client, messages=user({"type": "text", "text": "hello there"}))
    text = client.get("/metrics").text
    assert "qwen3vl_time_to_first_token_seconds_count 1.0" in text
    assert "qwen3vl_inter_token_latency_seconds_count 3.0" in text  # 4 steps, 3 gaps
    assert 'qwen3vl_tokens_total{kind="completion"} 4.0' in text
    assert 'qwen3vl_tokens_total{kind="prompt_text"}' in text
