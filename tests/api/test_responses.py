"""``POST /v1/responses`` over the fake engine, through the official openai SDK (issue 18, item 2): the SDK's own types
validate every answer and every streamed event; the request reaches the engine as the chat path would send it."""

from __future__ import annotations

import json
from typing import Any

import pytest
from fastapi.testclient import TestClient
from openai import BadRequestError, OpenAI
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter

from server.engine.fake import FAKE_TOKENS_PER_IMAGE, FakeEngine
from tests.api.shaping import TOOLS, TWO_CALLS, part, script
from tests.media_factory import data_url, image_bytes

EVENTS: TypeAdapter[Any] = TypeAdapter(ResponseStreamEvent)
MODEL = "fake-qwen3vl"
FUNCTIONS = [{"type": "function", **tool["function"]} for tool in TOOLS]


@pytest.fixture
def sdk(client: TestClient) -> OpenAI:
    return OpenAI(base_url="http://testserver/v1", api_key="unused", http_client=client, max_retries=0)


def _raw(client: TestClient, **body: Any) -> dict[str, Any]:
    response = client.post("/v1/responses", json={"model": MODEL, **body})
    assert response.status_code == 200, response.text
    found: dict[str, Any] = response.json()
    Response.model_validate(found)
    return found


def test_a_string_input_is_answered_as_a_response(sdk: OpenAI, engine: FakeEngine) -> None:
    answer = sdk.responses.create(model=MODEL, input="Say hello.", instructions="Be brief.", max_output_tokens=8)
    assert answer.object == "response" and answer.status == "completed" and answer.id.startswith("resp_")
    assert answer.output_text == "Hello, world!"
    [message] = answer.output
    assert message.type == "message" and message.role == "assistant" and message.status == "completed"
    assert answer.usage is not None and answer.usage.output_tokens == 4
    assert answer.usage.total_tokens == answer.usage.input_tokens + 4
    assert answer.instructions == "Be brief." and answer.max_output_tokens == 8
    rendered = engine.rendered[-1]
    assert [m["role"] for m in rendered] == ["system", "user"] and rendered[1]["content"] == "Say hello."
    assert engine.requests[-1].sampling.max_tokens == 8


def test_images_and_video_parts_reach_the_engine(client: TestClient, engine: FakeEngine) -> None:
    image = data_url(image_bytes(64, 64, seed=2))
    content = [
        {"type": "input_text", "text": "What is this?"},
        {"type": "input_image", "image_url": image, "detail": "low"},
    ]
    found = _raw(client, input=[{"role": "user", "content": content}])
    assert found["usage"]["input_tokens"] >= FAKE_TOKENS_PER_IMAGE
    request = engine.requests[-1]
    assert len(request.images) == 1
    assert [p["type"] for p in engine.rendered[-1][0]["content"]] == ["text", "image"]


def test_the_stream_is_the_responses_event_sequence(sdk: OpenAI) -> None:
    events = list(sdk.responses.create(model=MODEL, input="Say hello.", stream=True))
    kinds = [event.type for event in events]
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds[2:4] == ["response.output_item.added", "response.content_part.added"]
    assert kinds.count("response.output_text.delta") == 4
    assert kinds[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [event.sequence_number for event in events] == list(range(len(events)))
    final = events[-1].response  # type: ignore[union-attr]
    assert final.status == "completed" and final.output_text == "Hello, world!"
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")  # type: ignore[union-attr]
    assert deltas == "Hello, world!"
    # The same request, not streamed, answers the same text and usage.
    whole = sdk.responses.create(model=MODEL, input="Say hello.")
    assert whole.output_text == final.output_text and whole.usage == final.usage


def test_the_raw_stream_names_each_event(client: TestClient) -> None:
    with client.stream("POST", "/v1/responses", json={"model": MODEL, "input": "hi", "stream": True}) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in response.iter_lines() if line]
    names = [line.removeprefix("event: ") for line in lines if line.startswith("event: ")]
    data = [json.loads(line.removeprefix("data: ")) for line in lines if line.startswith("data: ")]
    assert names == [d["type"] for d in data] and "[DONE]" not in lines
    for event in data:
        EVENTS.validate_python(event)


