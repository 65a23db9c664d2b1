"""Shared by the real-engine API-fidelity tests: request fixtures (a bounded schema, two tools), and checks of what the
server sent against the openai package's own models."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
import jsonschema
from openai.types.chat import ChatCompletion, ChatCompletionChunk, ChatCompletionMessageFunctionToolCall
from openai.types.shared import ErrorObject

from tests.e2e.conftest import LiveServer

USER: list[dict[str, Any]] = [{"role": "user", "content": "Give me the data."}]

THING_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "color": {"type": "string", "enum": ["red", "green", "blue"]},
        "count": {"type": "integer", "minimum": 0, "maximum": 9},
        "ok": {"type": "boolean"},
    },
    "required": ["color", "count", "ok"],
    "additionalProperties": False,
}
THING_FORMAT: dict[str, Any] = {"type": "json_schema", "json_schema": {"name": "thing", "schema": THING_SCHEMA}}

WEATHER: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The forecast for a city.",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "enum": ["Paris", "Rome"]},
                "days": {"type": "integer", "minimum": 1, "maximum": 7},
            },
            "required": ["city", "days"],
            "additionalProperties": False,
        },
    },
}
CLOCK: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_time",
        "description": "The time in a zone.",
        "parameters": {
            "type": "object",
            "properties": {"zone": {"type": "string", "enum": ["UTC", "CET"]}},
            "required": ["zone"],
            "additionalProperties": False,
        },
    },
}
TOOLS = [WEATHER, CLOCK]
PARAMETERS: dict[str, dict[str, Any]] = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}


# --- helpers -------------------------------------------------------------------------------------------------------


def check_usage(completion: ChatCompletion) -> None:
    assert completion.usage is not None
    assert completion.usage.total_tokens == completion.usage.prompt_tokens + completion.usage.completion_tokens


def create(server: LiveServer, messages: list[dict[str, Any]] | None = None, **kwargs: Any) -> ChatCompletion:
    """One non-streaming request through the sync SDK, validated from the raw JSON."""
    params: dict[str, Any] = {"model": server.model, "messages": messages or USER, **kwargs}
    raw = server.client().chat.completions.with_raw_response.create(**params)
    completion = ChatCompletion.model_validate(json.loads(raw.text))
    assert completion.object == "chat.completion" and completion.model == server.model
    assert len(completion.choices) == kwargs.get("n", 1)
    for choice in completion.choices:
        assert choice.message.role == "assistant"
    check_usage(completion)
    return completion


@dataclass
class Streamed:
    """A streamed choice put back together the way an OpenAI client does."""

    content: str = ""
    reasoning: str = ""
    calls: dict[int, dict[str, str]] = field(default_factory=dict)
    finish_reasons: list[str] = field(default_factory=list)
    logprobs: list[tuple[str, float]] = field(default_factory=list)
    chunks: list[ChatCompletionChunk] = field(default_factory=list)

    @property
    def usage_completion_tokens(self) -> int:
        usage = self.chunks[-1].usage
        assert usage is not None
        return usage.completion_tokens

    def call_list(self) -> list[tuple[str, str]]:
        assert sorted(self.calls) == list(range(len(self.calls)))  # indices 0, 1, … in order
        return [(self.calls[i]["name"], self.calls[i]["arguments"]) for i in sorted(self.calls)]


def assemble(chunks: list[ChatCompletionChunk]) -> Streamed:
    out = Streamed(chunks=chunks)
    for chunk in chunks:
        assert chunk.object == "chat.completion.chunk"
        for choice in chunk.choices:
            assert choice.index == 0
            delta = choice.delta
            out.content += delta.content or ""
            out.reasoning += (delta.model_extra or {}).get("reasoning_content") or ""
            for call in delta.tool_calls or []:
                if call.index not in out.calls:
                    # The first piece of a call carries its id, type and name; later pieces only append arguments.
                    assert call.id and call.type == "function", call
                    assert call.function is not None and call.function.name, call
                    out.calls[call.index] = {
                        "id": call.id,
                        "name": call.function.name,
                        "arguments": call.function.arguments or "",
                    }
                else:
                    assert call.id is None and call.type is None, call
                    assert call.function is not None and call.function.name is None, call
                    out.calls[call.index]["arguments"] += call.function.arguments or ""
            if choice.logprobs is not None:
                out.logprobs += [(t.token, t.logprob) for t in choice.logprobs.content or []]
            if choice.finish_reason is not None:
                out.finish_reasons.append(choice.finish_reason)
    assert len(out.finish_reasons) == 1, out.finish_reasons  # exactly one finish_reason for the one choice
    return out


def stream(server: LiveServer, messages: list[dict[str, Any]] | None = None, **kwargs: Any) -> Streamed:
    """One streaming request through the sync SDK; every SSE event is validated from its raw JSON."""
    chunks: list[ChatCompletionChunk] = []
    done = False
    params: dict[str, Any] = {"model": server.model, "messages": messages or USER, **kwargs}
    with server.client().chat.completions.with_streaming_response.create(
        stream=True, stream_options={"include_usage": True}, **params
    ) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if not line:
                continue
            assert line.startswith("data: "), line
            data = line.removeprefix("data: ")
            if data == "[DONE]":
                done = True
                continue
            assert not done, "data after [DONE]"
            chunks.append(ChatCompletionChunk.model_validate(json.loads(data)))
    assert done
    usage = chunks[-1].usage
    assert usage is not None and chunks[-1].choices == []  # include_usage: a final choice-less chunk with the usage
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    assert all(chunk.usage is None for chunk in chunks[:-1])
    return assemble(chunks)


def calls_of(completion: ChatCompletion) -> list[tuple[str, str]]:
    calls = completion.choices[0].message.tool_calls or []
    assert all(isinstance(c, ChatCompletionMessageFunctionToolCall) for c in calls)
    return [
        (c.function.name, c.function.arguments) for c in calls if isinstance(c, ChatCompletionMessageFunctionToolCall)
    ]


def check_call(name: str, arguments: str, allowed: Mapping[str, dict[str, Any]] = PARAMETERS) -> dict[str, Any]:
    """A valid call: to a declared function, with arguments that are a JSON object valid against its parameters."""
    assert name in allowed, name
    parsed = json.loads(arguments)
    assert isinstance(parsed, dict), arguments
    jsonschema.validate(parsed, allowed[name])
    return parsed


def check_error(response: httpx.Response, param: str) -> ErrorObject:
    """A 400 in OpenAI's error format whose ``param`` names the field (or a path inside it)."""
    assert response.status_code == 400, response.text
    body = response.json()
    assert set(body) == {"error"}
    error = ErrorObject.model_validate(body["error"])
    assert error.type == "invalid_request_error"
    assert error.message and error.code
    assert error.param is not None, error
    assert error.param == param or error.param.startswith((f"{param}.", f"{param}[")), (error.param, param)
    assert "Traceback" not in error.message and ".cc:" not in error.message  # nothing internal leaks
    return error


def post(server: LiveServer, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(
        f"{server.base_url}/v1/chat/completions",
        json={"model": server.model, "messages": USER, "max_tokens": 4, **body},
        timeout=120,
    )
