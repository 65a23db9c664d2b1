"""End-to-end: the official openai SDK against the real app on the real vLLM engine with the tiny checkpoint.

Random weights make the text gibberish, so these tests check structure, token accounting, determinism at temperature 0
and stream == non-stream, never content.
"""

from __future__ import annotations

import io
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import numpy as np
import psutil
import pytest
from openai import BadRequestError, NotFoundError
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from PIL import Image

from tests.e2e.conftest import LiveServer, live_server
from tests.media_factory import data_url, image_bytes, mp4_bytes, noise_image

pytestmark = pytest.mark.e2e


def complete(server: LiveServer, messages: list[dict[str, Any]], **kwargs: Any) -> ChatCompletion:
    raw = server.client().chat.completions.with_raw_response.create(model=server.model, messages=messages, **kwargs)  # type: ignore[arg-type]
    completion = ChatCompletion.model_validate(json.loads(raw.text))
    assert len(completion.choices) == kwargs.get("n", 1)
    for choice in completion.choices:
        assert choice.finish_reason in ("stop", "length")
        assert choice.message.role == "assistant"
    assert completion.usage is not None
    assert completion.usage.total_tokens == completion.usage.prompt_tokens + completion.usage.completion_tokens
    return completion


def stream(server: LiveServer, messages: list[dict[str, Any]], **kwargs: Any) -> tuple[str, list[ChatCompletionChunk]]:
    chunks: list[ChatCompletionChunk] = []
    events = server.client().chat.completions.create(
        model=server.model,
        messages=messages,  # type: ignore[arg-type]
        stream=True,
        stream_options={"include_usage": True},
        **kwargs,
    )
    for event in events:
        chunks.append(ChatCompletionChunk.model_validate(event.model_dump()))
    finishes = [c.finish_reason for chunk in chunks for c in chunk.choices if c.finish_reason is not None]
    assert len(finishes) == 1, finishes  # exactly one finish_reason per choice
    text = "".join(c.delta.content or "" for chunk in chunks for c in chunk.choices)
    return text, chunks


def hf_prompt_tokens(processor: Any, messages: list[dict[str, Any]], **media: Any) -> int:
    text = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    inputs = processor(text=[text], return_tensors="np", **media)
    return int(inputs["input_ids"].shape[1])


def image_message(url: str, prompt: str = "What is in this image?") -> list[dict[str, Any]]:
    return [
        {
            "role": "user",
            "content": [{"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": prompt}],
        }
    ]


def png(width: int, height: int, seed: int = 0) -> bytes:
    return image_bytes(width, height, "PNG", seed)


def test_image_data_url_and_exact_prompt_tokens(dense_server: LiveServer, processor: Any) -> None:
    data = png(320, 224, seed=1)
    completion = complete(dense_server, image_message(data_url(data)), max_tokens=8, temperature=0)
    assert completion.usage is not None
    assert completion.usage.completion_tokens == 8
    assert completion.choices[0].finish_reason == "length"
    hf_messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is in this image?"}]}]
    expected = hf_prompt_tokens(processor, hf_messages, images=[Image.open(io.BytesIO(data)).convert("RGB")])
    assert completion.usage.prompt_tokens == expected
    assert expected > 70  # the 320×224 image alone is 70 visual tokens


@pytest.fixture(scope="module")
def loopback_media() -> Iterator[str]:
    files = {"/pic.png": png(96, 64, seed=2)}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = files.get(self.path)
            self.send_response(200 if body else 404)
            self.end_headers()
            self.wfile.write(body or b"")

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_image_over_http_from_loopback(dense_server: LiveServer, processor: Any, loopback_media: str) -> None:
    completion = complete(dense_server, image_message(f"{loopback_media}/pic.png"), max_tokens=4, temperature=0)
    hf_messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is in this image?"}]}]
    expected = hf_prompt_tokens(processor, hf_messages, images=[Image.open(io.BytesIO(png(96, 64, seed=2)))])
    assert completion.usage is not None and completion.usage.prompt_tokens == expected
    with pytest.raises(BadRequestError) as info:
        complete(dense_server, image_message(f"{loopback_media}/missing.png"), max_tokens=4)
    assert info.value.status_code == 400
    assert "HTTP 404" in str(info.value)


