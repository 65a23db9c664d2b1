"""OpenAI's Files and Batch APIs over the fake engine, through the official openai SDK (issue 19): upload (every line
checked), create, progress, output and error files in OpenAI's line format, cancel, the batch priority, and the
API-key scoping of files and batches."""

from __future__ import annotations

import json
import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from openai import BadRequestError, NotFoundError, OpenAI
from openai.types import Batch, FileObject
from openai.types.chat import ChatCompletion
from openai.types.responses import Response

from server.api.batch_lines import BATCH_PRIORITY
from server.app import create_app
from server.config import Settings
from server.engine.fake import FakeEngine
from tests.media_factory import data_url, image_bytes

MODEL = "fake-qwen3vl"
WAIT_S = 60


def _settings(tmp: Path, **extra: Any) -> Settings:
    return Settings(
        warmup=False,
        limit_mm_per_prompt={"image": 3, "video": 1},
        batch_store_path=tmp / "batches.sqlite3",
        responses_store_path=tmp / "responses.sqlite3",
        batch_max_running=2,
        **extra,
    )


@pytest.fixture
def app_client(engine: FakeEngine, tmp_path: Path) -> Iterator[TestClient]:
    with TestClient(create_app(_settings(tmp_path), engine=engine), raise_server_exceptions=False) as client:
        yield client


def _sdk(client: TestClient, key: str = "unused") -> OpenAI:
    return OpenAI(base_url="http://testserver/v1", api_key=key, http_client=client, max_retries=0)


@pytest.fixture
def sdk(app_client: TestClient) -> OpenAI:
    return _sdk(app_client)


def chat_line(custom_id: str, content: Any = "Say hello.", **body: Any) -> dict[str, Any]:
    messages = [{"role": "user", "content": content}]
    return {
        "custom_id": custom_id,
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"model": MODEL, "messages": messages, "max_tokens": 4, **body},
    }


def jsonl(lines: list[dict[str, Any]]) -> bytes:
    return b"".join(json.dumps(line).encode() + b"\n" for line in lines)


def finished(sdk: OpenAI, batch_id: str) -> Batch:
    deadline = time.monotonic() + WAIT_S
    while True:
        batch = sdk.batches.retrieve(batch_id)
        if batch.status in ("completed", "cancelled", "failed", "expired"):
            return batch
        assert time.monotonic() < deadline, f"batch still {batch.status} after {WAIT_S} s"
        time.sleep(0.05)


def read_lines(sdk: OpenAI, file_id: str | None) -> list[dict[str, Any]]:
    if file_id is None:
        return []
    return [json.loads(line) for line in sdk.files.content(file_id).text.splitlines()]


def test_upload_create_poll_download(sdk: OpenAI, engine: FakeEngine) -> None:
    picture = [
        {"type": "text", "text": "What?"},
        {"type": "image_url", "image_url": {"url": data_url(image_bytes(32, 32))}},
    ]
    lines = [chat_line(f"req-{i}") for i in range(5)] + [chat_line("with-image", picture)]
    uploaded = sdk.files.create(file=("batch.jsonl", jsonl(lines)), purpose="batch")
    assert isinstance(uploaded, FileObject) and uploaded.purpose == "batch" and uploaded.bytes == len(jsonl(lines))
    assert sdk.files.retrieve(uploaded.id) == uploaded
    assert sdk.files.content(uploaded.id).content == jsonl(lines)
    assert uploaded.id in [f.id for f in sdk.files.list()]
    batch = sdk.batches.create(
        input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h", metadata={"job": "t"}
    )
    assert batch.status == "in_progress" and batch.request_counts is not None and batch.request_counts.total == 6
    done = finished(sdk, batch.id)
    assert done.status == "completed" and done.metadata == {"job": "t"}
    assert done.request_counts is not None and (done.request_counts.completed, done.request_counts.failed) == (6, 0)
    assert done.error_file_id is None
    output = read_lines(sdk, done.output_file_id)
    assert [line["custom_id"] for line in output] == [line["custom_id"] for line in lines]  # each once, in order
    for line in output:
        assert line["response"]["status_code"] == 200 and line["error"] is None and line["id"].startswith("batch_req_")
        ChatCompletion.model_validate(line["response"]["body"])
    assert {request.priority for request in engine.requests[-6:]} == {BATCH_PRIORITY}
    assert batch.id in [b.id for b in sdk.batches.list()]


def test_live_requests_keep_priority_zero(sdk: OpenAI, engine: FakeEngine) -> None:
    sdk.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=2)
    assert engine.requests[-1].priority == 0


