from __future__ import annotations

import json
from typing import Any

import pytest
from fastapi.testclient import TestClient
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from server.app import create_app
from server.config import Settings
from server.engine.fake import FakeEngine
from server.errors import EngineError
from tests.api.conftest import AssetServer
from tests.media_factory import data_url, image_bytes, mp4_bytes

MODEL = "fake-qwen3vl"
IMAGE = data_url(image_bytes())


def chat(client: TestClient, **body: Any) -> Any:
    body.setdefault("model", MODEL)
    return client.post("/v1/chat/completions", json=body)


def user(*parts: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"role": "user", "content": list(parts)}]


def text(value: str) -> dict[str, Any]:
    return {"type": "text", "text": value}


def assert_openai_error(
    response: Any, status: int, *, param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code", "request_id"}
    assert error["request_id"] == response.headers["x-request-id"]
    assert error["message"] and "Traceback" not in error["message"]
    if param is not None:
        assert error["param"] == param
    if code is not None:
        assert error["code"] == code
    return dict(error)


def stream_events(response: Any) -> list[str]:
    return [line[len("data: ") :] for line in response.text.splitlines() if line.startswith("data: ")]


# --- happy paths -------------------------------------------------------------------------------------------------------


def test_text_only_completion(client: TestClient, engine: FakeEngine) -> None:
    response = chat(client, messages=[{"role": "user", "content": "Hi there"}])
    assert response.status_code == 200, response.text
    completion = ChatCompletion.model_validate(response.json())
    assert completion.model == MODEL
    # The answer is what the engine generated, all of it (it stopped on its own), counted token by token.
    assert completion.choices[0].message.content == "".join(engine.script)
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None
    assert completion.usage.completion_tokens == len(engine.script)
    assert completion.usage.total_tokens == completion.usage.prompt_tokens + completion.usage.completion_tokens


@pytest.mark.parametrize(
    "part",
    [
        {"type": "image_url", "image_url": {"url": IMAGE}},
        {"type": "image_url", "image_url": {"url": IMAGE, "detail": "high"}},
        {"type": "image", "image": IMAGE},
    ],
)
def test_image_shapes(client: TestClient, engine: FakeEngine, part: dict[str, Any]) -> None:
    response = chat(client, messages=user(part, text("What is this?")))
    completion = ChatCompletion.model_validate(response.json())
    request = engine.requests[-1]
    assert len(request.images) == 1 and request.images_resized
    assert request.images[0].shape == (64, 64, 3)  # 64×48 on the Qwen grid: smart_resize(48, 64, 32) → 64×64
    assert engine.rendered[-1][0]["content"] == [{"type": "image"}, {"type": "text", "text": "What is this?"}]
    assert completion.usage is not None
    # The image's tokens are counted in the prompt: more than the same request without it.
    without = ChatCompletion.model_validate(chat(client, messages=user(text("What is this?"))).json())
    assert without.usage is not None and completion.usage.prompt_tokens > without.usage.prompt_tokens


@pytest.mark.parametrize("shape", ["video_url", "video"])
def test_video_file_shapes(client: TestClient, engine: FakeEngine, shape: str) -> None:
    url = data_url(mp4_bytes(frames=20, fps=10.0), "video/mp4")
    part = {"type": "video_url", "video_url": {"url": url}} if shape == "video_url" else {"type": "video", "video": url}
    response = chat(client, messages=user(part, text("Describe.")))
    assert response.status_code == 200, response.text
    video = engine.requests[-1].videos[0]
    assert video.frames.shape == (4, 96, 128, 3)
    assert video.total_num_frames == 20
    without = chat(client, messages=user(text("Describe."))).json()  # the video's tokens are counted in the prompt
    assert response.json()["usage"]["prompt_tokens"] > without["usage"]["prompt_tokens"]


def test_video_frame_list(client: TestClient, engine: FakeEngine) -> None:
    frames = [data_url(image_bytes(32, 32, seed=i)) for i in range(3)]
    response = chat(client, messages=user({"type": "video", "video": frames, "sample_fps": 1.0}, text("Describe.")))
    assert response.status_code == 200, response.text
    video = engine.requests[-1].videos[0]
    # padded to an even count, each frame decoded straight to the processor's grid (32×32 is under its minimum)
    assert video.frames.shape == (4, 64, 64, 3)
    assert video.fps == 1.0


def test_multi_image_multi_turn_and_image_plus_video(client: TestClient, engine: FakeEngine) -> None:
    video = data_url(mp4_bytes(frames=10, fps=5.0), "video/mp4")
    messages = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": IMAGE}}, text("First?")]},
        {"role": "assistant", "content": "A picture."},
        {
            "role": "user",
            "content": [
                {"type": "image_url", "image_url": {"url": data_url(image_bytes(16, 16, seed=3))}},
                {"type": "video_url", "video_url": {"url": video}},
                text("And these?"),
            ],
        },
    ]
    response = chat(client, messages=messages)
    assert response.status_code == 200, response.text
    request = engine.requests[-1]
    assert [im.shape for im in request.images] == [
        (64, 64, 3),
        (64, 64, 3),
    ]  # 16×16 is raised to the 4096-pixel minimum
    assert len(request.videos) == 1
    rendered = engine.rendered[-1]
    assert [m["role"] for m in rendered] == ["system", "user", "assistant", "user"]


