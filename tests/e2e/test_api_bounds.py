"""End-to-end request bounds on the real engine: every bound is a 400 in OpenAI's format naming its field (checked before
any work), and the server stays healthy after."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from openai import BadRequestError

from tests.e2e.conftest import LiveServer
from tests.e2e.fidelity import (
    THING_FORMAT,
    TOOLS,
    USER,
    check_error,
    create,
    post,
)

pytestmark = pytest.mark.e2e


# --- 6. bounds -----------------------------------------------------------------------------------------------------


def _deep_schema(levels: int) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string"}
    for _ in range(levels):
        schema = {"type": "array", "items": schema}
    return schema


def _wide_schema(properties: int, description_chars: int = 1000) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {f"p{i}": {"type": "string", "description": "x" * description_chars} for i in range(properties)},
    }


def _tool(name: str, parameters: dict[str, Any]) -> dict[str, Any]:
    return {"type": "function", "function": {"name": name, "parameters": parameters}}


def _schema_format(schema: dict[str, Any]) -> dict[str, Any]:
    return {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}


LOOKBEHIND = {"type": "string", "pattern": "(?<=a)b"}  # valid for the meta-schema, refused by xgrammar

BOUNDS: list[tuple[str, dict[str, Any], str]] = [
    ("n", {"n": 9}, "n"),
    ("messages", {"messages": USER * 1025}, "messages"),
    ("stop-count", {"stop": [f"s{i}" for i in range(9)]}, "stop"),
    ("stop-length", {"stop": ["x" * 257]}, "stop"),
    ("top_logprobs-max", {"logprobs": True, "top_logprobs": 21}, "top_logprobs"),
    ("top_logprobs-needs-logprobs", {"top_logprobs": 3}, "top_logprobs"),
    ("logit_bias-entries", {"logit_bias": {str(i): 1 for i in range(301)}}, "logit_bias"),
    ("logit_bias-value-high", {"logit_bias": {"5": 100.5}}, "logit_bias"),
    ("logit_bias-value-low", {"logit_bias": {"5": -101}}, "logit_bias"),
    ("logit_bias-key", {"logit_bias": {"the": 1}}, "logit_bias"),
    ("tools-count", {"tools": [_tool(f"f{i}", {"type": "object"}) for i in range(129)]}, "tools"),
    ("tool-schema-size", {"tools": [_tool("big", _wide_schema(70))]}, "tools"),
    ("tools-total-size", {"tools": [_tool(f"f{i}", _wide_schema(60)) for i in range(5)]}, "tools"),
    ("tool-schema-meta", {"tools": [_tool("f", {"type": 5})]}, "tools"),
    (
        "tool_choice-unknown",
        {"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "nope"}}},
        "tool_choice",
    ),
    ("tool_choice-needs-tools", {"tool_choice": "required"}, "tool_choice"),
    ("schema-size", {"response_format": _schema_format(_wide_schema(70))}, "response_format"),
    ("schema-depth", {"response_format": _schema_format(_deep_schema(40))}, "response_format"),
    ("schema-meta", {"response_format": _schema_format({"type": 5})}, "response_format"),
    ("schema-grammar", {"response_format": _schema_format(LOOKBEHIND)}, "response_format"),
    (
        "tool-schema-grammar",
        {"tools": [_tool("f", {"type": "object", "properties": {"x": LOOKBEHIND}})], "tool_choice": "required"},
        "tools",
    ),
    ("chat_template_kwargs", {"chat_template_kwargs": {"chat_template": "{{ messages }}"}}, "chat_template_kwargs"),
]


@pytest.mark.parametrize(("body", "param"), [(b, p) for _, b, p in BOUNDS], ids=[name for name, _, _ in BOUNDS])
def test_bounds_are_400_naming_the_field(dense_server: LiveServer, body: dict[str, Any], param: str) -> None:
    check_error(post(dense_server, body), param)


def test_logit_bias_token_ids_are_checked_against_the_vocabulary(dense_server: LiveServer) -> None:
    vocab = dense_server.app.state.qwen3vl.engine.model.vocab_size
    error = check_error(post(dense_server, {"logit_bias": {str(vocab): 1}}), "logit_bias")
    assert str(vocab) in error.message
    assert post(dense_server, {"logit_bias": {str(vocab - 1): 1}}).status_code == 200  # the last id is fine


def test_bounds_through_the_sdk_and_the_server_stays_healthy(dense_server: LiveServer) -> None:
    client = dense_server.client()
    grammar_request: dict[str, Any] = {
        "model": dense_server.model,
        "messages": USER,
        "response_format": _schema_format(LOOKBEHIND),
        "max_tokens": 4,
    }
    with pytest.raises(BadRequestError) as grammar:
        client.chat.completions.create(**grammar_request)
    assert grammar.value.status_code == 400 and grammar.value.param == "response_format"
    assert "lookbehind" in grammar.value.message.lower()
    with pytest.raises(BadRequestError) as n:
        client.chat.completions.create(**{**grammar_request, "response_format": {"type": "text"}, "n": 9})
    assert n.value.param == "n"
    assert httpx.get(f"{dense_server.base_url}/health").status_code == 200
    # Refused schemas leave no trace in the engine: the same kind of request with a good schema still works.
    completion = create(dense_server, response_format=THING_FORMAT, max_tokens=200, temperature=0)
    assert completion.choices[0].finish_reason == "stop"


def test_schema_error_param_is_the_schema_path(dense_server: LiveServer) -> None:
    error = check_error(post(dense_server, {"response_format": _schema_format({"type": 5})}), "response_format")
    assert error.param == "response_format.json_schema.schema"