def test_multi_image_multi_turn(dense_server: LiveServer, processor: Any) -> None:
    a, b, c = png(64, 64, 3), png(128, 96, 4), png(96, 160, 5)
    messages = [
        {"role": "system", "content": "You are a careful assistant."},
        {
            "role": "user",
            "content": [
                {"type": "image_url", "image_url": {"url": data_url(a)}},
                {"type": "image_url", "image_url": {"url": data_url(b)}},
                {"type": "text", "text": "Compare these."},
            ],
        },
        {"role": "assistant", "content": "They differ."},
        {
            "role": "user",
            "content": [{"type": "image", "image": data_url(c)}, {"type": "text", "text": "And this one?"}],
        },
    ]
    completion = complete(dense_server, messages, max_tokens=6, temperature=0)
    hf_messages = [
        messages[0],
        {"role": "user", "content": [{"type": "image"}, {"type": "image"}, {"type": "text", "text": "Compare these."}]},
        messages[2],
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "And this one?"}]},
    ]
    images = [Image.open(io.BytesIO(x)).convert("RGB") for x in (a, b, c)]
    assert completion.usage is not None
    assert completion.usage.prompt_tokens == hf_prompt_tokens(processor, hf_messages, images=images)


def test_mp4_video_with_timestamps_counted_exactly(dense_server: LiveServer, processor: Any) -> None:
    clip = mp4_bytes(frames=20, width=128, height=96, fps=10.0)
    messages = [
        {
            "role": "user",
            "content": [
                {"type": "video_url", "video_url": {"url": data_url(clip, "video/mp4")}},
                {"type": "text", "text": "Describe this video."},
            ],
        }
    ]
    completion = complete(dense_server, messages, max_tokens=8, temperature=0)
    # Qwen's default 2 fps over a 2 s clip: 4 frames, indices spread over the 20 source frames; timestamps from metadata.
    indices = [int(i) for i in np.linspace(0, 19, 4).round()]
    frames = np.zeros((4, 96, 128, 3), dtype=np.uint8)
    metadata = {"fps": 10.0, "total_num_frames": 20, "frames_indices": indices, "duration": 2.0}
    hf_messages = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "Describe this video."}]}]
    expected = hf_prompt_tokens(
        processor, hf_messages, videos=[frames], video_metadata=[metadata], do_sample_frames=False
    )
    assert completion.usage is not None and completion.usage.prompt_tokens == expected


def test_frame_list_video(dense_server: LiveServer, processor: Any) -> None:
    frames = [png(64, 64, seed=10 + i) for i in range(4)]
    messages = [
        {
            "role": "user",
            "content": [
                {"type": "video", "video": [data_url(f) for f in frames], "sample_fps": 1.0},
                {"type": "text", "text": "What happens?"},
            ],
        }
    ]
    completion = complete(dense_server, messages, max_tokens=4, temperature=0)
    metadata = {"fps": 1.0, "total_num_frames": 4, "frames_indices": [0, 1, 2, 3], "duration": 4.0}
    hf_messages = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "What happens?"}]}]
    arrays = np.stack([np.asarray(Image.open(io.BytesIO(f)).convert("RGB")) for f in frames])
    expected = hf_prompt_tokens(
        processor, hf_messages, videos=[arrays], video_metadata=[metadata], do_sample_frames=False
    )
    assert completion.usage is not None and completion.usage.prompt_tokens == expected


def test_image_and_video_in_one_request(dense_server: LiveServer) -> None:
    clip = mp4_bytes(frames=10, width=64, height=64, fps=5.0, seed=3)
    messages = [
        {
            "role": "user",
            "content": [
                {"type": "image_url", "image_url": {"url": data_url(png(64, 64))}},
                {"type": "video_url", "video_url": {"url": data_url(clip, "video/mp4")}},
                {"type": "text", "text": "Relate the two."},
            ],
        }
    ]
    completion = complete(dense_server, messages, max_tokens=4, temperature=0)
    assert completion.usage is not None and completion.usage.prompt_tokens > 16 + 16


def test_stream_equals_non_stream_at_temperature_zero(dense_server: LiveServer) -> None:
    messages = image_message(data_url(png(160, 128, seed=7)), "Describe it.")
    plain = complete(dense_server, messages, max_tokens=12, temperature=0, seed=42)
    again = complete(dense_server, messages, max_tokens=12, temperature=0, seed=42)
    assert plain.choices[0].message.content == again.choices[0].message.content  # deterministic
    text, chunks = stream(dense_server, messages, max_tokens=12, temperature=0, seed=42)
    assert text == plain.choices[0].message.content
    assert chunks[-1].usage is not None and plain.usage is not None
    assert chunks[-1].usage.prompt_tokens == plain.usage.prompt_tokens
    assert chunks[-1].usage.completion_tokens == plain.usage.completion_tokens == 12
    assert [c.finish_reason for chunk in chunks for c in chunk.choices if c.finish_reason] == ["length"]


