"""``POST /v1/responses`` on the real engine through the official openai SDK (issue 18, item 2): images by http(s) URL
and data URL, a video, the streamed event order and its final object, function-call outputs with an image in them.
Every answer is the SDK's own ``Response``; every event its own ``ResponseStreamEvent``."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from openai import OpenAI

from tests.api.conftest import AssetServer
from tests.e2e.conftest import LiveServer
from tests.media_factory import data_url, image_bytes, mp4_bytes

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def assets() -> Iterator[AssetServer]:
    server = AssetServer()
    yield server
    server.close()


def _sdk(server: LiveServer) -> OpenAI:
    return OpenAI(base_url=f"{server.base_url}/v1", api_key="unused", timeout=120, max_retries=0)


def _count(server: LiveServer, messages: list[dict[str, Any]]) -> dict[str, Any]:
    answer = _sdk(server).post(
        "/chat/completions/count_tokens", body={"model": server.model, "messages": messages}, cast_to=object
    )
    assert isinstance(answer, dict)
    return answer


def test_images_by_url_and_data_url_and_a_video(dense_server: LiveServer, assets: AssetServer) -> None:
    url = assets.add("/responses-cat.png", image_bytes(96, 64, seed=51))
    clip = data_url(mp4_bytes(frames=20, width=128, height=96, fps=10.0, seed=52), "video/mp4")
    content: list[dict[str, Any]] = [
        {"type": "input_text", "text": "Compare these."},
        {"type": "input_image", "image_url": url, "detail": "auto"},
        {"type": "input_image", "image_url": data_url(image_bytes(64, 64, seed=53))},
        {"type": "input_video", "video_url": clip},
    ]
    sdk = _sdk(dense_server)
    answer = sdk.responses.create(
        model=dense_server.model,
        input=[{"role": "user", "content": content}],  # type: ignore[list-item]
        instructions="Answer briefly.",
        max_output_tokens=6,
        temperature=0,
    )
    assert answer.status == "incomplete" and answer.incomplete_details is not None  # 6 tokens of a random model
    assert answer.usage is not None and answer.usage.output_tokens == 6
    # The same content as a chat body counts exactly the input tokens the response reports.
    chat_content = [
        {"type": "text", "text": "Compare these."},
        {"type": "image_url", "image_url": {"url": url, "detail": "auto"}},
        {"type": "image_url", "image_url": {"url": content[2]["image_url"]}},
        {"type": "video_url", "video_url": {"url": clip}},
    ]
    counted = _count(
        dense_server, [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": chat_content}]
    )
    assert answer.usage.input_tokens == counted["prompt_tokens"]
    assert counted["prompt_tokens_details"]["image_tokens"] > 0 and counted["prompt_tokens_details"]["video_tokens"] > 0
    again = sdk.responses.create(
        model=dense_server.model,
        input=[{"role": "user", "content": content}],  # type: ignore[list-item]
        instructions="Answer briefly.",
        max_output_tokens=6,
        temperature=0,
    )
    assert again.output_text == answer.output_text  # deterministic at temperature 0


def test_the_stream_and_its_final_object(dense_server: LiveServer) -> None:
    """A structured answer ends by itself: ``response.completed``, read back by the SDK's stream helper."""
    sdk = _sdk(dense_server)
    schema = {
        "type": "object",
        "properties": {
            "city": {"type": "string", "maxLength": 12},
            "n": {"type": "integer", "minimum": 0, "maximum": 9},
        },
        "required": ["city", "n"],
        "additionalProperties": False,
    }
    fmt = {"format": {"type": "json_schema", "name": "place", "schema": schema, "strict": True}}
    kwargs: dict[str, Any] = {"model": dense_server.model, "input": "Where?", "max_output_tokens": 200, "text": fmt}
    with sdk.responses.stream(**kwargs, temperature=0) as stream:
        events = list(stream)
        final = stream.get_final_response()
    kinds = [event.type for event in events]
    assert kinds[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert kinds[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")  # type: ignore[union-attr]
    assert final.status == "completed" and final.output_text == deltas
    assert set(json.loads(final.output_text)) == {"city", "n"}
    whole = sdk.responses.create(**kwargs, temperature=0)
    assert whole.output_text == final.output_text  # stream == non-stream
    assert whole.usage is not None and final.usage is not None
    assert (whole.usage.input_tokens, whole.usage.output_tokens) == (
        final.usage.input_tokens,
        final.usage.output_tokens,
    )


def test_a_stream_cut_by_max_output_tokens_ends_incomplete(dense_server: LiveServer) -> None:
    events = list(
        _sdk(dense_server).responses.create(
            model=dense_server.model, input="Tell me a story.", max_output_tokens=5, temperature=0, stream=True
        )
    )
    assert events[-1].type == "response.incomplete"
    final = events[-1].response  # type: ignore[union-attr]
    assert final.incomplete_details is not None and final.incomplete_details.reason == "max_output_tokens"
    assert final.usage is not None and final.usage.output_tokens == 5


def test_a_function_call_output_with_an_image(dense_server: LiveServer) -> None:
    tool = {
        "type": "function",
        "name": "zoom",
        "description": "Crop the picture.",
        "parameters": {
            "type": "object",
            "properties": {"x": {"type": "integer", "minimum": 0, "maximum": 9}},
            "required": ["x"],
            "additionalProperties": False,
        },
        "strict": True,
    }
    sdk = _sdk(dense_server)
    first = sdk.responses.create(
        model=dense_server.model,
        input="Zoom in.",
        tools=[tool],  # type: ignore[list-item]
        tool_choice={"type": "function", "name": "zoom"},
        max_output_tokens=200,
        temperature=0,
    )
    [call] = [item for item in first.output if item.type == "function_call"]
    assert call.name == "zoom" and 0 <= json.loads(call.arguments)["x"] <= 9
    crop = {"type": "input_image", "image_url": data_url(image_bytes(128, 128, seed=54))}
    history: list[Any] = [
        {"role": "user", "content": "Zoom in."},
        {"type": "function_call", "call_id": call.call_id, "name": call.name, "arguments": call.arguments},
    ]
    texts = sdk.responses.create(
        model=dense_server.model,
        input=[*history, {"type": "function_call_output", "call_id": call.call_id, "output": "no crop"}],
        tools=[tool],  # type: ignore[list-item]
        max_output_tokens=2,
    )
    images = sdk.responses.create(
        model=dense_server.model,
        input=[*history, {"type": "function_call_output", "call_id": call.call_id, "output": [crop]}],
        tools=[tool],  # type: ignore[list-item]
        max_output_tokens=2,
    )
    assert texts.usage is not None and images.usage is not None
    assert images.usage.input_tokens > texts.usage.input_tokens + 10  # the crop's visual tokens are in the prompt
