"""How the service shapes parsed engine output (tool calls, reasoning, logprobs) into OpenAI responses.

The fake engine's ``script_parts`` play the part of vLLM's tool-call and reasoning parsers: each step of the script says
what the parsers made of that token. Every response and every chunk is checked against the ``openai`` package's own
models (validated from the raw JSON), and the official SDK is run against the app, sync, async and streaming.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from fastapi.testclient import TestClient

from server.config import Settings
from server.engine.base import ToolCallDelta
from server.engine.fake import FakeEngine
from tests.api.shaping import (
    EXPECTED_TWO_CALLS,
    NAMED,
    ONE_CALL_WITH_ID,
    TOOLS,
    TWO_CALLS,
    StreamedCall,
    complete,
    message_calls,
    part,
    reassemble,
    script,
    stream,
    streamed_calls,
)

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


# --- 4. bounded calls, and a call cut off by max_tokens -----------------------------------------------------------------

THREE_CALLS = [
    *TWO_CALLS,
    part(calls=[ToolCallDelta(index=2, name="get_weather")]),
    part(calls=[ToolCallDelta(index=2, arguments='{"city": "Rome"}')]),
]


@pytest.mark.parametrize("settings", [Settings(warmup=False, max_tool_calls=2)])
def test_calls_beyond_the_servers_bound_are_dropped(client: TestClient, engine: FakeEngine) -> None:
    script(engine, THREE_CALLS)
    choice = complete(client, tools=TOOLS, tool_choice="required")["choices"][0]
    assert message_calls(choice["message"]) == EXPECTED_TWO_CALLS
    assert choice["finish_reason"] == "tool_calls"
    assert engine.requests[-1].output.call_limit == 2  # the bound the real engine's grammar gets
    assert streamed_calls(reassemble(stream(client, tools=TOOLS))[0]) == EXPECTED_TWO_CALLS


def test_the_default_bound_keeps_three_calls(client: TestClient, engine: FakeEngine) -> None:
    script(engine, THREE_CALLS)
    calls = message_calls(complete(client, tools=TOOLS)["choices"][0]["message"])
    assert calls == [*EXPECTED_TWO_CALLS, ("get_weather", '{"city": "Rome"}')]
    assert engine.requests[-1].output.call_limit == 8


@pytest.mark.parametrize("max_tokens", [3, 4])
def test_a_call_cut_off_by_max_tokens_is_not_presented_as_a_call(
    client: TestClient, engine: FakeEngine, max_tokens: int
) -> None:
    script(engine, TWO_CALLS)  # 3 tokens: the first call's arguments are cut; 4: the first is whole, the second named
    choice = complete(client, tools=TOOLS, max_tokens=max_tokens)["choices"][0]
    assert choice["finish_reason"] == "length"
    calls = message_calls(choice["message"])
    assert calls == ([] if max_tokens == 3 else [EXPECTED_TWO_CALLS[0]])
    for _, arguments in calls:
        json.loads(arguments)
    # The stream has shown the pieces as they came; its finish reason says the answer was cut.
    streamed = reassemble(stream(client, tools=TOOLS, max_tokens=max_tokens))[0]
    assert streamed.finish_reasons == ["length"]
