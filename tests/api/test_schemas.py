"""The request and response models against the OpenAPI document.

The document states the rules the validators enforce (which role may carry what, the cross-field rules of a request), so
a JSON Schema validator over the document and the request model agree, body by body; the refusals are 400s naming their
field; the response models are described field by field while serializing as OpenAI does (unset fields left out); a 405
says which methods the route takes.
"""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from server.api.body import parse_body
from server.app import create_app, media_limits
from server.config import Settings
from server.engine.fake import FakeEngine
from server.schemas.chat import ChatCompletionRequest
from server.schemas.chat_response import AssistantMessage, Delta, ToolCallDelta, ToolCallFunctionDelta
from server.schemas.tools import ToolCall, ToolCallFunction
from server.service.prompt import build_conversation
from tests.api.test_chat import assert_openai_error, chat

DOCUMENT = create_app(Settings(warmup=False), engine=FakeEngine()).openapi()
USER = {"role": "user", "content": "hi"}
IMAGE = {"type": "image_url", "image_url": {"url": "data:,1"}}
CALLS = [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": '{"x": 1}'}}]
TOOL = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}


def _validator(component: str) -> jsonschema.Draft202012Validator:
    root = {"$ref": f"#/components/schemas/{component}", "components": DOCUMENT["components"]}
    return jsonschema.Draft202012Validator(root)


REQUEST = _validator("ChatCompletionRequest")


def _accepted(body: dict[str, Any]) -> bool:
    """Whether the model takes the body; the route's one-pass parse of the raw JSON (server.api.body) must agree."""
    parsed = parse_body(ChatCompletionRequest, json.dumps(body).encode())
    try:
        expected = ChatCompletionRequest.model_validate(body)
    except ValidationError:
        assert parsed == body  # refused: the plain JSON goes on to FastAPI's validation, which words the error
        return False
    assert parsed == expected and parsed.ignored_fields == expected.ignored_fields
    return True


def _video(**controls: Any) -> list[dict[str, Any]]:
    return [{"role": "user", "content": [{"type": "video_url", "video_url": {"url": "data:,v"}, **controls}]}]


@pytest.mark.parametrize(
    ("messages", "valid"),
    [
        ([USER], True),
        ([{"role": "developer", "content": [{"type": "text", "text": "a"}]}, USER], True),
        ([{"role": "robot", "content": "x"}], False),
        ([{"content": "x"}], False),
        ([{"role": "user", "content": []}], False),
        ([{"role": "user"}], False),
        ([{"role": "user", "content": None}], False),
        ([{"role": "user", "content": "x", "foo": 1}], True),  # unknown fields are ignored
        ([{"role": "system"}, USER], False),
        ([{"role": "system", "content": [IMAGE]}, USER], False),
        ([USER, {"role": "assistant"}], True),
        ([USER, {"role": "assistant", "content": None, "tool_calls": CALLS}], True),
        ([USER, {"role": "assistant", "content": "x", "tool_calls": []}], True),
        ([USER, {"role": "assistant", "content": [IMAGE]}], False),
        ([USER, {"role": "assistant", "tool_calls": [{"id": "", "function": {"name": "f", "arguments": ""}}]}], False),
        ([{"role": "user", "content": "x", "tool_calls": CALLS}], False),
        ([{"role": "user", "content": "x", "tool_calls": []}], True),
        ([{"role": "user", "content": "x", "tool_calls": None}], True),
        ([USER, {"role": "tool", "content": "r"}], False),
        ([USER, {"role": "tool", "content": "r", "tool_call_id": ""}], False),
        ([USER, {"role": "tool", "tool_call_id": "a"}], False),
        ([USER, {"role": "tool", "content": [IMAGE], "tool_call_id": "a"}], True),  # a screenshot as a tool result
        ([USER, {"role": "tool", "content": "r", "tool_call_id": "a", "name": "f"}], True),
        (_video(fps=2), True),
        (_video(fps=2, nframes=None), True),
        (_video(fps=2, nframes=8), False),
        ([{"role": "user", "content": [{"type": "video", "video": ["data:,f1"]}]}], True),
        ([{"role": "user", "content": [{"type": "video", "video": []}]}], False),
        ([{"role": "user", "content": [{"type": "video", "video": ""}]}], False),
    ],
)
def test_the_document_states_each_roles_rules(messages: list[dict[str, Any]], valid: bool) -> None:
    body = {"model": "m", "messages": messages}
    assert _accepted(body) is valid
    assert REQUEST.is_valid(body) is valid


@pytest.mark.parametrize(
    ("fields", "valid"),
    [
        ({"top_logprobs": 2}, False),
        ({"top_logprobs": 2, "logprobs": True}, True),
        ({"top_logprobs": None}, True),
        ({"tool_choice": "auto"}, False),
        ({"tool_choice": "required", "tools": []}, False),
        ({"tool_choice": "none"}, True),
        ({"tool_choice": "auto", "tools": [TOOL]}, True),
        ({"tool_choice": {"type": "function", "function": {"name": "f"}}, "tools": [TOOL]}, True),
        ({"stop": ""}, False),
        ({"stop": "x" * 257}, False),
        ({"stop": ["a"] * 8}, True),
        ({"stop": ["a"] * 9}, False),
        ({"stop": ["a", ""]}, False),
        ({"logit_bias": {"123": 5}}, True),
        ({"logit_bias": {"x": 5}}, False),
        ({"logit_bias": {"1234567890": 5}}, False),
        ({"logit_bias": {"1": 101}}, False),
    ],
)
def test_the_document_states_the_requests_cross_field_rules(fields: dict[str, Any], valid: bool) -> None:
    body = {"model": "m", "messages": [USER], **fields}
    assert _accepted(body) is valid
    assert REQUEST.is_valid(body) is valid