def test_function_calls_and_their_outputs_with_an_image(client: TestClient, engine: FakeEngine) -> None:
    script(engine, TWO_CALLS)
    found = _raw(client, input="weather and time?", tools=FUNCTIONS, tool_choice="auto")
    calls = [item for item in found["output"] if item["type"] == "function_call"]
    assert [(c["name"], json.loads(c["arguments"])) for c in calls] == [
        ("get_weather", {"city": "Paris"}),
        ("get_time", {"tz": "CET"}),
    ]
    assert [item["type"] for item in found["output"]] == ["message", "function_call", "function_call"]
    screenshot = {"type": "input_image", "image_url": data_url(image_bytes(32, 32, seed=5))}
    history = [
        {"role": "user", "content": "weather and time?"},
        *(
            {"type": "function_call", "call_id": c["call_id"], "name": c["name"], "arguments": c["arguments"]}
            for c in calls
        ),
        {"type": "function_call_output", "call_id": calls[0]["call_id"], "output": "sunny"},
        {"type": "function_call_output", "call_id": calls[1]["call_id"], "output": [screenshot]},
    ]
    engine.script_parts = None
    _raw(client, input=history, tools=FUNCTIONS)
    rendered = engine.rendered[-1]
    assert [m["role"] for m in rendered] == ["user", "assistant", "tool", "tool"]
    assert [c["function"]["name"] for c in rendered[1]["tool_calls"]] == ["get_weather", "get_time"]
    assert rendered[3]["content"] == [{"type": "image"}] and len(engine.requests[-1].images) == 1
    output = engine.requests[-1].output
    assert [t["function"]["name"] for t in output.tools] == ["get_weather", "get_time"]


def test_streamed_function_calls(sdk: OpenAI, engine: FakeEngine) -> None:
    script(engine, TWO_CALLS)
    events = list(sdk.responses.create(model=MODEL, input="go", tools=FUNCTIONS, stream=True))  # type: ignore[arg-type]
    kinds = [e.type for e in events]
    assert kinds.count("response.function_call_arguments.done") == 2
    final = events[-1].response  # type: ignore[union-attr]
    assert [item.type for item in final.output] == ["message", "function_call", "function_call"]
    assert json.loads(final.output[1].arguments) == {"city": "Paris"}  # type: ignore[union-attr]


def test_text_format_and_reasoning_items(client: TestClient, engine: FakeEngine) -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
    fmt = {"type": "json_schema", "name": "thing", "schema": schema, "strict": True}
    _raw(client, input="data", text={"format": fmt})
    sent = engine.requests[-1].output.response_format
    assert sent is not None and sent["type"] == "json_schema" and sent["json_schema"]["schema"] == schema
    engine.script_parts = [part(reasoning="Think"), part(reasoning=" more."), part(content="4"), part(content=".")]
    found = _raw(client, input="2+2?")
    assert [item["type"] for item in found["output"]] == ["reasoning", "message"]
    assert found["output"][0]["content"][0]["text"] == "Think more."
    assert found["usage"]["output_tokens_details"]["reasoning_tokens"] == 2


def test_an_answer_cut_by_max_output_tokens_is_incomplete(sdk: OpenAI) -> None:
    answer = sdk.responses.create(model=MODEL, input="hi", max_output_tokens=2)
    assert answer.status == "incomplete" and answer.incomplete_details is not None
    assert answer.incomplete_details.reason == "max_output_tokens"
    events = list(sdk.responses.create(model=MODEL, input="hi", max_output_tokens=2, stream=True))
    assert events[-1].type == "response.incomplete"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"background": True}, "background"),
        ({"truncation": "auto"}, "truncation"),
        ({"input": [{"type": "web_search_call"}]}, "input[0].type"),
        ({"input": [{"role": "user", "content": [{"type": "input_image"}]}]}, "input[0].content[0].image_url"),
        (
            {"input": [{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}]},
            "input[0].content[0].type",
        ),
        ({"tools": [{"type": "web_search"}]}, "tools[0].type"),
        ({"text": {"format": {"type": "grammar"}}}, "text.format.type"),
        ({"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "ftp://x"}]}]}, "input[0]"),
    ],
)
def test_what_is_not_supported_is_a_400_naming_it(sdk: OpenAI, body: dict[str, Any], param: str) -> None:
    kwargs: dict[str, Any] = {"model": MODEL, "input": "hi", **body}
    with pytest.raises(BadRequestError) as info:
        sdk.responses.create(**kwargs)
    assert info.value.param is not None and info.value.param.startswith(param), info.value.param
