"""Request bodies are parsed once, by pydantic, from their bytes (``server.api.body``): large ones on a thread; a body
that does not validate is refused exactly as FastAPI's own parsing refused it (a 400 naming the field, or invalid_json)."""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest
from fastapi.testclient import TestClient

from server.api import body as body_module
from server.engine.fake import FakeEngine
from tests.api.test_chat import assert_openai_error

PADDING = "x" * (body_module.PARSE_IN_THREAD_ABOVE + 1024)  # an unknown field: ignored, but it makes the body large


def post(client: TestClient, path: str, payload: dict[str, Any] | bytes) -> Any:
    content = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return client.post(path, content=content, headers={"content-type": "application/json"})


@pytest.fixture
def parse_threads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the threads that parsed a body (the real parse, recorded on the way)."""
    seen: list[str] = []
    real = body_module.parse_body

    def recording(model: Any, raw: bytes) -> Any:
        seen.append(threading.current_thread().name)
        return real(model, raw)

    monkeypatch.setattr(body_module, "parse_body", recording)
    return seen


def test_a_large_body_is_parsed_once_off_the_loop(
    client: TestClient, engine: FakeEngine, parse_threads: list[str]
) -> None:
    small = {"model": engine.model.name, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    assert post(client, "/v1/chat/completions", small).status_code == 200
    assert post(client, "/v1/chat/completions", {**small, "padding": PADDING}).status_code == 200
    completion = {"model": engine.model.name, "prompt": "hi", "max_tokens": 2, "padding": PADDING}
    assert post(client, "/v1/completions", completion).status_code == 200
    assert len(parse_threads) == 3  # once per request
    loop_thread = parse_threads[0]
    assert parse_threads[1] != loop_thread and parse_threads[2] != loop_thread


@pytest.mark.parametrize("padding", ["", PADDING])
def test_refusals_are_as_before_whatever_the_size(client: TestClient, engine: FakeEngine, padding: str) -> None:
    base = {"model": engine.model.name, "messages": [{"role": "user", "content": "hi"}], "padding": padding}
    assert_openai_error(post(client, "/v1/chat/completions", {**base, "temperature": "hot"}), 400, param="temperature")
    assert_openai_error(post(client, "/v1/chat/completions", {**base, "messages": []}), 400, param="messages")
    broken = json.dumps(base).encode()[:-1]
    assert_openai_error(post(client, "/v1/chat/completions", broken), 400, code="invalid_json")
    assert_openai_error(post(client, "/v1/completions", {**base, "prompt": 5}), 400, param="prompt")


def test_json_the_standard_library_takes_and_pydantic_does_not(client: TestClient, engine: FakeEngine) -> None:
    """NaN is JSON to Python's json module, not to pydantic's parser: the body goes FastAPI's way, to the same 400."""
    raw = b'{"model": "%s", "messages": [{"role": "user", "content": "hi"}], "temperature": NaN}' % (
        engine.model.name.encode()
    )
    assert_openai_error(post(client, "/v1/chat/completions", raw), 400, param="temperature")