def test_a_bad_image_lands_in_the_error_file_and_the_rest_succeed(sdk: OpenAI) -> None:
    broken = [{"type": "image_url", "image_url": {"url": "data:image/png;base64," + "A" * 64}}]
    lines = [chat_line("good-1"), chat_line("bad", broken), chat_line("good-2")]
    uploaded = sdk.files.create(file=("b.jsonl", jsonl(lines)), purpose="batch")
    done = finished(
        sdk, sdk.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h").id
    )
    assert done.request_counts is not None and (done.request_counts.completed, done.request_counts.failed) == (2, 1)
    [error] = read_lines(sdk, done.error_file_id)
    assert error["custom_id"] == "bad" and error["response"]["status_code"] == 400
    assert error["response"]["body"]["error"]["code"] == "media_decode_failed"
    assert [line["custom_id"] for line in read_lines(sdk, done.output_file_id)] == ["good-1", "good-2"]


def test_responses_lines(sdk: OpenAI) -> None:
    line = {
        "custom_id": "r1",
        "method": "POST",
        "url": "/v1/responses",
        "body": {"model": MODEL, "input": "Say hello.", "max_output_tokens": 8},
    }
    uploaded = sdk.files.create(file=("r.jsonl", jsonl([line])), purpose="batch")
    with pytest.raises(BadRequestError, match="another endpoint"):
        sdk.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h")
    done = finished(
        sdk, sdk.batches.create(input_file_id=uploaded.id, endpoint="/v1/responses", completion_window="24h").id
    )
    [output] = read_lines(sdk, done.output_file_id)
    answer = Response.model_validate(output["response"]["body"])
    assert answer.output_text == "Hello, world!" and answer.store is False


@pytest.mark.parametrize(
    ("line", "says"),
    [
        (b"not json", "line 2: not a JSON object"),
        (json.dumps(chat_line("req-0")).encode(), "line 2: custom_id: 'req-0' is used by an earlier line"),
        (json.dumps({**chat_line("x"), "method": "GET"}).encode(), "line 2: method: must be POST"),
        (json.dumps({**chat_line("x"), "url": "/v1/embeddings"}).encode(), "line 2: url: must be one of"),
        (json.dumps(chat_line("x", max_tokens=0)).encode(), "line 2: max_tokens"),
        (json.dumps(chat_line("x", stream=True)).encode(), "line 2: body.stream"),
        (
            json.dumps({**chat_line("x"), "body": {**chat_line("x")["body"], "model": "other"}}).encode(),
            "line 2: the model 'other'",
        ),
        (
            json.dumps(
                chat_line("x", [{"type": "image_url", "image_url": {"url": "data:image/png;base64,AA"}}] * 4)
            ).encode(),
            "line 2: ",
        ),
    ],
)
def test_every_line_is_checked_on_upload(sdk: OpenAI, line: bytes, says: str) -> None:
    content = json.dumps(chat_line("req-0")).encode() + b"\n" + line + b"\n"
    with pytest.raises(BadRequestError) as info:
        sdk.files.create(file=("b.jsonl", content), purpose="batch")
    assert info.value.param == "file" and says in info.value.message, info.value.message  # type: ignore[attr-defined]
    assert info.value.code == "invalid_batch_file"  # type: ignore[attr-defined]


def test_upload_refusals(app_client: TestClient, sdk: OpenAI) -> None:
    with pytest.raises(BadRequestError, match="purpose"):
        sdk.files.create(file=("b.jsonl", jsonl([chat_line("a")])), purpose="fine-tune")
    assert app_client.post("/v1/files", json={"purpose": "batch"}).status_code == 415
    broken = app_client.post(
        "/v1/files", content=b"--x\r\nnonsense", headers={"content-type": "multipart/form-data; boundary=x"}
    )
    assert broken.status_code == 400 and broken.json()["error"]["code"] == "invalid_upload"
    empty = sdk.files.create
    with pytest.raises(BadRequestError, match="no lines"):
        empty(file=("b.jsonl", b"\n\n"), purpose="batch")


def test_cancel_stops_pending_lines(engine: FakeEngine, sdk: OpenAI) -> None:
    engine.delay_s = 0.05
    lines = [chat_line(f"req-{i}") for i in range(40)]
    uploaded = sdk.files.create(file=("c.jsonl", jsonl(lines)), purpose="batch")
    batch = sdk.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h")
    cancelling = sdk.batches.cancel(batch.id)
    assert cancelling.status in ("cancelling", "cancelled")
    done = finished(sdk, batch.id)
    assert done.status == "cancelled" and done.cancelled_at is not None
    answered = read_lines(sdk, done.output_file_id)
    skipped = read_lines(sdk, done.error_file_id)
    assert len(answered) < 40 and len(answered) + len(skipped) == 40
    assert {line["custom_id"] for line in answered} | {line["custom_id"] for line in skipped} == {
        line["custom_id"] for line in lines
    }
    assert all(line["error"]["code"] == "batch_cancelled" for line in skipped)


