"""``/v1/completions`` with the fake engine: the legacy format, streaming, logprobs, bounds and refusals."""

from __future__ import annotations

import json
from typing import Any

import pytest
from fastapi.testclient import TestClient
from openai import OpenAI
from openai.types import Completion

from server.engine.fake import FakeEngine
from tests.api.test_chat import MODEL, assert_openai_error


def complete(client: TestClient, **body: Any) -> Any:
    body.setdefault("model", MODEL)
    body.setdefault("prompt", "Once upon a time")
    return client.post("/v1/completions", json=body)


def events(client: TestClient, **body: Any) -> list[dict[str, Any]]:
    body.setdefault("model", MODEL)
    body.setdefault("prompt", "Once upon a time")
    with client.stream("POST", "/v1/completions", json={**body, "stream": True}) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in response.iter_lines() if line.startswith("data: ")]
    assert lines[-1] == "data: [DONE]"
    return [json.loads(line.removeprefix("data: ")) for line in lines[:-1]]


def test_raw_prompt_reaches_the_engine_as_written_without_output_parsing(
    client: TestClient, engine: FakeEngine
) -> None:
    prompt = "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"  # raw prompting may spell role markers
    response = complete(client, prompt=[prompt], max_tokens=3)
    assert response.status_code == 200, response.text
    body = response.json()
    completion = Completion.model_validate(body)
    assert completion.object == "text_completion"
    assert completion.id.startswith("cmpl-")
    (choice,) = completion.choices
    assert choice.text == "".join(engine.script[:3])  # the engine's first max_tokens tokens, as generated
    assert choice.finish_reason == "length"
    assert choice.logprobs is None
    assert completion.usage is not None
    assert completion.usage.completion_tokens == 3
    assert completion.usage.total_tokens == completion.usage.prompt_tokens + 3
    (request,) = engine.requests
    assert request.prompt == prompt  # no chat template
    assert not request.output.parse
    assert request.prompt_param == "prompt"
    assert engine.rendered == []
    assert "Server-Timing" in response.headers


def test_max_tokens_defaults_to_16_as_in_openai(client: TestClient, engine: FakeEngine) -> None:
    assert complete(client).status_code == 200
    assert engine.requests[-1].sampling.max_tokens == 16


def test_stream_equals_non_stream_with_usage_last(client: TestClient) -> None:
    raw = complete(client, n=2, logprobs=2).json()
    whole = Completion.model_validate(raw)
    chunks = events(client, n=2, logprobs=2, stream_options={"include_usage": True})
    *pieces, last = chunks
    assert last["choices"] == []
    # Asked again, a prompt can be found in the prefix cache (not this one: it is shorter than a whole block).
    assert last["usage"]["prompt_tokens_details"].pop("cached_tokens") == 0
    assert raw["usage"]["prompt_tokens_details"].pop("cached_tokens") == 0
    assert last["usage"] == raw["usage"]
    for index, choice in enumerate(whole.choices):
        mine = [c for chunk in pieces for c in chunk["choices"] if c["index"] == index]
        assert "".join(c["text"] for c in mine) == choice.text
        finishes = [c["finish_reason"] for c in mine if c["finish_reason"] is not None]
        assert finishes == [choice.finish_reason]
        # The chunk that finishes is a complete, valid legacy completion in OpenAI's own model.
        final = next(chunk for chunk in pieces if any(c["finish_reason"] for c in chunk["choices"]))
        Completion.model_validate(final)
        assert choice.logprobs is not None
        assert [t for c in mine for t in c["logprobs"]["tokens"]] == choice.logprobs.tokens
        assert [o for c in mine for o in c["logprobs"]["text_offset"]] == choice.logprobs.text_offset


def test_logprobs_in_the_legacy_format(client: TestClient) -> None:
    body = complete(client, logprobs=3, max_tokens=4).json()
    logprobs = Completion.model_validate(body).choices[0].logprobs
    assert logprobs is not None and logprobs.tokens is not None and logprobs.top_logprobs is not None
    assert "".join(logprobs.tokens) == body["choices"][0]["text"]
    assert logprobs.text_offset == [0, 5, 6, 12]  # where each token starts in the text
    assert len(logprobs.token_logprobs or []) == len(logprobs.tokens) == body["usage"]["completion_tokens"]
    for token, top in zip(logprobs.tokens, logprobs.top_logprobs, strict=True):
        assert len(top) == 4 and token in top  # the sampled token and 3 alternatives


def test_the_official_sdk_reads_completions_streamed_and_not(client: TestClient) -> None:
    sdk = OpenAI(base_url="http://testserver/v1", api_key="unused", http_client=client, max_retries=0)
    completion = sdk.completions.create(model=MODEL, prompt="Say hi", max_tokens=2, temperature=0)
    assert completion.choices[0].text == "Hello,"
    streamed = sdk.completions.create(model=MODEL, prompt="Say hi", max_tokens=2, stream=True)
    assert "".join(chunk.choices[0].text for chunk in streamed if chunk.choices) == "Hello,"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"prompt": ["one", "two"]}, "prompt"),
        ({"prompt": []}, "prompt"),
        ({"prompt": [1, 2, 3]}, "prompt"),
        ({"prompt": ""}, "prompt"),
        ({"prompt": "a <|image_pad|> b"}, "prompt"),
        ({"echo": True}, "echo"),
        ({"suffix": "end"}, "suffix"),
        ({"best_of": 2}, "best_of"),
        ({"n": 9}, "n"),
        ({"logprobs": 21}, "logprobs"),
        ({"stop": ["a"] * 9}, "stop"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"max_tokens": 5000}, "max_tokens"),  # more than the context leaves
        ({"logit_bias": {"x": 1}}, "logit_bias"),
        ({"model": "other"}, "model"),
    ],
)
def test_bad_requests_are_400s_naming_the_field(client: TestClient, body: dict[str, Any], param: str) -> None:
    status = 404 if param == "model" else 400
    error = assert_openai_error(complete(client, **body), status)
    assert param in (error["param"] or "") or param in error["message"], error
    assert client.get("/health").status_code == 200
    assert complete(client, max_tokens=1).status_code == 200


def test_echo_false_and_null_suffix_are_accepted(client: TestClient) -> None:
    assert complete(client, echo=False, suffix=None, max_tokens=1).status_code == 200


def test_a_stream_cut_off_by_the_engine_ends_with_an_error_event(engine: FakeEngine, client: TestClient) -> None:
    engine.vanish_after = 2
    chunks = events(client)
    assert "error" in chunks[-1]
    assert all(c["finish_reason"] is None for chunk in chunks[:-1] for c in chunk["choices"])


def test_a_token_without_text_still_streams_its_logprob(engine: FakeEngine, client: TestClient) -> None:
    engine.script = ("Hel", "", "lo")  # the middle token ends inside a UTF-8 character: no text yet
    pieces = [c for chunk in events(client, logprobs=0) for c in chunk["choices"]]
    assert [t for c in pieces for t in c["logprobs"]["tokens"]] == ["Hel", "", "lo"]
    assert "".join(c["text"] for c in pieces) == "Hello"
