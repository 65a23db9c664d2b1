"""``POST /v1/chat/completions/count_tokens`` over the fake engine: the same body as chat, the count the chat answer's
``usage`` then reports, checked limits before any work, and nothing generated (issue 18, item 4)."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from server.engine.fake import FAKE_TOKENS_PER_IMAGE, FakeEngine
from tests.media_factory import data_url, image_bytes

URL = "/v1/chat/completions/count_tokens"


def _body(content: Any, **extra: Any) -> dict[str, Any]:
    return {"model": "fake-qwen3vl", "messages": [{"role": "user", "content": content}], **extra}


def test_count_equals_the_usage_of_the_same_chat_body(client: TestClient, engine: FakeEngine) -> None:
    image = {"type": "image_url", "image_url": {"url": data_url(image_bytes(64, 64, seed=4))}}
    body = _body([image, image, {"type": "text", "text": "compare these two"}], max_tokens=3)
    counted = client.post(URL, json=body)
    assert counted.status_code == 200, counted.text
    found = counted.json()
    assert found["object"] == "chat.completion.token_count" and found["model"] == "fake-qwen3vl"
    assert found["prompt_tokens_details"] == {"image_tokens": 2 * FAKE_TOKENS_PER_IMAGE, "video_tokens": 0}
    assert found["max_model_len"] == engine.max_model_len
    assert engine.requests == [] and len(engine.counted) == 1  # counted, nothing generated
    usage = client.post("/v1/chat/completions", json=body).json()["usage"]
    assert usage["prompt_tokens"] == found["prompt_tokens"]
    assert usage["prompt_tokens_details"]["image_tokens"] == found["prompt_tokens_details"]["image_tokens"]


def test_count_refuses_what_chat_refuses_before_any_work(client: TestClient, engine: FakeEngine) -> None:
    image = {"type": "image_url", "image_url": {"url": "http://192.0.2.1/never-fetched.png"}}
    too_many = client.post(URL, json=_body([image] * 4))  # the test app allows 3 images per request
    assert too_many.status_code == 400
    assert too_many.json()["error"]["code"] == "too_many_media_items"
    unknown = client.post(URL, json={**_body("hi"), "model": "other"})
    assert unknown.status_code == 404
    assert client.post(URL, json={"messages": "no"}).status_code == 400
    assert engine.counted == [] and engine.requests == []


def test_a_prompt_over_the_context_is_still_counted(client: TestClient, engine: FakeEngine) -> None:
    engine.max_model_len = 40
    found = client.post(URL, json=_body("word " * 100, max_tokens=10)).json()
    assert found["prompt_tokens"] > found["max_model_len"]  # the count says it does not fit; chat would be a 400
    assert client.post("/v1/chat/completions", json=_body("word " * 100, max_tokens=10)).status_code == 400


def test_images_in_a_tool_result_are_media_like_any_other(client: TestClient, engine: FakeEngine) -> None:
    """Issue 18, item 3: a tool's answer may carry images; they are counted, limited and prepared like a user's."""
    call = {"id": "c1", "type": "function", "function": {"name": "zoom", "arguments": '{"x": 1}'}}
    crop = {"type": "image_url", "image_url": {"url": data_url(image_bytes(48, 48, seed=9))}}
    messages: list[dict[str, Any]] = [
        {"role": "user", "content": "zoom in"},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "c1", "content": [{"type": "text", "text": "the crop:"}, crop]},
    ]
    body = {"model": "fake-qwen3vl", "messages": messages, "max_tokens": 2}
    answer = client.post("/v1/chat/completions", json=body)
    assert answer.status_code == 200, answer.text
    assert len(engine.requests[-1].images) == 1
    assert answer.json()["usage"]["prompt_tokens_details"]["image_tokens"] == FAKE_TOKENS_PER_IMAGE
    rendered_tool = engine.rendered[-1][2]
    assert rendered_tool["role"] == "tool" and [p["type"] for p in rendered_tool["content"]] == ["text", "image"]
    # Counted against the request's limit with the user's images (3 here).
    messages[0] = {"role": "user", "content": [crop, crop, crop]}
    refused = client.post("/v1/chat/completions", json={**body, "messages": messages})
    assert refused.status_code == 400 and refused.json()["error"]["code"] == "too_many_media_items"