def test_sampling_fields_reach_the_engine_and_unset_ones_stay_unset(client: TestClient, engine: FakeEngine) -> None:
    chat(
        client, messages=[{"role": "user", "content": "x"}], temperature=0.2, top_k=5, seed=7, stop=["!"], max_tokens=3
    )
    spec = engine.requests[-1].sampling
    assert (spec.temperature, spec.top_k, spec.seed, spec.stop, spec.max_tokens) == (0.2, 5, 7, ("!",), 3)
    assert spec.top_p is None and spec.presence_penalty is None  # the checkpoint's generation_config decides
    chat(client, messages=[{"role": "user", "content": "x"}], max_completion_tokens=2)
    assert engine.requests[-1].sampling.max_tokens == 2


def test_length_finish_reason(client: TestClient) -> None:
    response = chat(client, messages=[{"role": "user", "content": "x"}], max_tokens=2)
    completion = ChatCompletion.model_validate(response.json())
    assert completion.choices[0].finish_reason == "length"
    assert completion.choices[0].message.content == "Hello,"


def test_n_choices(client: TestClient) -> None:
    completion = ChatCompletion.model_validate(chat(client, messages=[{"role": "user", "content": "x"}], n=3).json())
    assert [c.index for c in completion.choices] == [0, 1, 2]
    assert completion.usage is not None and completion.usage.completion_tokens == 12


# --- streaming ---------------------------------------------------------------------------------------------------------


def test_stream_matches_non_stream_with_usage(client: TestClient) -> None:
    messages = user({"type": "image_url", "image_url": {"url": IMAGE}}, text("Hi"))
    plain = ChatCompletion.model_validate(chat(client, messages=messages).json())
    response = chat(client, messages=messages, stream=True, stream_options={"include_usage": True})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    events = stream_events(response)
    assert events[-1] == "[DONE]"
    chunks = [ChatCompletionChunk.model_validate(json.loads(e)) for e in events[:-1]]
    assert len({c.id for c in chunks}) == 1
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finishes = [ch.finish_reason for c in chunks for ch in c.choices if ch.finish_reason]
    assert content == plain.choices[0].message.content
    assert finishes == ["stop"]
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert plain.usage is not None and plain.usage.prompt_tokens_details is not None
    assert chunks[-1].usage.prompt_tokens_details is not None
    # Asked again, the same prompt is found in the (fake) prefix cache: all else in the usage is the same.
    assert plain.usage.prompt_tokens_details.cached_tokens == 0
    assert chunks[-1].usage.prompt_tokens_details.cached_tokens > 0
    same = {"prompt_tokens_details": {"cached_tokens"}}
    assert chunks[-1].usage.model_dump(exclude=same) == plain.usage.model_dump(exclude=same)
    assert all(c.usage is None for c in chunks[:-1])


def test_stream_without_usage_has_no_usage_chunk(client: TestClient) -> None:
    events = stream_events(chat(client, messages=[{"role": "user", "content": "x"}], stream=True))
    chunks = [json.loads(e) for e in events[:-1]]
    assert all(c["choices"] for c in chunks)
    assert "role" not in chunks[1]["choices"][0]["delta"]  # unset delta fields are left out, as OpenAI does


