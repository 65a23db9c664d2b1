"""Limits on a request's shape, checked before the body is parsed or validated: head bytes (the guard's second layer,
431), JSON separators in the body (413, counted while reading), messages and content parts (400 naming the field)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from server.app import create_app
from server.config import Settings
from server.engine.fake import FakeEngine
from server.schemas.chat import MAX_PARTS_PER_MESSAGE, ChatCompletionRequest, ShapeLimits, shape_limits

MODEL = "fake-qwen3vl"
TEXT = {"type": "text", "text": "a"}


def chat_body(*contents: Any) -> dict[str, Any]:
    return {"model": MODEL, "messages": [{"role": "user", "content": c} for c in contents]}


@pytest.fixture
def client() -> Iterator[TestClient]:
    settings = Settings(
        warmup=False,
        max_header_bytes=4096,
        max_body_json_items=1000,
        max_messages=3,
        max_content_parts_per_message=2,
        max_content_parts=4,
    )
    with TestClient(create_app(settings, engine=FakeEngine())) as client:
        yield client


def assert_error(response: Any, status: int, code: str, param: str | None, *words: str) -> None:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code and error["param"] == param, error
    assert error["request_id"] == response.headers["x-request-id"]
    for word in words:
        assert word in error["message"], error["message"]


def test_the_guard_caps_the_head_in_bytes(client: TestClient) -> None:
    # The HTTP protocol refuses such a head first; the guard holds under any server (httptools, a test client).
    big = client.get("/v1/models", headers={"x-big": "a" * 5000})
    assert_error(big, 431, "request_header_fields_too_large", None, "limit of 4096 bytes")
    long_path = client.get("/v1/models?" + "q" * 5000)
    assert_error(long_path, 431, "request_header_fields_too_large", None)
    assert client.get("/v1/models", headers={"x-fine": "a" * 3000}).status_code == 200


def test_json_separators_are_counted_while_the_body_is_read(client: TestClient) -> None:
    many = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "junk": [0] * 1200}
    assert_error(
        client.post("/v1/chat/completions", json=many), 413, "too_many_json_items", None, "more than 1000 JSON items"
    )

    def chunks() -> Iterator[bytes]:  # chunked: no Content-Length, refused as the separators arrive
        data = json.dumps(many).encode()
        for i in range(0, len(data), 256):
            yield data[i : i + 256]

    streamed = client.post("/v1/chat/completions", content=chunks(), headers={"Content-Type": "application/json"})
    assert_error(streamed, 413, "too_many_json_items", None)
    completions = {"model": MODEL, "prompt": ",".join(["x"] * 1200)}  # inside strings too: the count is on raw bytes
    assert_error(client.post("/v1/completions", json=completions), 413, "too_many_json_items", None)
    assert client.post("/v1/chat/completions", json={**many, "junk": [0] * 900}).status_code == 200


@pytest.mark.parametrize(
    ("contents", "param", "words"),
    [
        (["a", "b", "c", "d"], "messages", ["at most 3 messages", "got 4"]),
        ([[TEXT, TEXT, TEXT]], "messages[0].content", ["at most 2 content parts", "got 3"]),
        (["a", [TEXT, TEXT], [TEXT, TEXT]], "messages", ["at most 4 content parts in all", "got 5"]),
    ],
)
def test_messages_and_parts_are_capped_by_the_settings(
    client: TestClient, contents: list[Any], param: str, words: list[str]
) -> None:
    response = client.post("/v1/chat/completions", json=chat_body(*contents))
    assert_error(response, 400, "invalid_value", param, *words)


def test_requests_within_the_caps_are_served(client: TestClient) -> None:
    assert client.post("/v1/chat/completions", json=chat_body("a", [TEXT, TEXT], "b")).status_code == 200


def test_counts_come_before_any_part_is_validated() -> None:
    # A million parts that are not even valid: the count refuses them, no part model is built (the error would
    # otherwise name messages[0].content[0]).
    bogus = {"model": MODEL, "messages": [{"role": "user", "content": [{"type": "bogus"}] * 1_000_000}]}
    with pytest.raises(ValidationError) as info:
        ChatCompletionRequest.model_validate(bogus)
    errors = info.value.errors()
    assert len(errors) == 1 and f"at most {MAX_PARTS_PER_MESSAGE} content parts" in errors[0]["msg"]


def test_the_defaults_hold_without_the_guard_and_a_context_can_change_them() -> None:
    body = chat_body(*["x"] * 1025)
    with pytest.raises(ValidationError, match="at most 1024 messages"):
        ChatCompletionRequest.model_validate(body)
    token = shape_limits.set(ShapeLimits(max_messages=2000, max_parts=2000))
    try:
        assert len(ChatCompletionRequest.model_validate(body).messages) == 1025
    finally:
        shape_limits.reset(token)
