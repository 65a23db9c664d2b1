"""OpenAI's Batch API on the real engine through the official openai SDK (issue 19): upload → create → poll →
download, every custom_id answered once with a real engine answer, a line with a bad image in the error file with a
stable code while the rest succeed; the engine runs with vLLM's priority scheduling and batch lines behind live ones."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from openai import OpenAI
from openai.types import Batch
from openai.types.chat import ChatCompletion

from tests.e2e.conftest import LiveServer
from tests.media_factory import data_url, image_bytes

pytestmark = pytest.mark.e2e
WAIT_S = 300


def _line(custom_id: str, model: str, content: Any, max_tokens: int = 4) -> dict[str, Any]:
    body = {
        "model": model,
        "messages": [{"role": "user", "content": content}],
        "max_tokens": max_tokens,
        "temperature": 0,
    }
    return {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions", "body": body}


def _finished(sdk: OpenAI, batch_id: str) -> Batch:
    deadline = time.monotonic() + WAIT_S
    seen: list[int] = []
    while True:
        batch = sdk.batches.retrieve(batch_id)
        assert batch.request_counts is not None
        seen.append(batch.request_counts.completed + batch.request_counts.failed)
        if batch.status in ("completed", "cancelled", "failed", "expired"):
            assert seen == sorted(seen)  # counts only move forward
            return batch
        assert time.monotonic() < deadline, f"batch still {batch.status} after {WAIT_S} s"
        time.sleep(0.2)


def test_a_batch_on_the_real_engine(dense_server: LiveServer) -> None:
    sdk = dense_server.client()
    model = dense_server.model
    picture = [
        {"type": "image_url", "image_url": {"url": data_url(image_bytes(64, 64, seed=71))}},
        {"type": "text", "text": "Describe."},
    ]
    broken = [{"type": "image_url", "image_url": {"url": "data:image/jpeg;base64," + "QUJD" * 32}}]
    lines = [_line(f"text-{i}", model, f"Count to {i}.") for i in range(4)]
    lines += [_line("image", model, picture), _line("broken", model, broken)]
    content = b"".join(json.dumps(line).encode() + b"\n" for line in lines)
    uploaded = sdk.files.create(file=("batch.jsonl", content), purpose="batch")
    batch = sdk.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h")
    done = _finished(sdk, batch.id)
    assert done.status == "completed" and done.request_counts is not None
    assert (done.request_counts.total, done.request_counts.completed, done.request_counts.failed) == (6, 5, 1)
    assert done.output_file_id is not None and done.error_file_id is not None
    output = [json.loads(line) for line in sdk.files.content(done.output_file_id).text.splitlines()]
    errors = [json.loads(line) for line in sdk.files.content(done.error_file_id).text.splitlines()]
    assert [line["custom_id"] for line in output] == ["text-0", "text-1", "text-2", "text-3", "image"]
    answers = {line["custom_id"]: ChatCompletion.model_validate(line["response"]["body"]) for line in output}
    for answer in answers.values():
        assert answer.usage is not None and answer.usage.completion_tokens == 4
        assert answer.choices[0].finish_reason == "length"
    image_usage = answers["image"].usage
    assert image_usage is not None and image_usage.prompt_tokens_details is not None
    assert (image_usage.prompt_tokens_details.image_tokens or 0) > 0
    [error] = errors
    assert error["custom_id"] == "broken" and error["response"]["status_code"] == 400
    assert error["response"]["body"]["error"]["code"] == "media_decode_failed"
    # The same request live answers the same text at temperature 0: batch lines take the live path.
    live = sdk.chat.completions.create(**lines[0]["body"])
    assert live.choices[0].message.content == answers["text-0"].choices[0].message.content


def test_cancel_stops_the_lines_not_started(dense_server: LiveServer) -> None:
    sdk = dense_server.client()
    lines = [
        {
            "custom_id": f"long-{i}",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {
                "model": dense_server.model,
                "messages": [{"role": "user", "content": f"Story {i}."}],
                "max_tokens": 1500,
                "ignore_eos": True,
            },
        }
        for i in range(20)
    ]
    content = b"".join(json.dumps(line).encode() + b"\n" for line in lines)
    uploaded = sdk.files.create(file=("long.jsonl", content), purpose="batch")
    batch = sdk.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h")
    assert sdk.batches.cancel(batch.id).status in ("cancelling", "cancelled")
    done = _finished(sdk, batch.id)
    assert done.status == "cancelled" and done.request_counts is not None
    answered = done.request_counts.completed
    assert answered <= 4  # at most the lines already running (--batch-max-running 4) finished
    skipped = [] if done.error_file_id is None else sdk.files.content(done.error_file_id).text.splitlines()
    assert len(skipped) == 20 - answered
    assert {json.loads(line)["error"]["code"] for line in skipped} == {"batch_cancelled"}
