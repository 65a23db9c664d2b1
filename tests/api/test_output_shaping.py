"""How the service shapes parsed engine output (tool calls, reasoning, logprobs) into OpenAI responses.

The fake engine's ``script_parts`` play the part of vLLM's tool-call and reasoning parsers: each step of the script says
what the parsers made of that token. Every response and every chunk is checked against the ``openai`` package's own
models (validated from the raw JSON), and the official SDK is run against the app, sync, async and streaming.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
import httpx2
import pytest
from fastapi.testclient import TestClient
from openai import AsyncOpenAI, OpenAI
from openai.types.chat import (
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionFunctionToolParam,
    ChatCompletionMessage,
    ChatCompletionMessageFunctionToolCall,
    ChatCompletionMessageParam,
)

from server.app import create_app
from server.config import Settings
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


# --- 1. tool calls, not streamed -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("tool_choice", [None, "auto", "required"])
def test_tool_calls_finish_with_tool_calls_when_auto_or_required(
    client: TestClient, engine: FakeEngine, tool_choice: str | None
) -> None:
    script(engine, TWO_CALLS)
    body: dict[str, Any] = {"tools": TOOLS}
    if tool_choice is not None:
        body["tool_choice"] = tool_choice
    raw = complete(client, **body)
    choice = raw["choices"][0]
    message = choice["message"]
    assert choice["finish_reason"] == "tool_calls"
    assert message["role"] == "assistant"
    assert message["content"] == "Let me check."
    assert message_calls(message) == EXPECTED_TWO_CALLS
    ids = [call["id"] for call in message["tool_calls"]]
    assert all(isinstance(i, str) and i for i in ids) and len(set(ids)) == len(ids), ids
    assert all(call["type"] == "function" for call in message["tool_calls"])
    assert all(isinstance(call["function"]["arguments"], str) for call in message["tool_calls"])
    assert json.loads(message["tool_calls"][0]["function"]["arguments"]) == {"city": "Paris"}
    # The engine was asked with the tools and the choice as the client gave them.
    output = engine.requests[-1].output
    assert output.tool_choice == (tool_choice or "auto")
    assert [tool["function"]["name"] for tool in output.tools] == ["get_weather", "get_time"]


def test_a_call_only_answer_has_content_null_and_keeps_the_parsers_id(client: TestClient, engine: FakeEngine) -> None:
    script(engine, ONE_CALL_WITH_ID)
    raw = complete(client, tools=TOOLS)
    message = raw["choices"][0]["message"]
    assert "content" in message and message["content"] is None
    assert "reasoning_content" not in message
    assert message["tool_calls"] == [
        {"id": "call_fixed0", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}}
    ]
    assert raw["choices"][0]["finish_reason"] == "tool_calls"


def test_a_named_function_call_finishes_with_stop(client: TestClient, engine: FakeEngine) -> None:
    script(engine, ONE_CALL_WITH_ID)
    raw = complete(client, tools=TOOLS, tool_choice=NAMED)
    choice = raw["choices"][0]
    assert choice["finish_reason"] == "stop"
    assert message_calls(choice["message"]) == [("get_weather", '{"city": "Oslo"}')]
    assert choice["message"]["content"] is None
    assert engine.requests[-1].output.named_tool == "get_weather"


def test_without_a_call_tools_finish_with_stop(client: TestClient, engine: FakeEngine) -> None:
    script(engine, [part(content="No tool"), part(content=" needed.")])
    raw = complete(client, tools=TOOLS, tool_choice="auto")
    choice = raw["choices"][0]
    assert choice["finish_reason"] == "stop"
    assert choice["message"]["content"] == "No tool needed."
    assert "tool_calls" not in choice["message"]


def test_a_call_cut_by_max_tokens_finishes_with_length(client: TestClient, engine: FakeEngine) -> None:
    script(engine, TWO_CALLS)
    raw = complete(client, tools=TOOLS, max_tokens=3)
    choice = raw["choices"][0]
    assert choice["finish_reason"] == "length"
    assert message_calls(choice["message"]) == [("get_weather", '{"city": ')]


def test_n_choices_each_get_their_own_calls_with_unique_ids(client: TestClient, engine: FakeEngine) -> None:
    script(engine, TWO_CALLS)
    raw = complete(client, tools=TOOLS, n=2)
    assert [choice["index"] for choice in raw["choices"]] == [0, 1]
    ids = []
    for choice in raw["choices"]:
        assert choice["finish_reason"] == "tool_calls"
        assert message_calls(choice["message"]) == EXPECTED_TWO_CALLS
        ids += [call["id"] for call in choice["message"]["tool_calls"]]
    assert len(set(ids)) == 4, ids


# --- 2. tool calls, streamed ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("tool_choice", ["auto", "required"])
def test_streamed_calls_reassemble_to_the_non_streamed_ones(
    client: TestClient, engine: FakeEngine, tool_choice: str
) -> None:
    script(engine, TWO_CALLS)
    plain = complete(client, tools=TOOLS, tool_choice=tool_choice)["choices"][0]
    chunks = stream(client, tools=TOOLS, tool_choice=tool_choice)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    streamed = reassemble(chunks)
    assert list(streamed) == [0]
    choice = streamed[0]
    assert streamed_calls(choice) == message_calls(plain["message"]) == EXPECTED_TWO_CALLS
    assert [call.type for call in choice.calls.values()] == ["function", "function"]
    ids = [call.id for call in choice.calls.values()]
    assert len(set(ids)) == 2
    assert choice.content == plain["message"]["content"] == "Let me check."
    assert choice.finish_reasons == [plain["finish_reason"]] == ["tool_calls"]
    # The step that ends call 0 and starts call 1 is one chunk with both pieces, call 1's carrying its id and name.
    both = [
        delta_calls
        for chunk in chunks
        for c in chunk["choices"]
        if len(delta_calls := c["delta"].get("tool_calls") or []) == 2
    ]
    assert len(both) == 1
    assert both[0][0] == {"index": 0, "function": {"arguments": '"Paris"}'}}
    assert both[0][1]["id"] == ids[1] and both[0][1]["function"]["name"] == "get_time"


def test_streamed_call_keeps_the_parsers_id_and_named_function_stops(client: TestClient, engine: FakeEngine) -> None:
    script(engine, ONE_CALL_WITH_ID)
    plain = complete(client, tools=TOOLS, tool_choice=NAMED)["choices"][0]
    choice = reassemble(stream(client, tools=TOOLS, tool_choice=NAMED))[0]
    assert choice.calls == {0: StreamedCall("call_fixed0", "function", "get_weather", '{"city": "Oslo"}')}
    assert [(c["id"], c["function"]["name"], c["function"]["arguments"]) for c in plain["message"]["tool_calls"]] == [
        ("call_fixed0", "get_weather", '{"city": "Oslo"}')
    ]
    assert choice.finish_reasons == ["stop"] == [plain["finish_reason"]]
    assert not choice.content and not choice.reasoning_seen


def test_a_call_started_and_continued_in_one_step_streams_its_id_and_name_once(
    client: TestClient, engine: FakeEngine
) -> None:
    # One engine step may carry several pieces of one call: vLLM merges the steps a slow consumer has not read yet, and
    # its parser appends flushed pieces to the step's delta. The call's id, type and name must still come once.
    script(
        engine,
        [
            part(
                calls=[
                    ToolCallDelta(index=0, id="call_fixed0", name="get_weather"),
                    ToolCallDelta(index=0, arguments='{"city": "Oslo"}'),
                ]
            )
        ],
    )
    plain = complete(client, tools=TOOLS)["choices"][0]
    choice = reassemble(stream(client, tools=TOOLS))[0]
    assert choice.calls == {0: StreamedCall("call_fixed0", "function", "get_weather", '{"city": "Oslo"}')}
    assert streamed_calls(choice) == message_calls(plain["message"])


def test_streamed_n_choices_are_independent(client: TestClient, engine: FakeEngine) -> None:
    script(engine, TWO_CALLS)
    chunks = stream(client, tools=TOOLS, n=2)
    streamed = reassemble(chunks)
    assert sorted(streamed) == [0, 1]
    for choice in streamed.values():
        assert streamed_calls(choice) == EXPECTED_TWO_CALLS
        assert choice.content == "Let me check."
        assert choice.finish_reasons == ["tool_calls"]
    ids = [call.id for choice in streamed.values() for call in choice.calls.values()]
    assert len(set(ids)) == 4, ids  # each choice started its own calls
    first_role = {c["index"] for c in chunks[0]["choices"] if c["delta"].get("role") == "assistant"}
    assert first_role == {0, 1}


def test_streamed_calls_cut_by_max_tokens_finish_with_length(client: TestClient, engine: FakeEngine) -> None:
    script(engine, TWO_CALLS)
    streamed = reassemble(stream(client, tools=TOOLS, n=2, max_tokens=2))
    for choice in streamed.values():
        assert choice.finish_reasons == ["length"]
        assert streamed_calls(choice) == [("get_weather", "")]


# --- 3. parallel_tool_calls=false ----------------------------------------------------------------------------------------


def test_parallel_tool_calls_false_keeps_only_the_first_call(client: TestClient, engine: FakeEngine) -> None:
    script(engine, TWO_CALLS)
    raw = complete(client, tools=TOOLS, parallel_tool_calls=False)
    choice = raw["choices"][0]
    assert message_calls(choice["message"]) == [EXPECTED_TWO_CALLS[0]]
    assert choice["message"]["content"] == "Let me check."
    assert choice["finish_reason"] == "tool_calls"
    assert engine.requests[-1].output.parallel_tool_calls is False


def test_parallel_tool_calls_false_streamed_keeps_only_the_first_call(client: TestClient, engine: FakeEngine) -> None:
    script(engine, TWO_CALLS)  # the last step holds only the dropped call's arguments and the finish reason
    chunks = stream(client, tools=TOOLS, parallel_tool_calls=False)
    indices = {
        call["index"] for chunk in chunks for c in chunk["choices"] for call in c["delta"].get("tool_calls") or []
    }
    assert indices == {0}
    choice = reassemble(chunks)[0]
    assert streamed_calls(choice) == [EXPECTED_TWO_CALLS[0]]
    assert choice.finish_reasons == ["tool_calls"]


@pytest.mark.parametrize("parallel", [None, True])
def test_parallel_tool_calls_true_or_unset_keeps_every_call(
    client: TestClient, engine: FakeEngine, parallel: bool | None
) -> None:
    script(engine, TWO_CALLS)
    body: dict[str, Any] = {"tools": TOOLS}
    if parallel is not None:
        body["parallel_tool_calls"] = parallel
    assert message_calls(complete(client, **body)["choices"][0]["message"]) == EXPECTED_TWO_CALLS
    assert engine.requests[-1].output.parallel_tool_calls is True
    assert streamed_calls(reassemble(stream(client, **body))[0]) == EXPECTED_TWO_CALLS


# --- 4. reasoning_content ------------------------------------------------------------------------------------------------


def test_reasoning_then_content(client: TestClient, engine: FakeEngine) -> None:
    script(engine, THINKING)
    raw = complete(client)
    message = raw["choices"][0]["message"]
    assert message["reasoning_content"] == "The user asks for a sum."
    assert message["content"] == "2 + 2 = 4."
    assert raw["choices"][0]["finish_reason"] == "stop"
    parsed = ChatCompletion.model_validate(raw).choices[0].message
    assert parsed.content == "2 + 2 = 4."
    assert (parsed.model_extra or {}).get("reasoning_content") == "The user asks for a sum."


def test_streamed_reasoning_matches_the_non_streamed(client: TestClient, engine: FakeEngine) -> None:
    script(engine, THINKING)
    plain = complete(client)["choices"][0]["message"]
    chunks = stream(client)
    deltas = [c["delta"] for chunk in chunks for c in chunk["choices"]]
    reasoning_deltas = [d["reasoning_content"] for d in deltas if "reasoning_content" in d]
    assert reasoning_deltas == ["The user asks", " for a sum."]
    # A reasoning delta carries no content key (OpenAI leaves unset delta fields out).
    assert all("content" not in d for d in deltas if "reasoning_content" in d)
    choice = reassemble(chunks)[0]
    assert choice.reasoning == plain["reasoning_content"]
    assert choice.content == plain["content"]
    assert choice.finish_reasons == ["stop"]


def test_reasoning_with_a_tool_call(client: TestClient, engine: FakeEngine) -> None:
    script(engine, [part(reasoning="Need the weather."), *ONE_CALL_WITH_ID])
    message = complete(client, tools=TOOLS)["choices"][0]["message"]
    assert message["reasoning_content"] == "Need the weather."
    assert message["content"] is None
    assert message_calls(message) == [("get_weather", '{"city": "Oslo"}')]
    choice = reassemble(stream(client, tools=TOOLS))[0]
    assert choice.reasoning == "Need the weather." and choice.content == ""
    assert streamed_calls(choice) == [("get_weather", '{"city": "Oslo"}')]


@pytest.mark.parametrize(
    ("parts", "content"),
    [
        ([part(content="Plain"), part(content=" answer.")], "Plain answer."),
        (ONE_CALL_WITH_ID, None),  # only a call: content is there, null
        ([part(content=None)], ""),  # the model said nothing at all
    ],
)
def test_without_reasoning_the_key_is_absent_but_content_is_present(
    client: TestClient, engine: FakeEngine, parts: list[ChoiceDelta], content: str | None
) -> None:
    script(engine, parts)
    raw = complete(client, tools=TOOLS)
    message = raw["choices"][0]["message"]
    assert "reasoning_content" not in message
    assert "content" in message and message["content"] == content
    for chunk in stream(client, tools=TOOLS):
        for c in chunk["choices"]:
            assert "reasoning_content" not in c["delta"], c


# --- 5. logprobs ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("top", [0, 1, 3])
def test_logprobs_content_has_top_logprobs_as_requested(client: TestClient, engine: FakeEngine, top: int) -> None:
    tokens = ["The", " sky", " is", " blue."]
    script(engine, with_logprobs(tokens, top))
    body: dict[str, Any] = {"logprobs": True}
    if top:
        body["top_logprobs"] = top
    raw = complete(client, **body)
    assert engine.requests[-1].sampling.logprobs == top
    entries = raw["choices"][0]["logprobs"]["content"]
    assert [e["token"] for e in entries] == tokens
    for i, entry in enumerate(entries):
        assert set(entry) == {"token", "logprob", "bytes", "top_logprobs"}
        assert entry["logprob"] == pytest.approx(-0.25 * (i + 1))
        assert entry["bytes"] == list(tokens[i].encode())
        assert len(entry["top_logprobs"]) == top
        for k, alternative in enumerate(entry["top_logprobs"]):
            assert alternative == {
                "token": f"{tokens[i]}~{k}",
                "logprob": pytest.approx(entry["logprob"] - k),
                "bytes": list(f"{tokens[i]}~{k}".encode()),
            }
    parsed = ChatCompletion.model_validate(raw).choices[0].logprobs
    assert parsed is not None and parsed.content is not None
    assert [len(e.top_logprobs) for e in parsed.content] == [top] * len(tokens)


def test_streamed_logprobs_match_the_non_streamed(client: TestClient, engine: FakeEngine) -> None:
    tokens = ["a", "b", "c"]
    script(engine, with_logprobs(tokens, 2))
    plain = complete(client, logprobs=True, top_logprobs=2)["choices"][0]["logprobs"]["content"]
    chunks = stream(client, logprobs=True, top_logprobs=2)
    content_choices = [c for chunk in chunks for c in chunk["choices"] if c["delta"].get("content")]
    assert [c["logprobs"]["content"][0]["token"] for c in content_choices] == tokens  # each token with its own chunk
    assert reassemble(chunks)[0].logprobs == plain


def test_without_logprobs_requested_logprobs_is_null(client: TestClient, engine: FakeEngine) -> None:
    # Even if the engine reported some, a request that did not ask for logprobs gets none.
    script(engine, with_logprobs(["x", "y"], 2))
    raw = complete(client)
    assert "logprobs" in raw["choices"][0] and raw["choices"][0]["logprobs"] is None
    assert engine.requests[-1].sampling.logprobs is None
    for chunk in stream(client):
        for c in chunk["choices"]:
            assert c.get("logprobs") is None, c
    assert complete(client, logprobs=False)["choices"][0]["logprobs"] is None


# --- 6. the official SDK against the app ---------------------------------------------------------------------------------


def function_calls(message: ChatCompletionMessage) -> list[tuple[str, str]]:
    calls = message.tool_calls or []
    assert all(isinstance(call, ChatCompletionMessageFunctionToolCall) for call in calls), calls
    return [
        (c.function.name, c.function.arguments) for c in calls if isinstance(c, ChatCompletionMessageFunctionToolCall)
    ]


def test_sdk_sync_parses_a_tool_call(client: TestClient, engine: FakeEngine) -> None:
    script(engine, TWO_CALLS)
    sdk = OpenAI(api_key="test", base_url=f"{client.base_url}/v1", http_client=client, max_retries=0)
    completion = sdk.chat.completions.create(model=MODEL, messages=MESSAGES, tools=TOOLS)
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content == "Let me check."
    assert function_calls(choice.message) == EXPECTED_TWO_CALLS
    first = (choice.message.tool_calls or [])[0]
    assert isinstance(first, ChatCompletionMessageFunctionToolCall)
    assert first.type == "function" and first.id.startswith("call_")
    assert json.loads(first.function.arguments) == {"city": "Paris"}


def test_sdk_sync_stream_and_its_accumulator(client: TestClient, engine: FakeEngine) -> None:
    script(engine, TWO_CALLS)
    sdk = OpenAI(api_key="test", base_url=f"{client.base_url}/v1", http_client=client, max_retries=0)
    pieces: dict[int, list[str]] = {}
    names: dict[int, str] = {}
    finishes: list[str] = []
    for chunk in sdk.chat.completions.create(model=MODEL, messages=MESSAGES, tools=TOOLS, stream=True):
        assert isinstance(chunk, ChatCompletionChunk)
        for choice in chunk.choices:
            for call in choice.delta.tool_calls or []:
                if call.function is not None and call.function.name:
                    names[call.index] = call.function.name
                pieces.setdefault(call.index, []).append((call.function.arguments or "") if call.function else "")
            if choice.finish_reason:
                finishes.append(choice.finish_reason)
    assert [(names[i], "".join(pieces[i])) for i in sorted(pieces)] == EXPECTED_TWO_CALLS
    assert finishes == ["tool_calls"]
    # The SDK's own stream helper accumulates the deltas into a completion: it must come out whole.
    with sdk.chat.completions.stream(model=MODEL, messages=MESSAGES, tools=TOOLS) as events:
        final = events.get_final_completion()
    assert final.choices[0].finish_reason == "tool_calls"
    assert final.choices[0].message.content == "Let me check."
    assert [(c.function.name, c.function.arguments) for c in final.choices[0].message.tool_calls or []] == (
        EXPECTED_TWO_CALLS
    )


@pytest.mark.parametrize("http_library", ["httpx", "httpx2"])
async def test_sdk_async_create_and_stream(engine: FakeEngine, settings: Settings, http_library: str) -> None:
    script(engine, ONE_CALL_WITH_ID)
    app = create_app(settings, engine=engine)
    # The SDK takes either library's client (httpx2 is its own; httpx is what most applications already have).
    http: Any = (
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app))
        if http_library == "httpx"
        else httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app))
    )
    async with app.router.lifespan_context(app), http:
        sdk = AsyncOpenAI(api_key="test", base_url="http://testserver/v1", http_client=http, max_retries=0)
        completion = await sdk.chat.completions.create(model=MODEL, messages=MESSAGES, tools=TOOLS)
        message = completion.choices[0].message
        assert completion.choices[0].finish_reason == "tool_calls"
        assert message.content is None
        assert function_calls(message) == [("get_weather", '{"city": "Oslo"}')]
        assert [call.id for call in message.tool_calls or []] == ["call_fixed0"]

        arguments: list[str] = []
        ids: list[str] = []
        finishes: list[str] = []
        chunks = await sdk.chat.completions.create(model=MODEL, messages=MESSAGES, tools=TOOLS, stream=True)
        async for chunk in chunks:
            for choice in chunk.choices:
                for delta in choice.delta.tool_calls or []:
                    if delta.id:
                        ids.append(delta.id)
                    if delta.function is not None and delta.function.arguments:
                        arguments.append(delta.function.arguments)
                if choice.finish_reason:
                    finishes.append(choice.finish_reason)
        assert ids == ["call_fixed0"]
        assert "".join(arguments) == '{"city": "Oslo"}'
        assert finishes == ["tool_calls"]

        script(engine, THINKING)
        thought = await sdk.chat.completions.create(model=MODEL, messages=MESSAGES)
        assert thought.choices[0].message.content == "2 + 2 = 4."
        assert (thought.choices[0].message.model_extra or {}).get("reasoning_content") == "The user asks for a sum."
