"""Stored responses on the real engine through the official openai SDK (issue 18, item 2): a conversation continued by
``previous_response_id`` with an image in its first turn, and the API-key isolation of stored responses. The server
here has two API keys, so it is its own (module-scoped) server beside the session's keyless one."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from openai import NotFoundError, OpenAI

from offline.tiny import cached_checkpoint
from server.config import Settings
from tests.e2e.conftest import LiveServer, serve
from tests.media_factory import data_url, image_bytes

pytestmark = pytest.mark.e2e

KEYS = ("key-alpha", "key-beta")


@pytest.fixture(scope="module")
def keyed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    settings = Settings(
        max_model_len=4096,
        enforce_eager=True,
        kv_cache_memory_bytes=1 << 30,
        limit_mm_per_prompt={"image": 4, "video": 1},
        media_image_max_pixels=1024 * 1024,
        warmup=False,
        api_keys=list(KEYS),
        responses_store_path=tmp_path_factory.mktemp("store") / "responses.sqlite3",
    )
    with serve(settings, cached_checkpoint(moe=False)) as server:
        yield server


def _sdk(server: LiveServer, key: str) -> OpenAI:
    return OpenAI(base_url=f"{server.base_url}/v1", api_key=key, timeout=120, max_retries=0)


def test_a_conversation_continues_with_the_image_of_its_first_turn(keyed_server: LiveServer) -> None:
    sdk = _sdk(keyed_server, KEYS[0])
    picture = data_url(image_bytes(448, 448, seed=61))  # ~200 visual tokens: whole cache blocks
    look: list[Any] = [{"type": "input_text", "text": "Look."}, {"type": "input_image", "image_url": picture}]
    first = sdk.responses.create(
        model=keyed_server.model, input=[{"role": "user", "content": look}], max_output_tokens=5, temperature=0
    )
    second = sdk.responses.create(
        model=keyed_server.model,
        input="And the colours?",
        previous_response_id=first.id,
        max_output_tokens=5,
        temperature=0,
    )
    assert second.previous_response_id == first.id and first.store and second.store
    # The second turn's prompt is exactly the chat body of the whole conversation, the first turn's image included.
    messages = [
        {
            "role": "user",
            "content": [{"type": "text", "text": "Look."}, {"type": "image_url", "image_url": {"url": picture}}],
        },
        {"role": "assistant", "content": first.output_text},
        {"role": "user", "content": "And the colours?"},
    ]
    counted = sdk.post(
        "/chat/completions/count_tokens", body={"model": keyed_server.model, "messages": messages}, cast_to=object
    )
    assert isinstance(counted, dict) and counted["prompt_tokens_details"]["image_tokens"] > 0
    assert second.usage is not None and first.usage is not None
    assert second.usage.input_tokens == counted["prompt_tokens"]
    assert second.usage.input_tokens > first.usage.input_tokens + first.usage.output_tokens
    # A repeated conversation prefix is served from vLLM's prefix cache, and the usage says so.
    assert second.usage.input_tokens_details.cached_tokens > 0
    assert sdk.responses.retrieve(second.id).output_text == second.output_text


def test_a_stored_response_belongs_to_its_key(keyed_server: LiveServer) -> None:
    owner, other = _sdk(keyed_server, KEYS[0]), _sdk(keyed_server, KEYS[1])
    mine = owner.responses.create(model=keyed_server.model, input="private", max_output_tokens=3)
    for attempt in (
        lambda: other.responses.retrieve(mine.id),
        lambda: other.responses.delete(mine.id),
        lambda: other.responses.create(
            model=keyed_server.model, input="more", previous_response_id=mine.id, max_output_tokens=3
        ),
    ):
        with pytest.raises(NotFoundError):
            attempt()
    follow = owner.responses.create(
        model=keyed_server.model, input="more", previous_response_id=mine.id, max_output_tokens=3
    )
    assert follow.status in ("completed", "incomplete")
    owner.responses.delete(mine.id)
    with pytest.raises(NotFoundError):
        owner.responses.retrieve(mine.id)


def test_the_store_is_the_configured_file(keyed_server: LiveServer) -> None:
    path: Path = keyed_server.app.state.qwen3vl.settings.responses_store_file
    assert path.is_file() and path.stat().st_size > 0