def test_n_choices_and_stop_finish(dense_server: LiveServer) -> None:
    completion = complete(
        dense_server, [{"role": "user", "content": "Hello"}], max_tokens=5, n=2, temperature=0.8, seed=1
    )
    assert [c.index for c in completion.choices] == [0, 1]
    assert completion.usage is not None and completion.usage.completion_tokens <= 10


def test_generation_config_defaults_apply(dense_server: LiveServer) -> None:
    engine = dense_server.app.state.qwen3vl.engine
    generation = json.loads((dense_server.checkpoint / "generation_config.json").read_text())
    defaults = engine.sampling_defaults
    for key in ("temperature", "top_p", "top_k"):
        assert defaults[key] == generation[key]


def test_bad_inputs_are_4xx_and_the_server_stays_healthy(dense_server: LiveServer) -> None:
    client = dense_server.client()
    with pytest.raises(BadRequestError) as too_long:
        complete(dense_server, image_message(data_url(png(64, 64))), max_tokens=100_000)
    assert too_long.value.code == "context_length_exceeded"
    with pytest.raises(BadRequestError) as bad_image:
        complete(dense_server, image_message("data:image/png;base64,iVBORw0KGgoAAAA"), max_tokens=2)
    assert bad_image.value.code == "media_decode_failed"
    with pytest.raises(NotFoundError):
        client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])
    assert httpx.get(f"{dense_server.base_url}/health").status_code == 200
    assert complete(dense_server, [{"role": "user", "content": "still there?"}], max_tokens=2).usage is not None


def test_metrics_show_gateway_and_vllm_metrics(dense_server: LiveServer) -> None:
    complete(dense_server, [{"role": "user", "content": "count me"}], max_tokens=2)
    text = httpx.get(f"{dense_server.base_url}/metrics").text
    assert 'qwen3vl_http_requests_total{method="POST",route="/v1/chat/completions",status="200"}' in text
    assert "qwen3vl_http_request_duration_seconds_bucket" in text
    assert "vllm:num_requests_running" in text
    assert "vllm:prompt_tokens_total" in text


def test_models_and_version(dense_server: LiveServer) -> None:
    models = dense_server.client().models.list()
    assert [m.id for m in models.data] == ["tiny-qwen3vl"]
    version = httpx.get(f"{dense_server.base_url}/version").json()
    assert version["vllm"] == "0.32.0"