def test_stream_error_before_first_token_is_a_plain_http_error(client: TestClient) -> None:
    response = chat(client, messages=[{"role": "user", "content": "x"}], stream=True, max_tokens=100_000)
    assert_openai_error(response, 400, param="max_tokens", code="context_length_exceeded")


def test_stream_error_mid_stream_is_an_error_event_then_done(engine: FakeEngine, client: TestClient) -> None:
    engine.fail_after = 2
    engine.fail_with = EngineError("the inference engine failed on this request")
    events = stream_events(chat(client, messages=[{"role": "user", "content": "x"}], stream=True))
    assert events[-1] == "[DONE]"
    error = json.loads(events[-2])
    assert error["error"]["code"] == "engine_error"
    assert len(events) >= 4  # role chunk, two tokens, error, done


def test_an_engine_stream_cut_off_under_a_request_is_an_error_not_a_quiet_end(
    engine: FakeEngine, client: TestClient
) -> None:
    # The engine shut down mid-request and its stream simply ended: no finish reason ever came.
    engine.vanish_after = 2
    events = stream_events(chat(client, messages=[{"role": "user", "content": "x"}], stream=True))
    assert events[-1] == "[DONE]"
    assert json.loads(events[-2])["error"]["code"] == "engine_unavailable"
    assert_openai_error(chat(client, messages=[{"role": "user", "content": "x"}]), 503, code="engine_unavailable")
    engine.vanish_after = None
    assert chat(client, messages=[{"role": "user", "content": "x"}]).status_code == 200


# --- errors ------------------------------------------------------------------------------------------------------------


def test_unknown_model_is_404(client: TestClient) -> None:
    assert_openai_error(chat(client, model="gpt-4o", messages=[{"role": "user", "content": "x"}]), 404, param="model")


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "robot", "content": "x"}]}, "messages[0].role"),
        ({"messages": [{"role": "user", "content": []}]}, "messages[0]"),
        ({"messages": [{"role": "user", "content": "x"}], "temperature": 5}, "temperature"),
        ({"messages": [{"role": "user", "content": "x"}], "max_tokens": 0}, "max_tokens"),
        ({"messages": [{"role": "user", "content": "x"}], "n": 100}, "n"),
        ({"messages": [{"role": "user", "content": [{"type": "audio", "audio": "x"}]}]}, "messages[0].content[0]"),
        ({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, "messages[0].content[0].image_url"),
        ({"messages": [{"role": "user", "content": [{"type": "text"}]}]}, "messages[0].content[0].text"),
        (
            {"messages": [{"role": "user", "content": [{"type": "video_url", "video_url": {"url": "x"}, "fps": -1}]}]},
            "messages[0].content[0].fps",
        ),
    ],
)
def test_validation_errors_are_400_naming_the_field(client: TestClient, body: dict[str, Any], param: str) -> None:
    error = assert_openai_error(chat(client, **body), 400, param=param, code="invalid_value")
    assert error["message"].startswith(f"{param}: ")


def test_missing_model_and_bad_json(client: TestClient) -> None:
    assert_openai_error(client.post("/v1/chat/completions", json={"messages": []}), 400)
    response = client.post("/v1/chat/completions", content=b"{not json", headers={"content-type": "application/json"})
    assert_openai_error(response, 400, code="invalid_json")


def test_media_in_assistant_message_refused(client: TestClient) -> None:
    messages = [{"role": "assistant", "content": [{"type": "image_url", "image_url": {"url": IMAGE}}]}]
    error = assert_openai_error(chat(client, messages=messages), 400)
    assert "only text" in error["message"]


@pytest.mark.parametrize(
    ("url", "code"),
    [
        ("data:image/png;base64,AAAA", "media_decode_failed"),
        ("data:image/png;base64,@@@", "media_decode_failed"),
        ("ftp://example.com/a.png", "media_blocked"),
        ("http://127.0.0.1:9/none.png", "media_blocked"),
        ("http://169.254.169.254/latest/meta-data", "media_blocked"),
        (data_url(image_bytes(400, 400, seed=1)), "media_too_large"),
    ],
)
def test_bad_media_is_400_naming_the_part(client: TestClient, engine: FakeEngine, url: str, code: str) -> None:
    messages = user(text("look"), {"type": "image_url", "image_url": {"url": url}})
    error = assert_openai_error(chat(client, messages=messages), 400, code=code)
    assert error["param"] == "messages[0].content[1].image_url"
    assert "0x" not in error["message"]
    assert engine.requests == []  # never reached the engine
    assert client.get("/health").status_code == 200


