"""Scale models of the H100 profiles, run for real: tensor parallel 2 with the data-parallel vision encoder (and each
profile's other settings the CPU runs) gives exactly the tokens of tensor parallel 1, for an image and a video request.

One TP 2 engine per family (dense, MoE), started through our own server (``create_app``), against a TP 1 run of the same
scale-model settings (float32: in bfloat16 the all-reduce's rounding flips the random-weight model's near-ties).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from typing import Any

import pytest
from openai.types.chat import ChatCompletion

from offline.scale import CI_RUNS, ScaleModel, scale_model
from offline.tiny import cached_checkpoint
from server.config import Settings
from server.profiles import load_profile
from tests.e2e.conftest import LiveServer, serve
from tests.media_factory import data_url, image_bytes, mp4_bytes

pytestmark = pytest.mark.e2e

# Greedy, with every sampling default of the profile (presence penalty, top_k, ...) neutralised, so runs compare exactly.
GREEDY: dict[str, Any] = {
    "temperature": 0,
    "top_p": 1,
    "max_tokens": 12,
    "presence_penalty": 0,
    "frequency_penalty": 0,
    "logprobs": True,
    "extra_body": {"top_k": -1, "repetition_penalty": 1.0, "ignore_eos": True},
}
IMAGE = [
    {
        "role": "user",
        "content": [
            {"type": "image_url", "image_url": {"url": data_url(image_bytes(160, 96, seed=3))}},
            {"type": "text", "text": "What is in this image?"},
        ],
    }
]
VIDEO = [
    {
        "role": "user",
        "content": [
            {"type": "video_url", "video_url": {"url": data_url(mp4_bytes(frames=8, fps=4.0), "video/mp4"), "fps": 2}},
            {"type": "text", "text": "What happens in this video?"},
        ],
    }
]


def answers(server: LiveServer) -> list[tuple[int, list[tuple[str, tuple[int, ...]]], str]]:
    """Per request: prompt tokens, the generated tokens (text and bytes) and the text."""
    out = []
    for messages in (IMAGE, VIDEO):
        raw = server.client().chat.completions.with_raw_response.create(model=server.model, messages=messages, **GREEDY)  # type: ignore[arg-type]
        completion = ChatCompletion.model_validate(json.loads(raw.text))
        (choice,) = completion.choices
        assert completion.usage is not None and completion.usage.completion_tokens == 12
        assert choice.logprobs is not None and choice.logprobs.content is not None
        tokens = [(t.token, tuple(t.bytes or ())) for t in choice.logprobs.content]
        out.append((completion.usage.prompt_tokens, tokens, choice.message.content or ""))
    return out


@contextlib.contextmanager
def run_scale_model(scale: ScaleModel, monkeypatch: pytest.MonkeyPatch, **override: Any) -> Iterator[LiveServer]:
    """Serve ``scale``: the settings the scale model keeps from its profile, and its scaled ones."""
    checkpoint = cached_checkpoint(moe=scale.family.moe, thinking=scale.family.thinking)
    settings = Settings(model=str(checkpoint), **{**scale.settings, **override}, warmup=False)
    with monkeypatch.context() as env:
        if settings.tensor_parallel_size > 1:
            for key, value in scale.environment.items():
                env.setenv(key, value)
        with serve(settings, checkpoint) as server:
            yield server


@pytest.mark.parametrize("family", ["dense", "moe"])
def test_scale_model_gives_the_tokens_of_tensor_parallel_1(family: str, monkeypatch: pytest.MonkeyPatch) -> None:
    scale = scale_model(load_profile(CI_RUNS[family]))
    assert scale.family.moe == (family == "moe")
    assert scale.settings["tensor_parallel_size"] == 2
    assert scale.settings["engine_extra"]["mm_encoder_tp_mode"] == "data"
    with run_scale_model(scale, monkeypatch, tensor_parallel_size=1) as server:
        reference = answers(server)
    with run_scale_model(scale, monkeypatch) as server:
        engine_config = vars(server.app.state.qwen3vl.engine)["_llm"].vllm_config  # what vLLM itself runs with
        assert engine_config.parallel_config.tensor_parallel_size == 2
        assert engine_config.model_config.multimodal_config.mm_encoder_tp_mode == "data"
        scaled = answers(server)
    for (prompt, tokens, text), (ref_prompt, ref_tokens, ref_text) in zip(scaled, reference, strict=True):
        assert prompt == ref_prompt
        diverged = next((i for i, (a, b) in enumerate(zip(tokens, ref_tokens, strict=True)) if a != b), None)
        assert diverged is None, (
            f"TP 2 diverges from TP 1 at token {diverged}: {tokens[diverged:]} != {ref_tokens[diverged:]}"
        )
        assert text == ref_text