def responses_input(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A chat conversation of text and image-URL parts as Responses API input items."""
    items = []
    for message in messages:
        parts = [
            {"type": "input_text", "text": p["text"]}
            if p["type"] == "text"
            else {"type": "input_image", "image_url": p["image_url"]["url"]}
            for p in message["content"]
        ]
        items.append({"role": message["role"], "content": parts})
    return items


def test_moe_checkpoint_answers_an_image_request_then_health_reports_engine_death(dense_server: LiveServer) -> None:
    # Depends on dense_server only so the two engines start one after the other, never at once.
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    with live_server(moe=True, thinking=True) as moe:
        messages = image_message(data_url(png(128, 128, seed=9)))
        completion = complete(moe, messages, max_tokens=6, temperature=0)
        assert completion.model == "tiny-qwen3vl-moe-thinking"
        assert completion.usage is not None and completion.usage.completion_tokens == 6
        assert completion.usage.prompt_tokens > 16  # a 128×128 image is 16 visual tokens, plus the template's

        # The Thinking template opens <think>, so the server picked vLLM's qwen3 reasoning parser: the text before
        # </think> is reasoning_content (with no </think> in the output, all of it, and content is null).
        assert moe.app.state.qwen3vl.engine.model.extra["reasoning_parser"] == "qwen3"
        message = completion.choices[0].message
        reasoning = (message.model_extra or {}).get("reasoning_content")
        assert isinstance(reasoning, str) and reasoning
        text, chunks = stream(moe, messages, max_tokens=6, temperature=0)
        deltas = [c.delta for chunk in chunks for c in chunk.choices]
        streamed = "".join((d.model_extra or {}).get("reasoning_content") or "" for d in deltas)
        assert streamed == reasoning  # stream == non-stream, whitespace included
        assert text == (message.content or "")
        assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 6

        # The Responses API gives the same reasoning as a reasoning item, its tokens counted as reasoning tokens;
        # streamed, as reasoning_text deltas (issue 18, item 2).
        answer = moe.client().responses.create(
            model=moe.model, input=responses_input(messages), max_output_tokens=6, temperature=0
        )
        assert [item.type for item in answer.output] == ["reasoning"]
        assert answer.output[0].content is not None and answer.output[0].content[0].text == reasoning  # type: ignore[union-attr]
        assert answer.usage is not None and answer.usage.output_tokens_details.reasoning_tokens == 6
        events = list(
            moe.client().responses.create(
                model=moe.model, input=responses_input(messages), max_output_tokens=6, temperature=0, stream=True
            )
        )
        thought = "".join(e.delta for e in events if e.type == "response.reasoning_text.delta")  # type: ignore[union-attr]
        assert thought == reasoning and events[-1].type == "response.incomplete"

        # Kill this engine's core process: liveness must turn 503 and requests must get a clean 503, not a 500.
        mine = [p for p in psutil.Process().children(recursive=True) if p.pid not in before]
        cores = [p for p in mine if "EngineCore" in " ".join(p.cmdline()) + p.name()]
        assert cores, [p.name() for p in mine]
        for core in cores:
            core.kill()
        deadline = time.monotonic() + 30
        while httpx.get(f"{moe.base_url}/health").status_code != 503:
            assert time.monotonic() < deadline, "liveness never noticed the dead engine"
            time.sleep(0.2)
        assert httpx.get(f"{moe.base_url}/ready").status_code == 503
        response = httpx.post(
            f"{moe.base_url}/v1/chat/completions",
            json={"model": moe.model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2},
            timeout=60,
        )
        assert response.status_code == 503
        assert response.json()["error"]["code"] == "engine_unavailable"
    # The shared dense engine is unaffected.
    assert httpx.get(f"{dense_server.base_url}/health").status_code == 200


def test_default_model_is_the_tiny_demo_and_says_so(dense_server: LiveServer) -> None:
    assert dense_server.model == "tiny-qwen3vl"
    assert any("RANDOM-WEIGHT" in line for line in dense_server.logs)
    assert httpx.get(f"{dense_server.base_url}/version").json()["demo_model"] is True


def test_supported_input_path_logs_no_deprecation(dense_server: LiveServer) -> None:
    complete(dense_server, image_message(data_url(png(64, 64))), max_tokens=2)
    engine_lines = [line for line in dense_server.logs if "deprecat" in line.lower()]
    assert engine_lines == []
    assert any("Engine" in line or "engine" in line for line in dense_server.logs)  # the vLLM logger was captured


def test_noise_image_helper_is_deterministic() -> None:
    assert np.array_equal(np.asarray(noise_image(8, 8, 1)), np.asarray(noise_image(8, 8, 1)))


def test_cached_tokens_report_the_engine_prefix_cache(dense_server: LiveServer) -> None:
    """The second of two identical image requests finds its prefix (text and image) in vLLM's prefix cache, and
    ``usage.prompt_tokens_details.cached_tokens`` says how much of it; the stream's usage chunk says the same."""
    words = " ".join(f"w{n}" for n in np.random.default_rng(7).integers(0, 10**6, 200))  # a prefix no test sent
    messages = image_message(data_url(png(256, 192, seed=17)), prompt=words)
    first = complete(dense_server, messages, max_tokens=4, temperature=0)
    second = complete(dense_server, messages, max_tokens=4, temperature=0)
    assert first.usage is not None and second.usage is not None
    assert first.usage.prompt_tokens == second.usage.prompt_tokens
    first_cached = first.usage.prompt_tokens_details and first.usage.prompt_tokens_details.cached_tokens
    second_cached = second.usage.prompt_tokens_details and second.usage.prompt_tokens_details.cached_tokens
    assert isinstance(first_cached, int) and isinstance(second_cached, int)
    assert first_cached < second_cached < second.usage.prompt_tokens  # the last prompt token is always recomputed
    assert second_cached >= second.usage.prompt_tokens // 2  # most of a ~650-token prompt is in whole blocks
    _, chunks = stream(dense_server, messages, max_tokens=4, temperature=0)
    streamed = chunks[-1].usage
    assert streamed is not None and streamed.prompt_tokens_details is not None
    assert streamed.prompt_tokens_details.cached_tokens == second_cached
