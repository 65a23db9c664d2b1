"""``POST /v1/chat/completions/count_tokens`` on the real engine: the count equals what the same body then reports in
``usage`` (image, video, mixed), the media prepared for the count serve the request that follows from the cache, and
the engine's own multimodal cache is left alone (issue 18, item 4)."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from openai import OpenAI
from openai.types.chat import ChatCompletion

from tests.e2e.conftest import LiveServer
from tests.media_factory import data_url, image_bytes, mp4_bytes

pytestmark = pytest.mark.e2e

URL = "/v1/chat/completions/count_tokens"


def _image(seed: int, width: int = 160, height: int = 96) -> dict[str, Any]:
    return {"type": "image_url", "image_url": {"url": data_url(image_bytes(width, height, seed=seed))}}


def _video(seed: int) -> dict[str, Any]:
    clip = mp4_bytes(frames=20, width=128, height=96, fps=10.0, seed=seed)
    return {"type": "video_url", "video_url": {"url": data_url(clip, "video/mp4")}}


def _metric(server: LiveServer, name: str, **labels: str) -> float:
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in httpx.get(f"{server.base_url}/metrics", timeout=30).text.splitlines():
        if line.startswith(f"{name}{{{want}}} "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def _count(server: LiveServer, body: dict[str, Any]) -> dict[str, Any]:
    response = httpx.post(f"{server.base_url}{URL}", json=body, timeout=120)
    assert response.status_code == 200, response.text
    found: dict[str, Any] = response.json()
    assert found["object"] == "chat.completion.token_count" and found["model"] == server.model
    return found


@pytest.mark.parametrize(
    "content",
    [
        [_image(41), {"type": "text", "text": "What is in the picture?"}],
        [_video(42), {"type": "text", "text": "What happens?"}],
        [_image(43, 224, 160), _video(44), _image(45, 96, 96), {"type": "text", "text": "Compare them."}],
    ],
    ids=["image", "video", "mixed"],
)
def test_the_count_is_what_the_request_then_reports(dense_server: LiveServer, content: list[dict[str, Any]]) -> None:
    body: dict[str, Any] = {"model": dense_server.model, "messages": [{"role": "user", "content": content}]}
    hits = _metric(dense_server, "qwen3vl_media_cache_requests_total", cache="prepared", result="hit")
    counted = _count(dense_server, body)
    assert counted["max_model_len"] == 4096
    details = counted["prompt_tokens_details"]
    images, videos = (sum(1 for part in content if part["type"] == kind) for kind in ("image_url", "video_url"))
    assert (details["image_tokens"] > 0) == (images > 0) and (details["video_tokens"] > 0) == (videos > 0)
    assert counted["prompt_tokens"] > details["image_tokens"] + details["video_tokens"]

    client = OpenAI(base_url=f"{dense_server.base_url}/v1", api_key="unused", timeout=120, max_retries=0)
    raw = client.chat.completions.with_raw_response.create(**body, max_tokens=2, temperature=0)
    usage = ChatCompletion.model_validate_json(raw.text).usage
    assert usage is not None and usage.prompt_tokens == counted["prompt_tokens"]
    sent = json.loads(raw.text)["usage"]["prompt_tokens_details"]
    assert (sent.get("image_tokens", 0), sent.get("video_tokens", 0)) == (
        details["image_tokens"],
        details["video_tokens"],
    )
    # The request after the count found every item the count prepared in the media cache.
    after = _metric(dense_server, "qwen3vl_media_cache_requests_total", cache="prepared", result="hit")
    assert after - hits == images + videos
    # The count skipped vLLM's multimodal cache (its entries mirror the engine core's): counting again, then asking
    # again, still works and agrees.
    assert _count(dense_server, body)["prompt_tokens"] == counted["prompt_tokens"]
    again = client.chat.completions.create(**body, max_tokens=2, temperature=0)
    assert again.usage is not None and again.usage.prompt_tokens == counted["prompt_tokens"]


def test_a_bad_body_is_refused_like_chat(dense_server: LiveServer) -> None:
    content = [_image(n) for n in range(5)]  # the server allows 4 images per request
    response = httpx.post(
        f"{dense_server.base_url}{URL}",
        json={"model": dense_server.model, "messages": [{"role": "user", "content": content}]},
        timeout=60,
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "too_many_media_items"


def test_an_image_in_a_tool_result_reaches_the_model(dense_server: LiveServer) -> None:
    """Issue 18, item 3: a tool's answer with a crop in it, rendered in Qwen's <tool_response> like a user's image."""
    call = {"id": "c1", "type": "function", "function": {"name": "zoom", "arguments": '{"box": [0, 0, 8, 8]}'}}
    crop = _image(46, 128, 128)

    def conversation(result: Any) -> dict[str, Any]:
        return {
            "model": dense_server.model,
            "messages": [
                {"role": "user", "content": [_image(47), {"type": "text", "text": "Zoom into the corner."}]},
                {"role": "assistant", "content": None, "tool_calls": [call]},
                {"role": "tool", "tool_call_id": "c1", "content": result},
            ],
        }

    text_only = _count(dense_server, conversation([{"type": "text", "text": "the crop:"}]))
    with_crop = _count(dense_server, conversation([{"type": "text", "text": "the crop:"}, crop]))
    crop_tokens = (
        with_crop["prompt_tokens_details"]["image_tokens"] - text_only["prompt_tokens_details"]["image_tokens"]
    )
    assert crop_tokens > 0
    # The crop adds its visual tokens and the vision start/end markers around them, nothing else.
    assert with_crop["prompt_tokens"] - text_only["prompt_tokens"] == crop_tokens + 2
    client = OpenAI(base_url=f"{dense_server.base_url}/v1", api_key="unused", timeout=120, max_retries=0)
    completion = client.chat.completions.create(
        **conversation([{"type": "text", "text": "the crop:"}, crop]), max_tokens=2, temperature=0
    )
    assert completion.usage is not None and completion.usage.prompt_tokens == with_crop["prompt_tokens"]