def test_what_the_document_cannot_state_is_still_refused() -> None:
    # A named tool_choice must name one of the tools: no JSON schema compares a value with a sibling's.
    body = {
        "model": "m",
        "messages": [USER],
        "tools": [TOOL],
        "tool_choice": {"type": "function", "function": {"name": "g"}},
    }
    assert REQUEST.is_valid(body)
    assert not _accepted(body)


@pytest.mark.parametrize(
    ("messages", "param", "words"),
    [
        ([{"role": "robot", "content": "x"}], "messages[0].role", "Input should be 'system', 'developer'"),
        ([{"content": "x"}], "messages[0].role", "Field required"),
        ([{"role": "user", "content": None}], "messages[0].content", "a user message needs content"),
        ([{"role": "system"}], "messages[0].content", "a system message needs content"),
        ([{"role": "system", "content": [IMAGE]}], "messages[0].content", "only text parts"),
        ([USER, {"role": "assistant", "content": [IMAGE]}], "messages[1].content", "an assistant message may"),
        ([{"role": "user", "content": "x", "tool_calls": CALLS}], "messages[0].tool_calls", "only assistant messages"),
        ([USER, {"role": "tool", "content": "r"}], "messages[1].tool_call_id", "needs the tool_call_id it answers"),
        ([USER, {"role": "tool", "tool_call_id": "a"}], "messages[1].content", "a tool message needs content"),
        ([USER, {"role": "tool", "content": "r", "tool_call_id": "x" * 129}], "messages[1].tool_call_id", "128"),
        (
            [USER, {"role": "assistant", "tool_calls": [{"id": "", "function": {"name": "f", "arguments": ""}}]}],
            "messages[1].tool_calls[0].id",
            "at least 1 character",
        ),
        (_video(fps=2, nframes=8), "messages[0].content[0]", "set either fps or nframes"),
    ],
)
def test_message_refusals_name_the_field(
    client: TestClient, messages: list[dict[str, Any]], param: str, words: str
) -> None:
    error = assert_openai_error(chat(client, messages=messages), 400, param=param, code="invalid_value")
    assert error["message"].startswith(f"{param}: ") and words in error["message"], error


@pytest.mark.parametrize(
    ("fields", "param", "words"),
    [
        ({"stop": ""}, "stop", "a stop sequence must have 1 to 256 characters"),
        ({"stop": ["a"] * 9}, "stop", "at most 8 stop sequences"),
        ({"logit_bias": {"x": 1}}, "logit_bias", "logit_bias keys are token ids"),
        ({"top_logprobs": 2}, "top_logprobs", "needs logprobs set to true"),
    ],
)
def test_request_refusals_name_the_field(client: TestClient, fields: dict[str, Any], param: str, words: str) -> None:
    error = assert_openai_error(chat(client, messages=[USER], **fields), 400, param=param, code="invalid_value")
    assert words in error["message"], error


def test_each_role_reaches_the_template_with_its_own_fields() -> None:
    messages = [
        {"role": "developer", "content": "be brief"},
        {"role": "user", "content": "x", "tool_call_id": "ignored", "name": "bob"},
        {"role": "assistant", "content": None, "tool_calls": CALLS},
        {"role": "tool", "content": "r", "tool_call_id": "c1", "name": "f"},
    ]
    request = ChatCompletionRequest.model_validate({"model": "m", "messages": messages})
    conversation = build_conversation(request.messages, media_limits(Settings()))
    assert conversation.messages == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "x"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": {"x": 1}}}],
        },
        {"role": "tool", "content": "r", "tool_call_id": "c1", "name": "f"},
    ]


def test_response_messages_leave_unset_fields_out_and_the_document_lists_their_fields() -> None:
    call = ToolCall(id="c1", function=ToolCallFunction(name="f", arguments="{}"))
    only_calls = AssistantMessage(tool_calls=[call]).model_dump(mode="json")
    assert only_calls == {"role": "assistant", "content": None, "tool_calls": [call.model_dump(mode="json")]}
    assert AssistantMessage(content="x").model_dump(mode="json") == {"role": "assistant", "content": "x"}
    delta = Delta(tool_calls=[ToolCallDelta(index=0, function=ToolCallFunctionDelta(arguments="{"))])
    assert delta.model_dump(mode="json") == {"tool_calls": [{"index": 0, "function": {"arguments": "{"}}]}
    assert Delta(content="").model_dump(mode="json") == {"content": ""}

    schemas = DOCUMENT["components"]["schemas"]
    assert set(schemas["AssistantMessage"]["properties"]) == {"role", "content", "reasoning_content", "tool_calls"}
    assert schemas["AssistantMessage"]["required"] == ["content"]
    assert set(schemas["Delta"]["properties"]) == {"role", "content", "reasoning_content", "tool_calls"}
    assert schemas["ToolCallDelta"]["required"] == ["index"]
    assert set(schemas["ToolCallFunctionDelta"]["properties"]) == {"name", "arguments"}
    for name, value in [("AssistantMessage", only_calls), ("Delta", delta.model_dump(mode="json"))]:
        _validator(name).validate(value)
    assert not _validator("AssistantMessage").is_valid({"role": "assistant"})  # content is always sent


def test_an_undeclared_method_is_a_405_with_allow(client: TestClient) -> None:
    for path, item in DOCUMENT["paths"].items():
        declared = {method.upper() for method in item}
        url = path.replace("{model_id}", "fake-qwen3vl")
        for method in sorted({"DELETE", "PUT", "PATCH"} - declared):
            response = client.request(method, url)
            assert response.status_code == 405, (method, path, response.text)
            assert set(response.headers["allow"].replace(" ", "").split(",")) == declared, (method, path)
            assert response.json()["error"]["code"] == "method_not_allowed"
