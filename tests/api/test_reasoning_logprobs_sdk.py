"""How the service shapes reasoning and logprobs into OpenAI responses, and the official SDK (sync, async, streaming)
against the app; every response and chunk validated with the openai package's own models."""

from __future__ import annotations

import json
from typing import Any

import httpx
import httpx2
import pytest
from fastapi.testclient import TestClient
from openai import AsyncOpenAI, OpenAI
from openai.types.chat import (
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionMessage,
    ChatCompletionMessageFunctionToolCall,
)

from server.app import create_app
from server.config import Settings
from server.engine.base import ChoiceDelta
from server.engine.fake import FakeEngine
from tests.api.shaping import (
    EXPECTED_TWO_CALLS,
    MESSAGES,
    MODEL,
    ONE_CALL_WITH_ID,
    THINKING,
    TOOLS,
    TWO_CALLS,
    complete,
    message_calls,
    part,
    reassemble,
    script,
    stream,
    streamed_calls,
    with_logprobs,
)

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
