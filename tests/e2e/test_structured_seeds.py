"""Structured output is always valid JSON, on the real engine, over 200 sampled answers of each kind (issue 18, item 1).

The random-weight model is the adversary here: sampled at temperature 1 it writes whatever the grammar allows, so every
gap in the grammar shows (a raw U+001E inside a length-bounded string did, before ``server/engine/grammar.py``). Every
answer is read with strict ``json.loads`` (no raw control characters) and validated against its schema.
"""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import pytest
from openai.types.chat import ChatCompletionMessageFunctionToolCall

from tests.e2e.conftest import LiveServer
from tests.e2e.fidelity import create

pytestmark = pytest.mark.e2e

SEEDS = range(25)
N = 8  # choices per request: 25 seeds x 8 = 200 sampled answers per kind

# The schema: a short free-text string (where the raw control character came through) and a bounded integer.
CITY: dict[str, Any] = {
    "type": "object",
    "properties": {"city": {"type": "string", "maxLength": 12}, "n": {"type": "integer", "minimum": 0, "maximum": 99}},
    "required": ["city", "n"],
    "additionalProperties": False,
}
NOTE: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "take_note",
        "description": "Keep a note.",
        "parameters": {
            "type": "object",
            "properties": {
                "text": {"type": "string", "minLength": 1, "maxLength": 16},
                "tags": {"type": "array", "items": {"type": "string", "maxLength": 5}, "maxItems": 2},
            },
            "required": ["text", "tags"],
            "additionalProperties": False,
        },
    },
}


def strict_json(text: str) -> Any:
    """RFC 8259 as Python reads it strictly: a raw control character inside a string is an error."""
    return json.loads(text, strict=True)


def test_json_schema_answers_always_parse_and_validate(dense_server: LiveServer) -> None:
    fmt = {"type": "json_schema", "json_schema": {"name": "city", "schema": CITY, "strict": True}}
    answers = 0
    for seed in SEEDS:
        completion = create(dense_server, response_format=fmt, max_tokens=80, temperature=1.0, seed=seed, n=N)
        for choice in completion.choices:
            assert choice.finish_reason == "stop", (seed, choice.message.content)
            assert choice.message.content is not None
            jsonschema.validate(strict_json(choice.message.content), CITY)
            answers += 1
    assert answers == len(SEEDS) * N


@pytest.mark.parametrize("parallel", [False, True], ids=["one-call", "parallel"])
def test_forced_calls_always_parse_validate_and_are_bounded(dense_server: LiveServer, parallel: bool) -> None:
    """``tool_choice: required``: exactly one call without parallel calls, at most the server's bound (8) with them;
    every call's arguments are compact (no free whitespace) and valid; every answer ends by itself."""
    parameters = NOTE["function"]["parameters"]
    answers = 0
    for seed in SEEDS[: len(SEEDS) // 2 + 1]:
        completion = create(
            dense_server,
            tools=[NOTE],
            tool_choice="required",
            parallel_tool_calls=parallel,
            max_tokens=600,
            temperature=1.0,
            seed=seed,
            n=N,
        )
        for choice in completion.choices:
            assert choice.finish_reason == "tool_calls", (seed, choice)
            calls = choice.message.tool_calls or []
            assert (len(calls) == 1) if not parallel else (1 <= len(calls) <= 8), (seed, len(calls))
            for call in calls:
                assert isinstance(call, ChatCompletionMessageFunctionToolCall)
                assert call.function.name == "take_note"
                arguments = call.function.arguments
                parsed = strict_json(arguments)
                jsonschema.validate(parsed, parameters)
                # The compact grammar: exactly json.dumps' own layout (", " and ": ", no other blank outside strings).
                assert json.dumps(parsed, ensure_ascii=False) == arguments, arguments
            answers += 1
    assert answers >= 100
