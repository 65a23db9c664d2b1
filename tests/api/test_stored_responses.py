"""Stored responses over the fake engine (issue 18, item 2): ``store`` keeps a response in the SQLite file,
``GET``/``DELETE /v1/responses/{id}`` read and remove it, ``previous_response_id`` continues its conversation (images
included), and every one of them is scoped to the API key that created the response."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from openai import BadRequestError, NotFoundError, OpenAI
from openai.types.responses import Response

from server.app import create_app
from server.config import Settings
from server.engine.fake import FakeEngine
from tests.api.shaping import TOOLS, TWO_CALLS, script
from tests.media_factory import data_url, image_bytes

MODEL = "fake-qwen3vl"
FUNCTIONS = [{"type": "function", **tool["function"]} for tool in TOOLS]


def _settings(path: Path, **extra: Any) -> Settings:
    return Settings(warmup=False, limit_mm_per_prompt={"image": 3, "video": 1}, responses_store_path=path, **extra)


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "state" / "responses.sqlite3"


@pytest.fixture
def keyed(engine: FakeEngine, db: Path) -> Iterator[TestClient]:
    app = create_app(_settings(db, api_keys=["key-a", "key-b"]), engine=engine)
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


def _sdk(client: TestClient, key: str = "unused") -> OpenAI:
    return OpenAI(base_url="http://testserver/v1", api_key=key, http_client=client, max_retries=0)


@pytest.fixture
def sdk(engine: FakeEngine, db: Path) -> Iterator[OpenAI]:
    with TestClient(create_app(_settings(db), engine=engine), raise_server_exceptions=False) as client:
        yield _sdk(client)


def test_a_stored_response_is_read_back_as_answered_and_survives_a_restart(
    sdk: OpenAI, engine: FakeEngine, db: Path
) -> None:
    answer = sdk.responses.create(model=MODEL, input="Say hello.", metadata={"run": "1"})
    assert answer.store is True and db.is_file()
    assert sdk.responses.retrieve(answer.id) == answer
    with TestClient(create_app(_settings(db), engine=engine), raise_server_exceptions=False) as again:
        assert _sdk(again).responses.retrieve(answer.id) == answer  # the file, not the process, holds it


def test_store_false_keeps_nothing(sdk: OpenAI) -> None:
    answer = sdk.responses.create(model=MODEL, input="hi", store=False)
    assert answer.store is False
    with pytest.raises(NotFoundError):
        sdk.responses.retrieve(answer.id)
    with pytest.raises(NotFoundError) as info:
        sdk.responses.create(model=MODEL, input="again", previous_response_id=answer.id)
    assert info.value.body["param"] == "previous_response_id"  # type: ignore[index]


def test_a_conversation_continues_with_its_image_and_without_earlier_instructions(
    sdk: OpenAI, engine: FakeEngine
) -> None:
    picture = {"type": "input_image", "image_url": data_url(image_bytes(48, 48, seed=9))}
    first = sdk.responses.create(
        model=MODEL,
        input=[{"role": "user", "content": [{"type": "input_text", "text": "Look."}, picture]}],  # type: ignore[list-item]
        instructions="Be terse.",
    )
    second = sdk.responses.create(model=MODEL, input="And now?", previous_response_id=first.id, instructions="Be kind.")
    assert second.previous_response_id == first.id
    rendered = engine.rendered[-1]
    assert [m["role"] for m in rendered] == ["system", "user", "assistant", "user"]
    assert rendered[0]["content"] == "Be kind."  # OpenAI's rule: instructions are not carried over
    assert [p["type"] for p in rendered[1]["content"]] == ["text", "image"]
    assert rendered[2]["content"] == [{"type": "text", "text": first.output_text}]
    assert len(engine.requests[-1].images) == 1
    third = sdk.responses.create(model=MODEL, input="Once more.", previous_response_id=second.id)
    assert [m["role"] for m in engine.rendered[-1]] == ["user", "assistant", "user", "assistant", "user"]
    assert third.usage is not None and second.usage is not None
    assert third.usage.input_tokens > second.usage.input_tokens


def test_function_calls_are_continued_by_their_outputs(sdk: OpenAI, engine: FakeEngine) -> None:
    script(engine, TWO_CALLS)
    first = sdk.responses.create(model=MODEL, input="weather and time?", tools=FUNCTIONS)  # type: ignore[arg-type]
    calls = [item for item in first.output if item.type == "function_call"]
    engine.script_parts = None
    outputs: list[Any] = [
        {"type": "function_call_output", "call_id": calls[0].call_id, "output": "sunny"},
        {"type": "function_call_output", "call_id": calls[1].call_id, "output": "noon"},
    ]
    sdk.responses.create(model=MODEL, input=outputs, previous_response_id=first.id, tools=FUNCTIONS)  # type: ignore[arg-type]
    rendered = engine.rendered[-1]
    assert [m["role"] for m in rendered] == ["user", "assistant", "tool", "tool"]
    assert rendered[1]["content"] == [{"type": "text", "text": "Let me check."}]
    assert [c["function"]["arguments"] for c in rendered[1]["tool_calls"]] == [
        {"city": "Paris"},
        {"tz": "CET"},
    ]


def test_a_streamed_response_is_stored_before_its_last_event(sdk: OpenAI) -> None:
    with sdk.responses.stream(model=MODEL, input="Say hello.") as stream:
        [completed] = [event for event in stream if event.type == "response.completed"]
        final = completed.response
    assert sdk.responses.retrieve(final.id).model_dump(exclude_none=True) == Response.model_validate(
        final.model_dump()
    ).model_dump(exclude_none=True)
    follow = sdk.responses.create(model=MODEL, input="more", previous_response_id=final.id)
    assert follow.status == "completed"


def test_delete_and_a_broken_conversation(sdk: OpenAI) -> None:
    first = sdk.responses.create(model=MODEL, input="one")
    second = sdk.responses.create(model=MODEL, input="two", previous_response_id=first.id)
    sdk.responses.delete(first.id)
    with pytest.raises(NotFoundError):
        sdk.responses.retrieve(first.id)
    with pytest.raises(NotFoundError):
        sdk.responses.delete(first.id)
    assert sdk.responses.retrieve(second.id).id == second.id
    with pytest.raises(NotFoundError) as info:
        sdk.responses.create(model=MODEL, input="three", previous_response_id=second.id)
    body = info.value.body
    assert isinstance(body, dict) and body["param"] == "previous_response_id" and first.id in body["message"]


def test_another_key_finds_nothing(keyed: TestClient) -> None:
    owner, other = _sdk(keyed, "key-a"), _sdk(keyed, "key-b")
    mine = owner.responses.create(model=MODEL, input="secret")
    with pytest.raises(NotFoundError):
        other.responses.retrieve(mine.id)
    with pytest.raises(NotFoundError):
        other.responses.delete(mine.id)
    with pytest.raises(NotFoundError):
        other.responses.create(model=MODEL, input="and?", previous_response_id=mine.id)
    assert owner.responses.retrieve(mine.id).id == mine.id  # the other key's tries changed nothing
    assert keyed.get(f"/v1/responses/{mine.id}").status_code == 401  # no key at all: not even a 404
    owner.responses.delete(mine.id)
    with pytest.raises(NotFoundError):
        owner.responses.retrieve(mine.id)


def test_without_a_store(engine: FakeEngine, tmp_path: Path) -> None:
    settings = _settings(tmp_path / "never.sqlite3", responses_store=False)
    with TestClient(create_app(settings, engine=engine), raise_server_exceptions=False) as client:
        sdk = _sdk(client)
        answer = sdk.responses.create(model=MODEL, input="hi")
        assert answer.store is False and not settings.responses_store_file.exists()
        with pytest.raises(NotFoundError):
            sdk.responses.retrieve(answer.id)
        with pytest.raises(BadRequestError) as info:
            sdk.responses.create(model=MODEL, input="hi", previous_response_id=answer.id)
        assert info.value.param == "previous_response_id"  # type: ignore[attr-defined]


@pytest.mark.parametrize("hostile", ["' OR 1=1 --", "x" * 5000, "%00", "..%2F..%2Fetc", "resp_" + "\u202e" * 8])
def test_hostile_ids_are_plain_404s(sdk: OpenAI, hostile: str) -> None:
    sdk.responses.create(model=MODEL, input="present")
    with pytest.raises(NotFoundError) as info:
        sdk.responses.retrieve(hostile)
    assert len(str(info.value.body)) < 400  # an id is echoed at most 64 characters long


def test_a_retrieved_stream_is_refused(sdk: OpenAI) -> None:
    answer = sdk.responses.create(model=MODEL, input="hi")
    raw = sdk.get(f"/responses/{answer.id}", cast_to=object)
    Response.model_validate(raw)
    with pytest.raises(BadRequestError):
        sdk.get(f"/responses/{answer.id}?stream=true", cast_to=object)


def test_a_store_that_cannot_open_fails_the_start_naming_the_flag(engine: FakeEngine, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    app = create_app(_settings(blocker / "responses.sqlite3"), engine=engine)
    with pytest.raises(RuntimeError, match="--responses-store-path"), TestClient(app):
        pass
