"""README: fields OpenAI or vLLM define that this server does not implement are refused with a 400 that says what to
use instead. Every field of the code's own table (``REFUSED_FIELDS``), which must be README's list, on both endpoints:
an OpenAI error naming the field, nothing reaches the engine, and the server stays healthy."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from server.engine.fake import FakeEngine
from server.schemas.common import REFUSED_FIELDS
from server.schemas.completions import CompletionRequest

README = Path(__file__).resolve().parents[2] / "README.md"
MODEL = "fake-qwen3vl"
MESSAGES = [{"role": "user", "content": "hi"}]

# What a client of OpenAI's or vLLM's API would really send in each field (the server refuses any non-null value).
VALUES: dict[str, Any] = {
    "functions": [{"name": "get_weather", "parameters": {"type": "object", "properties": {}}}],
    "function_call": "auto",
    "audio": {"voice": "alloy", "format": "wav"},
    "prediction": {"type": "content", "content": "Hello"},
    "web_search_options": {},
    "chat_template": "{% for m in messages %}{{ m.content }}{% endfor %}",
    "guided_json": {"type": "object"},
    "guided_regex": "[a-z]+",
    "guided_choice": ["yes", "no"],
    "guided_grammar": 'root ::= "a"',
    "structured_outputs": {"json": {"type": "object"}},
    "best_of": 2,
    "use_beam_search": True,
    "echo": True,
}


def readme_refused_fields() -> set[str]:
    """The field names of README's sentence on refused fields, ``guided_*`` expanded over the code's table."""
    text = " ".join(README.read_text().split())
    found = re.search(r"are refused with a 400 that says what to use instead: (.*?)\.(?: |$)", text)
    assert found, "README no longer lists the refused fields"
    names: set[str] = set()
    listed = re.sub(r"\([^)]*\)", "", found.group(1))  # "(use `tools`)" says what to use instead
    for name in re.findall(r"`([a-z_*]+)`", listed):
        if name.endswith("*"):
            expanded = {field for field in REFUSED_FIELDS if field.startswith(name[:-1])}
            assert expanded, name
            names |= expanded
        else:
            names.add(name)
    return names


def test_the_table_is_readmes_list() -> None:
    assert REFUSED_FIELDS
    assert readme_refused_fields() == set(REFUSED_FIELDS)
    assert set(VALUES) == set(REFUSED_FIELDS)  # every field of the table is exercised below


def assert_refused(client: TestClient, engine: FakeEngine, path: str, body: dict[str, Any], name: str) -> None:
    response = client.post(path, json=body)
    assert response.status_code == 400, response.text
    assert set(response.json()) == {"error"}
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == name, error
    assert error["message"] and "Traceback" not in error["message"], error
    assert engine.requests == []  # refused before any work
    assert client.get("/health").json() == {"status": "ok"}
    assert client.get("/ready").status_code == 200
    clean = {key: value for key, value in body.items() if key != name}
    assert client.post(path, json=clean).status_code == 200  # the same request without the field is served


@pytest.mark.parametrize("name", sorted(REFUSED_FIELDS))
def test_chat_refuses_the_field_naming_it(client: TestClient, engine: FakeEngine, name: str) -> None:
    body = {"model": MODEL, "messages": MESSAGES, "max_tokens": 2, name: VALUES[name]}
    assert_refused(client, engine, "/v1/chat/completions", body, name)


@pytest.mark.parametrize("name", sorted(set(CompletionRequest.refused()) | {"echo"}))
def test_completions_refuse_the_field_naming_it(client: TestClient, engine: FakeEngine, name: str) -> None:
    body = {"model": MODEL, "prompt": "hi", "max_tokens": 2, name: VALUES[name]}
    assert_refused(client, engine, "/v1/completions", body, name)


def test_null_means_unset_and_is_accepted(client: TestClient) -> None:
    body = {"model": MODEL, "messages": MESSAGES, "max_tokens": 2, **dict.fromkeys(REFUSED_FIELDS)}
    assert client.post("/v1/chat/completions", json=body).status_code == 200
