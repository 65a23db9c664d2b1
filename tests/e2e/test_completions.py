"""``/v1/completions`` on the real engine: raw prompts counted exactly, stream == non-stream, logprobs, bounds."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from openai import BadRequestError
from openai.types import Completion

from tests.e2e.conftest import LiveServer

pytestmark = pytest.mark.e2e

PROMPT = "<|im_start|>user\nDescribe a sunset.<|im_end|>\n<|im_start|>assistant\n"


def create(server: LiveServer, **kwargs: Any) -> Completion:
    raw = server.client().completions.with_raw_response.create(model=server.model, **kwargs)
    return Completion.model_validate(json.loads(raw.text))


def test_raw_prompt_is_counted_exactly_and_stream_equals_non_stream(dense_server: LiveServer, processor: Any) -> None:
    whole = create(
        dense_server, prompt=PROMPT, max_tokens=8, temperature=0, logprobs=2, extra_body={"ignore_eos": True}
    )
    (choice,) = whole.choices
    assert whole.usage is not None
    # The prompt goes to the engine as written: its token count is the tokenizer's, with no template around it.
    assert whole.usage.prompt_tokens == len(processor.tokenizer(PROMPT)["input_ids"])
    assert whole.usage.completion_tokens == 8
    assert choice.finish_reason == "length"
    assert choice.logprobs is not None and choice.logprobs.tokens is not None
    assert len(choice.logprobs.tokens) == 8
    assert all(lp <= 0 for lp in choice.logprobs.token_logprobs or [])
    assert all(len(top) >= 2 for top in choice.logprobs.top_logprobs or [])

    events = dense_server.client().completions.create(
        model=dense_server.model,
        prompt=PROMPT,
        max_tokens=8,
        temperature=0,
        logprobs=2,
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"ignore_eos": True},
    )
    chunks = list(events)
    text = "".join(c.text for chunk in chunks for c in chunk.choices)
    tokens = [t for chunk in chunks for c in chunk.choices for t in (c.logprobs.tokens or [] if c.logprobs else [])]
    assert text == choice.text
    assert tokens == choice.logprobs.tokens
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 8
    assert chunks[-1].usage.prompt_tokens == whole.usage.prompt_tokens


def test_a_prompt_longer_than_the_context_is_a_400_naming_prompt(dense_server: LiveServer) -> None:
    with pytest.raises(BadRequestError) as caught:
        create(dense_server, prompt="word " * 5000, max_tokens=1)
    assert caught.value.status_code == 400
    body = caught.value.response.json()["error"]
    assert body["param"] == "prompt"
    assert "maximum context length" in body["message"]
    assert httpx.get(f"{dense_server.base_url}/health", timeout=10).status_code == 200


def test_a_vision_placeholder_in_a_raw_prompt_is_refused(dense_server: LiveServer) -> None:
    with pytest.raises(BadRequestError) as caught:
        create(dense_server, prompt="look: <|vision_start|><|image_pad|><|vision_end|>", max_tokens=1)
    assert caught.value.response.json()["error"]["param"] == "prompt"
    assert create(dense_server, prompt="still fine", max_tokens=1).choices[0].finish_reason in ("stop", "length")


def test_cached_tokens_on_a_repeated_raw_prompt(dense_server: LiveServer) -> None:
    prompt = "<|im_start|>user\n" + " ".join(f"c{n}" for n in range(300, 500)) + "<|im_end|>\n<|im_start|>assistant\n"
    first, second = (create(dense_server, prompt=prompt, max_tokens=2, temperature=0) for _ in range(2))
    assert first.usage is not None and second.usage is not None
    assert first.usage.prompt_tokens_details is not None and second.usage.prompt_tokens_details is not None
    before, after = first.usage.prompt_tokens_details.cached_tokens, second.usage.prompt_tokens_details.cached_tokens
    assert isinstance(before, int) and isinstance(after, int)
    assert before < after < second.usage.prompt_tokens