def test_files_and_batches_belong_to_their_key(engine: FakeEngine, tmp_path: Path) -> None:
    settings = _settings(tmp_path, api_keys=["key-a", "key-b"])
    with TestClient(create_app(settings, engine=engine), raise_server_exceptions=False) as client:
        owner, other = _sdk(client, "key-a"), _sdk(client, "key-b")
        uploaded = owner.files.create(file=("k.jsonl", jsonl([chat_line("a")])), purpose="batch")
        batch = owner.batches.create(
            input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        for attempt in (
            lambda: other.files.retrieve(uploaded.id),
            lambda: other.files.content(uploaded.id),
            lambda: other.files.delete(uploaded.id),
            lambda: other.batches.retrieve(batch.id),
            lambda: other.batches.cancel(batch.id),
            lambda: other.batches.create(
                input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
            ),
        ):
            with pytest.raises(NotFoundError):
                attempt()
        assert other.files.list().data == [] and other.batches.list().data == []
        assert finished(owner, batch.id).status == "completed"
        assert owner.files.delete(uploaded.id).deleted is True


def test_without_batches(engine: FakeEngine, tmp_path: Path) -> None:
    with (
        TestClient(
            create_app(_settings(tmp_path, batches=False), engine=engine), raise_server_exceptions=False
        ) as client,
        pytest.raises(NotFoundError),
    ):
        _sdk(client).files.list()


def test_an_upload_beyond_the_keys_storage_is_refused(engine: FakeEngine, tmp_path: Path) -> None:
    settings = _settings(tmp_path, batch_storage_per_key_bytes=1 << 20)
    big = jsonl([chat_line(f"r{i}", "x" * 100_000) for i in range(6)])  # ~600 KB
    with TestClient(create_app(settings, engine=engine), raise_server_exceptions=False) as client:
        sdk = _sdk(client)
        first = sdk.files.create(file=("a.jsonl", big), purpose="batch")
        with pytest.raises(BadRequestError) as info:
            sdk.files.create(file=("b.jsonl", big), purpose="batch")
        assert info.value.code == "storage_limit_reached" and "1048576" in info.value.message  # type: ignore[attr-defined]
        sdk.files.delete(first.id)
        sdk.files.create(file=("b.jsonl", big), purpose="batch")


def test_lists_page_newest_first(sdk: OpenAI) -> None:
    made = [sdk.files.create(file=(f"{i}.jsonl", jsonl([chat_line("a")])), purpose="batch").id for i in range(3)]
    first = sdk.files.list(limit=2)
    assert [f.id for f in first.data] == made[:0:-1] and first.has_more
    rest = sdk.files.list(limit=2, after=first.data[-1].id)
    assert [f.id for f in rest.data] == [made[0]] and not rest.has_more
    batches = [
        sdk.batches.create(input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h").id
        for file_id in made
    ]
    page = sdk.batches.list(limit=1)
    assert [b.id for b in page.data] == [batches[-1]] and page.has_more
    assert [b.id for b in sdk.batches.list(limit=5).data] == batches[::-1]
    assert [b.id for b in sdk.batches.list(limit=5, after=batches[1])] == [batches[0]]  # the SDK pages on by itself


def test_an_output_file_is_not_a_batch_input(sdk: OpenAI) -> None:
    uploaded = sdk.files.create(file=("o.jsonl", jsonl([chat_line("a")])), purpose="batch")
    done = finished(
        sdk, sdk.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h").id
    )
    assert done.output_file_id is not None
    with pytest.raises(BadRequestError) as info:
        sdk.batches.create(input_file_id=done.output_file_id, endpoint="/v1/chat/completions", completion_window="24h")
    assert info.value.param == "input_file_id" and "batch_output" in info.value.message  # type: ignore[attr-defined]


def test_generated_hostile_lines_are_400s_and_the_server_stays_healthy(app_client: TestClient, sdk: OpenAI) -> None:
    rng = random.Random(19)
    good = json.dumps(chat_line("ok")).encode()
    hostile = [
        b"[" * 200_000,  # nested past the parser's depth
        b'{"custom_id": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
        b"\xff\xfe not utf-8",
        b"\x00" * 64,
        b'{"custom_id": "x", "method": "POST", "url": "/v1/chat/completions", "body": ' + b"9" * 10_000 + b"}",
        json.dumps(
            {**chat_line("x"), "body": {"model": MODEL, "messages": [{"role": "user", "content": [{"type": "x"}]}]}}
        ).encode(),
    ]
    for _ in range(40):  # good lines with a few bytes changed
        line = bytearray(good)
        for _ in range(rng.randint(1, 6)):
            line[rng.randrange(len(line))] = rng.randrange(256)
        hostile.append(bytes(line).replace(b"\n", b" "))
    refused = 0
    for line in hostile:
        response = app_client.post(
            "/v1/files", files={"file": ("h.jsonl", good + b"\n" + line + b"\n")}, data={"purpose": "batch"}
        )
        assert response.status_code in (200, 400), response.text
        if response.status_code == 400:
            refused += 1
            error = response.json()["error"]
            assert (
                error["code"] == "invalid_batch_file"
                and error["message"].startswith("file: ")
                and "Traceback" not in error["message"]
            )
    assert refused >= len(hostile) - 40  # every hand-made one, at least
    assert app_client.get("/health").status_code == 200
    sdk.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "still here?"}], max_tokens=2)