def test_bad_video_is_400(client: TestClient) -> None:
    messages = user({"type": "video_url", "video_url": {"url": "data:video/mp4;base64,AAAAAAAA"}})
    assert_openai_error(chat(client, messages=messages), 400, param="messages[0].content[0].video_url")


def test_too_many_images_refused_before_any_fetch(private_client: TestClient, assets: AssetServer) -> None:
    url = assets.add("/a.png", image_bytes())
    parts = [{"type": "image_url", "image_url": {"url": url}} for _ in range(4)]
    assert_openai_error(chat(private_client, messages=user(*parts)), 400, code="too_many_media_items")
    assert assets.hits == []
    assert chat(private_client, messages=user(*parts[:3])).status_code == 200
    assert assets.hits == ["/a.png"]  # three parts, one URL: fetched once


def test_loopback_asset_server_is_never_hit_by_default(client: TestClient, assets: AssetServer) -> None:
    url = assets.add("/a.png", image_bytes())
    error = assert_openai_error(
        chat(client, messages=user({"type": "image_url", "image_url": {"url": url}})), 400, code="media_blocked"
    )
    assert "127.0.0.1" not in error["message"]
    assert assets.hits == []
    assert chat(client, messages=user({"type": "image_url", "image_url": {"url": IMAGE}})).status_code == 200


def test_redirect_to_loopback_is_refused(engine: FakeEngine, assets: AssetServer) -> None:
    """Even with private addresses allowed for the origin, a redirect to a blocked host fails its own check."""
    from fastapi.testclient import TestClient as _Client

    settings = Settings(warmup=False, media_allow_loopback=True, media_denied_domains=["localhost"])
    target = assets.add("/secret.png", image_bytes())
    start = assets.add("/start", b"", status=302, headers={"Location": target.replace("127.0.0.1", "localhost")})
    with _Client(create_app(settings, engine=engine), raise_server_exceptions=False) as c:
        assert_openai_error(
            chat(c, messages=user({"type": "image_url", "image_url": {"url": start}})), 400, code="media_blocked"
        )
    assert assets.hits == ["/start"]


def test_engine_failure_is_500_in_openai_format_and_server_stays_up(engine: FakeEngine, client: TestClient) -> None:
    engine.fail_with = EngineError("the inference engine failed on this request")
    assert_openai_error(chat(client, messages=[{"role": "user", "content": "x"}]), 500, code="engine_error")
    engine.fail_with = None
    assert chat(client, messages=[{"role": "user", "content": "x"}]).status_code == 200


def test_dead_engine_is_503(engine: FakeEngine, client: TestClient) -> None:
    engine.dead = True
    assert_openai_error(chat(client, messages=[{"role": "user", "content": "x"}]), 503, code="engine_unavailable")


def test_image_over_http(private_client: TestClient, engine: FakeEngine, assets: AssetServer) -> None:
    url = assets.add("/pic.png", image_bytes(20, 10), headers={"Content-Type": "image/png"})
    response = chat(private_client, messages=user({"type": "image_url", "image_url": {"url": url}}))
    assert response.status_code == 200, response.text
    assert engine.requests[-1].images[0].shape == (64, 96, 3)  # 20×10 raised to the minimum budget on the 32-px grid


def test_cached_tokens_come_from_the_engine(client: TestClient, engine: FakeEngine) -> None:
    messages = user({"type": "image_url", "image_url": {"url": IMAGE}}, text("the same prompt twice"))
    first, second = (ChatCompletion.model_validate(chat(client, messages=messages).json()) for _ in range(2))
    assert first.usage is not None and first.usage.prompt_tokens_details is not None
    assert second.usage is not None and second.usage.prompt_tokens_details is not None
    assert first.usage.prompt_tokens_details.cached_tokens == 0
    expected = engine.cached_tokens(engine.requests[-1], second.usage.prompt_tokens)
    assert second.usage.prompt_tokens_details.cached_tokens == expected > 0
