"""End-to-end API fidelity on the real vLLM engine: tools and tool_choice, response_format, logprobs, logit_bias and the
request bounds, through the official openai SDK against the shared dense (Instruct) tiny checkpoint.

Random weights make the text gibberish, so nothing here asserts content. What the grammar or the API promises is
asserted instead: JSON that parses and validates against the request's schema, tool calls to a declared function whose
arguments validate against its parameters, finish reasons, token accounting, determinism at temperature 0 and
stream == non-stream. Every response and every chunk is validated with the openai package's own models, from the raw
JSON the server sent.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import jsonschema
import pytest
from openai import AsyncOpenAI
from openai.types.chat import ChatCompletion

from tests.e2e.conftest import LiveServer
from tests.e2e.fidelity import (
    CLOCK,
    PARAMETERS,
    THING_FORMAT,
    THING_SCHEMA,
    TOOLS,
    USER,
    WEATHER,
    calls_of,
    check_call,
    check_usage,
    create,
    stream,
)
from tests.media_factory import data_url, image_bytes

pytestmark = pytest.mark.e2e


# --- 1. response_format --------------------------------------------------------------------------------------------


def test_json_schema_output_validates_and_stream_equals_non_stream(dense_server: LiveServer) -> None:
    completion = create(dense_server, response_format=THING_FORMAT, max_tokens=200, temperature=0)
    choice = completion.choices[0]
    assert choice.finish_reason == "stop"  # the compact grammar terminates well inside max_tokens
    assert choice.message.content is not None
    jsonschema.validate(json.loads(choice.message.content), THING_SCHEMA)
    assert completion.usage is not None and completion.usage.completion_tokens < 200

    again = create(dense_server, response_format=THING_FORMAT, max_tokens=200, temperature=0)
    assert again.choices[0].message.content == choice.message.content  # deterministic at temperature 0

    streamed = stream(dense_server, response_format=THING_FORMAT, max_tokens=200, temperature=0)
    assert streamed.content == choice.message.content
    assert streamed.finish_reasons == ["stop"]
    assert streamed.usage_completion_tokens == completion.usage.completion_tokens


def test_json_schema_holds_for_every_sampled_choice(dense_server: LiveServer) -> None:
    completion = create(dense_server, response_format=THING_FORMAT, max_tokens=200, temperature=1.0, seed=7, n=3)
    for choice in completion.choices:
        assert choice.finish_reason == "stop"
        assert choice.message.content is not None
        jsonschema.validate(json.loads(choice.message.content), THING_SCHEMA)


def test_json_object_output_parses(dense_server: LiveServer) -> None:
    completion = create(dense_server, response_format={"type": "json_object"}, max_tokens=200, temperature=0)
    choice = completion.choices[0]
    assert choice.finish_reason == "stop"
    assert choice.message.content is not None
    assert isinstance(json.loads(choice.message.content), dict)
    streamed = stream(dense_server, response_format={"type": "json_object"}, max_tokens=200, temperature=0)
    assert streamed.content == choice.message.content
    # response_format text is the plain, unconstrained answer.
    plain = create(dense_server, max_tokens=6, temperature=0)
    text = create(dense_server, response_format={"type": "text"}, max_tokens=6, temperature=0)
    assert text.choices[0].message.content == plain.choices[0].message.content


# --- 2./3. forced tool calls ---------------------------------------------------------------------------------------


def test_required_tool_choice_makes_one_valid_call_and_streams_the_same(dense_server: LiveServer) -> None:
    kwargs: dict[str, Any] = {
        "tools": TOOLS,
        "tool_choice": "required",
        "parallel_tool_calls": False,
        "max_tokens": 200,
        "temperature": 0,
    }
    completion = create(dense_server, **kwargs)
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    assert choice.message.tool_calls is not None and len(choice.message.tool_calls) == 1
    call = choice.message.tool_calls[0]
    assert call.type == "function" and call.id
    check_call(call.function.name, call.function.arguments)

    streamed = stream(dense_server, **kwargs)
    assert streamed.finish_reasons == ["tool_calls"]
    assert streamed.call_list() == calls_of(completion)  # ids differ between requests; names and arguments do not
    assert streamed.content == ""
    assert completion.usage is not None and streamed.usage_completion_tokens == completion.usage.completion_tokens


def test_required_tool_choice_with_parallel_calls(dense_server: LiveServer) -> None:
    """The grammar bounds the calls (the server's --max-tool-calls, 8) and lets the answer end after them, so with
    room enough the answer finishes by itself; stream == non-stream."""
    kwargs: dict[str, Any] = {"tools": TOOLS, "tool_choice": "required", "max_tokens": 600, "temperature": 0}
    completion = create(dense_server, **kwargs)
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    calls = calls_of(completion)
    assert 1 <= len(calls) <= 8 and choice.message.content is None
    for name, arguments in calls:
        check_call(name, arguments)
    ids = [c.id for c in choice.message.tool_calls or []]
    assert len(set(ids)) == len(ids)  # distinct call ids

    streamed = stream(dense_server, **kwargs)
    assert streamed.finish_reasons == ["tool_calls"]
    assert streamed.call_list() == calls


def test_a_call_cut_off_by_max_tokens_is_left_out(dense_server: LiveServer) -> None:
    kwargs: dict[str, Any] = {"tools": TOOLS, "tool_choice": "required", "temperature": 0}
    whole = calls_of(create(dense_server, max_tokens=600, **kwargs))
    assert len(whole) >= 2  # the random model calls more than once here (at temperature 0 it always does)
    budget = create(dense_server, max_tokens=600, **kwargs).usage
    assert budget is not None
    # Stop about half a call before the end: inside the last call (its name or its arguments), never after it.
    limit = budget.completion_tokens - budget.completion_tokens // len(whole) // 2
    cut = create(dense_server, max_tokens=limit, **kwargs)
    assert cut.choices[0].finish_reason == "length"
    kept = calls_of(cut)
    assert kept == whole[: len(kept)] and len(kept) == len(whole) - 1  # the cut-off last call is not presented
    for name, arguments in kept:
        check_call(name, arguments)
    streamed = stream(dense_server, max_tokens=limit, **kwargs)
    assert streamed.finish_reasons == ["length"]  # the stream showed the pieces; its finish says it was cut
    assert streamed.call_list()[: len(kept)] == kept


@pytest.mark.parametrize("tool", [WEATHER, CLOCK], ids=lambda t: str(t["function"]["name"]))
def test_named_tool_choice_calls_that_function(dense_server: LiveServer, tool: dict[str, Any]) -> None:
    name = tool["function"]["name"]
    kwargs: dict[str, Any] = {
        "tools": TOOLS,
        "tool_choice": {"type": "function", "function": {"name": name}},
        "max_tokens": 200,
        "temperature": 0,
    }
    completion = create(dense_server, **kwargs)
    choice = completion.choices[0]
    assert choice.finish_reason == "stop"  # OpenAI ends a call to the named function with "stop"
    calls = calls_of(completion)
    assert len(calls) == 1 and calls[0][0] == name
    check_call(*calls[0])

    streamed = stream(dense_server, **kwargs)
    assert streamed.finish_reasons == ["stop"]
    assert streamed.call_list() == calls


def test_named_tool_without_parameters_gets_empty_arguments(dense_server: LiveServer) -> None:
    tool = {"type": "function", "function": {"name": "ping"}}
    completion = create(
        dense_server,
        tools=[tool],
        tool_choice={"type": "function", "function": {"name": "ping"}},
        max_tokens=60,
        temperature=0,
    )
    assert completion.choices[0].finish_reason == "stop"
    assert [(name, json.loads(args)) for name, args in calls_of(completion)] == [("ping", {})]


# --- 4. tool_choice auto, none, and the tool turn in the history ---------------------------------------------------


def test_auto_tool_choice_answers_and_tools_reach_the_prompt(dense_server: LiveServer) -> None:
    plain = create(dense_server, max_tokens=8, temperature=0)
    auto = create(dense_server, tools=TOOLS, tool_choice="auto", max_tokens=8, temperature=0)
    default = create(dense_server, tools=TOOLS, max_tokens=8, temperature=0)  # tools without tool_choice: auto
    none = create(dense_server, tools=TOOLS, tool_choice="none", max_tokens=8, temperature=0)
    assert plain.usage and auto.usage and default.usage and none.usage
    # auto renders the tools into the system prompt; none hides them from the model altogether.
    assert auto.usage.prompt_tokens == default.usage.prompt_tokens > plain.usage.prompt_tokens + 50
    assert none.usage.prompt_tokens == plain.usage.prompt_tokens
    assert none.choices[0].message.content == plain.choices[0].message.content
    assert none.choices[0].message.tool_calls is None
    for completion in (auto, default):
        choice = completion.choices[0]
        assert choice.finish_reason in ("stop", "length", "tool_calls")
        if choice.message.tool_calls:
            assert choice.finish_reason == "tool_calls"
            assert all(name in PARAMETERS for name, _ in calls_of(completion))
        else:
            assert isinstance(choice.message.content, str)
    assert auto.choices[0].message.content == default.choices[0].message.content
    assert calls_of(auto) == calls_of(default)

    streamed = stream(dense_server, tools=TOOLS, tool_choice="auto", max_tokens=8, temperature=0)
    assert streamed.content == (auto.choices[0].message.content or "")
    assert streamed.call_list() == calls_of(auto)


def test_tool_call_history_turn_is_accepted_and_answered(dense_server: LiveServer) -> None:
    question: dict[str, Any] = {"role": "user", "content": "What is the weather in Paris?"}
    arguments = json.dumps({"city": "Paris", "days": 2})
    history: list[dict[str, Any]] = [
        question,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": arguments}}
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": json.dumps({"forecast": "sunny"})},
    ]
    first = create(dense_server, [question], tools=TOOLS, max_tokens=6, temperature=0)
    answer = create(dense_server, history, tools=TOOLS, max_tokens=6, temperature=0)
    choice = answer.choices[0]
    assert choice.finish_reason in ("stop", "length", "tool_calls")
    assert choice.message.content is not None or choice.message.tool_calls
    assert answer.usage is not None and first.usage is not None
    # The call and the tool's answer are in the prompt (Qwen's <tool_call> and <tool_response> blocks).
    assert answer.usage.prompt_tokens > first.usage.prompt_tokens + 20

    # The forced-call path works after a tool turn too.
    forced = create(
        dense_server,
        history,
        tools=TOOLS,
        tool_choice="required",
        parallel_tool_calls=False,
        max_tokens=120,
        temperature=0,
    )
    assert forced.choices[0].finish_reason == "tool_calls"
    for name, args in calls_of(forced):
        check_call(name, args)


# --- chat_template_kwargs ------------------------------------------------------------------------------------------


def test_chat_template_kwargs_reach_the_template(dense_server: LiveServer, processor: Any) -> None:
    image = data_url(image_bytes(64, 64, "PNG", 5))
    messages = [
        {
            "role": "user",
            "content": [{"type": "image_url", "image_url": {"url": image}}, {"type": "text", "text": "Describe."}],
        }
    ]
    hf = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe."}]}]
    with_ids, without = (
        processor.apply_chat_template(hf, tokenize=False, add_generation_prompt=True, **kwargs)
        for kwargs in ({"add_vision_id": True}, {})
    )
    extra = len(processor.tokenizer(with_ids)["input_ids"]) - len(processor.tokenizer(without)["input_ids"])
    assert extra > 0  # "Picture 1: " before the image
    plain = create(dense_server, messages, max_tokens=2, temperature=0)
    labelled = create(
        dense_server,
        messages,
        max_tokens=2,
        temperature=0,
        extra_body={"chat_template_kwargs": {"add_vision_id": True}},
    )
    assert plain.usage is not None and labelled.usage is not None
    assert labelled.usage.prompt_tokens == plain.usage.prompt_tokens + extra


# --- 5. logprobs ---------------------------------------------------------------------------------------------------


def test_logprobs_one_entry_per_token_and_streamed_alike(dense_server: LiveServer) -> None:
    completion = create(dense_server, logprobs=True, top_logprobs=3, max_tokens=6, temperature=0)
    choice = completion.choices[0]
    assert completion.usage is not None
    assert choice.logprobs is not None and choice.logprobs.content is not None
    entries = choice.logprobs.content
    assert len(entries) == completion.usage.completion_tokens == 6
    for entry in entries:
        assert entry.logprob <= 0
        assert len(entry.top_logprobs) == 3
        ranked = [top.logprob for top in entry.top_logprobs]
        assert ranked == sorted(ranked, reverse=True) and all(lp <= 0 for lp in ranked)
        assert entry.logprob == pytest.approx(ranked[0])  # greedy: the chosen token is the most likely one
        assert entry.bytes is not None and bytes(entry.bytes).decode("utf-8", "replace") == entry.token

    streamed = stream(dense_server, logprobs=True, top_logprobs=3, max_tokens=6, temperature=0)
    assert [token for token, _ in streamed.logprobs] == [entry.token for entry in entries]
    assert [lp for _, lp in streamed.logprobs] == pytest.approx([entry.logprob for entry in entries], abs=1e-4)

    # logprobs without top_logprobs: the chosen tokens only; no logprobs asked: none given.
    bare = create(dense_server, logprobs=True, max_tokens=3, temperature=0)
    assert bare.choices[0].logprobs is not None and bare.choices[0].logprobs.content is not None
    assert [len(e.top_logprobs) for e in bare.choices[0].logprobs.content] == [0, 0, 0]
    assert create(dense_server, max_tokens=3, temperature=0).choices[0].logprobs is None


# --- 7. logit_bias -------------------------------------------------------------------------------------------------


def test_logit_bias_reaches_the_engine(dense_server: LiveServer, processor: Any) -> None:
    tokenizer = processor.tokenizer
    (token_id,) = tokenizer.encode(" the")
    piece = tokenizer.decode([token_id])
    baseline = create(dense_server, logprobs=True, max_tokens=5, temperature=0)
    assert baseline.choices[0].message.content != piece * 5  # without the bias the model says something else
    for temperature in (0.0, 1.0):
        biased = create(
            dense_server,
            logit_bias={str(token_id): 100},
            logprobs=True,
            max_tokens=5,
            temperature=temperature,
            seed=3,
            extra_body={"ignore_eos": True},
        )
        choice = biased.choices[0]
        assert biased.usage is not None and biased.usage.completion_tokens == 5
        assert choice.logprobs is not None and choice.logprobs.content is not None
        assert [entry.token for entry in choice.logprobs.content] == [piece] * 5
        assert choice.message.content == piece * 5
    # A bias of -100 on the token the model picks first at temperature 0 makes it pick another one.
    assert baseline.choices[0].logprobs is not None and baseline.choices[0].logprobs.content is not None
    first = baseline.choices[0].logprobs.content[0].token
    (first_id,) = tokenizer.encode(first)
    assert tokenizer.decode([first_id]) == first
    banned = create(dense_server, logit_bias={str(first_id): -100}, logprobs=True, max_tokens=5, temperature=0)
    assert banned.choices[0].logprobs is not None and banned.choices[0].logprobs.content is not None
    assert banned.choices[0].logprobs.content[0].token != first
    assert first not in [entry.token for entry in banned.choices[0].logprobs.content]


# --- concurrency: constrained and unconstrained requests in one batch, through AsyncOpenAI --------------------------


async def test_mixed_constraints_in_one_batch_each_keep_their_own(dense_server: LiveServer) -> None:
    client = AsyncOpenAI(base_url=f"{dense_server.base_url}/v1", api_key="unused", timeout=120, max_retries=0)
    model = dense_server.model

    async def raw(**kwargs: Any) -> ChatCompletion:
        params: dict[str, Any] = {"model": model, "messages": USER, **kwargs}
        response = await client.chat.completions.with_raw_response.create(**params)
        completion = ChatCompletion.model_validate(json.loads(response.text))
        check_usage(completion)
        return completion

    requests: list[dict[str, Any]] = [
        {"response_format": THING_FORMAT, "max_tokens": 200, "temperature": 0},
        {"tools": TOOLS, "tool_choice": "required", "parallel_tool_calls": False, "max_tokens": 200, "temperature": 0},
        {"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "get_weather"}}, "max_tokens": 200},
        {"max_tokens": 16, "temperature": 0, "extra_body": {"ignore_eos": True}},
        {"response_format": {"type": "json_object"}, "max_tokens": 200, "temperature": 0},
        {"logprobs": True, "top_logprobs": 2, "max_tokens": 8, "temperature": 0},
    ]
    try:
        together = await asyncio.gather(*(raw(**r) for r in requests))
    finally:
        await client.close()
    schema_answer, required, named, free, json_object, with_logprobs = together
    assert schema_answer.choices[0].finish_reason == "stop"
    jsonschema.validate(json.loads(schema_answer.choices[0].message.content or ""), THING_SCHEMA)
    assert required.choices[0].finish_reason == "tool_calls"
    assert len(calls_of(required)) == 1
    check_call(*calls_of(required)[0])
    assert named.choices[0].finish_reason == "stop"
    assert [name for name, _ in calls_of(named)] == ["get_weather"]
    check_call(*calls_of(named)[0])
    assert json_object.choices[0].finish_reason == "stop"
    assert isinstance(json.loads(json_object.choices[0].message.content or ""), dict)
    assert free.choices[0].message.tool_calls is None and free.choices[0].logprobs is None
    assert free.usage is not None and free.usage.completion_tokens == 16
    logprobs = with_logprobs.choices[0].logprobs
    assert logprobs is not None and logprobs.content is not None
    assert with_logprobs.usage is not None and len(logprobs.content) == with_logprobs.usage.completion_tokens
    assert all(len(entry.top_logprobs) == 2 for entry in logprobs.content)
