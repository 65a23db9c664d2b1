"""Shared by the output-shaping API tests: scripting the fake engine's parsed output, calling the app, and
reassembling streamed chunks."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from fastapi.testclient import TestClient
from openai.types.chat import (
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionFunctionToolParam,
    ChatCompletionMessageParam,
)

from server.engine.base import ChoiceDelta, TokenLogprob, ToolCallDelta, TopLogprob
from server.engine.fake import FakeEngine

MODEL = "fake-qwen3vl"
MESSAGES: list[ChatCompletionMessageParam] = [
    {"role": "user", "content": "What is the weather in Paris, and the time there?"}
]


def function_tool(name: str, properties: dict[str, object]) -> ChatCompletionFunctionToolParam:
    return {
        "type": "function",
        "function": {
            "name": name,
            "description": f"{name} tool",
            "parameters": {"type": "object", "properties": properties},
        },
    }


TOOLS = [
    function_tool("get_weather", {"city": {"type": "string"}}),
    function_tool("get_time", {"tz": {"type": "string"}}),
]
NAMED = {"type": "function", "function": {"name": "get_weather"}}


def part(
    *,
    content: str | None = None,
    reasoning: str | None = None,
    calls: Sequence[ToolCallDelta] = (),
    logprobs: Sequence[TokenLogprob] = (),
) -> ChoiceDelta:
    """One step of parsed output (the fake sets the index, token ids and finish reason itself)."""
    return ChoiceDelta(
        index=0,
        text="",
        token_ids=(),
        content=content,
        reasoning=reasoning,
        tool_calls=tuple(calls),
        logprobs=tuple(logprobs),
    )


def script(engine: FakeEngine, parts: Sequence[ChoiceDelta]) -> None:
    """One raw token per parsed step (the raw text is not what the client sees once parsed)."""
    engine.script = [f"<tok{i}>" for i in range(len(parts))]
    engine.script_parts = list(parts)


# Some content, then two calls: the first one's arguments in pieces, the second one's in its first piece. In one step
# the end of the first call and the start of the second arrive together (as a parser can emit them).
TWO_CALLS = [
    part(content="Let me check."),
    part(calls=[ToolCallDelta(index=0, name="get_weather")]),
    part(calls=[ToolCallDelta(index=0, arguments='{"city": ')]),
    part(calls=[ToolCallDelta(index=0, arguments='"Paris"}'), ToolCallDelta(index=1, name="get_time")]),
    part(calls=[ToolCallDelta(index=1, arguments='{"tz": "CET"}')]),
]
EXPECTED_TWO_CALLS = [("get_weather", '{"city": "Paris"}'), ("get_time", '{"tz": "CET"}')]

# Only a call, with ids as the parser gave them.
ONE_CALL_WITH_ID = [
    part(calls=[ToolCallDelta(index=0, id="call_fixed0", name="get_weather", arguments="")]),
    part(calls=[ToolCallDelta(index=0, arguments='{"city": "Oslo"}')]),
]

THINKING = [
    part(reasoning="The user asks"),
    part(reasoning=" for a sum."),
    part(content="2 + 2"),
    part(content=" = 4."),
]


def logprob(token: str, value: float, top: int) -> TokenLogprob:
    alternatives = tuple(
        TopLogprob(token=f"{token}~{k}", logprob=value - k, bytes=tuple(f"{token}~{k}".encode())) for k in range(top)
    )
    return TokenLogprob(token=token, logprob=value, bytes=tuple(token.encode()), top=alternatives)


def with_logprobs(tokens: Sequence[str], top: int) -> list[ChoiceDelta]:
    return [part(content=t, logprobs=[logprob(t, -0.25 * (i + 1), top)]) for i, t in enumerate(tokens)]


# --- calling the app ---------------------------------------------------------------------------------------------------


def complete(client: TestClient, **body: Any) -> dict[str, Any]:
    """A non-streamed completion's raw JSON, after checking it against the openai package's model."""
    body.setdefault("model", MODEL)
    body.setdefault("messages", MESSAGES)
    response = client.post("/v1/chat/completions", json=body)
    assert response.status_code == 200, response.text
    raw: dict[str, Any] = response.json()
    ChatCompletion.model_validate(raw)
    return raw


def stream(client: TestClient, **body: Any) -> list[dict[str, Any]]:
    """A streamed completion's chunks as raw JSON, each checked against the openai package's model."""
    body.setdefault("model", MODEL)
    body.setdefault("messages", MESSAGES)
    response = client.post("/v1/chat/completions", json={**body, "stream": True})
    assert response.status_code == 200, response.text
    events = [line[len("data: ") :] for line in response.text.splitlines() if line.startswith("data: ")]
    assert events and events[-1] == "[DONE]", events[-3:]
    chunks = [json.loads(event) for event in events[:-1]]
    for chunk in chunks:
        assert "error" not in chunk, chunk
        ChatCompletionChunk.model_validate(chunk)
    assert len({chunk["id"] for chunk in chunks}) == 1
    return chunks


@dataclass
class StreamedCall:
    id: str
    type: str
    name: str
    arguments: str = ""


@dataclass
class StreamedChoice:
    content: str = ""
    reasoning: str = ""
    content_seen: bool = False
    reasoning_seen: bool = False
    calls: dict[int, StreamedCall] = field(default_factory=dict)
    finish_reasons: list[str] = field(default_factory=list)
    logprobs: list[dict[str, Any]] = field(default_factory=list)


def reassemble(chunks: list[dict[str, Any]]) -> dict[int, StreamedChoice]:
    """Fold the deltas into choices the way a client does, checking OpenAI's delta rules on the way: a call's id, type
    and name come on its first delta only; nothing follows a choice's finish reason."""
    choices: dict[int, StreamedChoice] = {}
    for chunk in chunks:
        for choice in chunk["choices"]:
            state = choices.setdefault(choice["index"], StreamedChoice())
            assert not state.finish_reasons, f"a delta after choice {choice['index']} finished: {choice}"
            delta = choice["delta"]
            if "content" in delta and delta["content"] is not None:
                state.content += delta["content"]
                state.content_seen = True
            if "reasoning_content" in delta and delta["reasoning_content"] is not None:
                state.reasoning += delta["reasoning_content"]
                state.reasoning_seen = True
            for call in delta.get("tool_calls") or []:
                function = call.get("function") or {}
                known = state.calls.get(call["index"])
                if known is None:
                    assert call.get("id"), f"a call's first delta has no id: {call}"
                    assert call.get("type") == "function", call
                    assert function.get("name"), f"a call's first delta has no name: {call}"
                    state.calls[call["index"]] = known = StreamedCall(call["id"], call["type"], function["name"])
                else:
                    assert call.get("id") is None, f"id repeated on a later delta: {call}"
                    assert call.get("type") is None, f"type repeated on a later delta: {call}"
                    assert function.get("name") is None, f"name repeated on a later delta: {call}"
                known.arguments += function.get("arguments") or ""
            if choice.get("finish_reason") is not None:
                state.finish_reasons.append(choice["finish_reason"])
            if choice.get("logprobs") is not None:
                state.logprobs.extend(choice["logprobs"]["content"] or [])
    for index, state in choices.items():
        assert len(state.finish_reasons) == 1, f"choice {index}: finish reasons {state.finish_reasons}"
    return choices


def message_calls(message: dict[str, Any]) -> list[tuple[str, str]]:
    return [(call["function"]["name"], call["function"]["arguments"]) for call in message.get("tool_calls") or []]


def streamed_calls(choice: StreamedChoice) -> list[tuple[str, str]]:
    return [(call.name, call.arguments) for _, call in sorted(choice.calls.items())]
