"""Video limits read from the stream header (before any frame is decoded) and media caches scoped per API key."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from server.app import create_app
from server.config import Settings
from server.engine.fake import FakeEngine
from tests.api.conftest import AssetServer
from tests.api.test_chat import assert_openai_error, chat, user
from tests.hostile_media import encode_video
from tests.media_factory import data_url, image_bytes


def video(data: bytes) -> dict[str, Any]:
    return {"type": "video_url", "video_url": {"url": data_url(data, "video/mp4")}}


@pytest.fixture
def strict(engine: FakeEngine) -> Iterator[TestClient]:
    settings = Settings(
        warmup=False,
        media_max_video_frame_pixels=64 * 64,
        media_max_video_source_fps=30,
        media_max_video_source_frames=100,
        media_max_video_duration=5,
    )
    with TestClient(create_app(settings, engine=engine), raise_server_exceptions=False) as client:
        yield client


@pytest.mark.parametrize(
    ("clip", "code", "words"),
    [
        ({"width": 128, "height": 96}, "media_too_large", "128x96 frames; the limit is 4096 pixels per frame"),
        ({"fps": 60, "frames": 12}, "media_unsupported", "60 frames per second; the limit is 30"),
        ({"fps": 25, "frames": 150}, "media_too_large", "lasts 6.0 s; the limit is 5 s"),
    ],
)
def test_video_headers_are_checked_before_decoding(
    strict: TestClient, engine: FakeEngine, clip: dict[str, int], code: str, words: str
) -> None:
    shape = {"width": 64, "height": 64, "frames": 12, "fps": 10, **clip}
    response = chat(strict, messages=user(video(encode_video(**shape))))
    error = assert_openai_error(response, 400, code=code, param="messages[0].content[0].video_url")
    assert words in error["message"]
    assert engine.requests == []
    assert chat(strict, messages=user(video(encode_video(width=64, height=64)))).status_code == 200


def test_media_caches_are_per_api_key(engine: FakeEngine, assets: AssetServer) -> None:
    """A key cannot hit (or time, through Server-Timing) what another key fetched and prepared."""
    settings = Settings(warmup=False, api_keys=["sk-alice", "sk-bob"], media_allow_loopback=True)
    url = assets.add("/shared.png", image_bytes(120, 80, seed=3))
    part = {"type": "image_url", "image_url": {"url": url}}
    with TestClient(create_app(settings, engine=engine), raise_server_exceptions=False) as client:
        for key in ("sk-alice", "sk-alice", "sk-bob", "sk-bob"):
            body = {"model": engine.model_name, "messages": user(part)}
            response = client.post("/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"})
            assert response.status_code == 200, response.text
    assert assets.hits == ["/shared.png", "/shared.png"]  # fetched once per key, never shared across keys
    alice, alice_again, bob, _ = (r.image_uuids[0] for r in engine.requests)
    assert alice == alice_again and alice != bob  # vLLM's own processor cache is keyed per key too
