"""The memory arithmetic (``offline.memory``), checked against numbers worked out by hand from real Qwen3-VL config.json
files.

The configs are the ones bundled in ``offline/configs/`` (Qwen3-VL-8B-Instruct and Qwen3-VL-30B-A3B-Instruct
are the two worked examples here). Parameter counts are checked three ways: the planner's formula, transformers' own
model classes instantiated on the meta device, and the published total for Qwen3-VL-30B-A3B-Instruct.
"""

from __future__ import annotations

import json
import math
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

from offline.cli import main
from offline.configs import bundled_config, bundled_config_name, load_config
from offline.memory.estimate import estimate
from offline.memory.inputs import GIB, Inputs
from offline.memory.shape import Shape
from offline.memory.weights import total_params
from server.profiles import list_profiles

CONFIGS = ["Qwen3-VL-2B", "Qwen3-VL-4B", "Qwen3-VL-8B", "Qwen3-VL-32B", "Qwen3-VL-30B-A3B", "Qwen3-VL-235B-A22B"]
BUDGET = int(79.19 * 0.9 * GIB)  # H100 80GB as CUDA reports it, at gpu_memory_utilization 0.9 = 76,526,653,538 bytes
RESERVE = 4 * GIB


def config(name: str) -> dict[str, Any]:
    return bundled_config(f"{name}.json")


@pytest.mark.parametrize("name", CONFIGS)
def test_parameter_count_equals_transformers_own_model(name: str) -> None:
    import torch
    from transformers import AutoConfig, AutoModelForImageTextToText

    path = resources.files("offline.configs").joinpath(f"{name}.json")
    with resources.as_file(path) as file, torch.device("meta"):
        model = AutoModelForImageTextToText.from_config(AutoConfig.from_pretrained(str(file)))
    assert total_params(Shape.from_config(config(name))) == sum(p.numel() for p in model.parameters())


def test_parameter_count_matches_the_published_30b_a3b_total() -> None:
    # Qwen3-VL-30B-A3B-Instruct's 13 safetensors files hold 31,070,754,032 parameters (57.87 GB in BF16).
    assert total_params(Shape.from_config(config("Qwen3-VL-30B-A3B"))) == 31_070_754_032


def test_8b_bf16_on_one_h100_by_hand() -> None:
    result = estimate(config("Qwen3-VL-8B"), Inputs(tp=1, max_model_len=65536, max_num_seqs=128, images_per_prompt=8))
    # BF16: two bytes per parameter, everything on one GPU.
    weights = 2 * 8_767_123_696
    assert result.weights_bytes_per_gpu == weights == 17_534_247_392  # 16.33 GiB
    # K and V, 36 layers, 8 KV heads of 128 dims, 2 bytes each.
    assert result.kv_bytes_per_token_per_gpu == result.kv_bytes_per_token_model == 2 * 36 * 8 * 128 * 2 == 147_456
    # (budget - weights - reserve) in whole 16-token blocks.
    blocks = (BUDGET - weights - RESERVE) // (16 * 147_456)
    assert result.kv_capacity_tokens == blocks * 16 == 370_928
    # A full-budget image: 16384 x 32 x 32 pixels, one token per 32x32 pixels (patch 16, merge 2).
    assert result.image_tokens == 16_384
    assert result.images_in_kv == 370_928 // 16_384 == 22
    # A full-budget video: 64 frames in pairs (temporal patch 2), 768 tokens per pair at most, 24576 x 32 x 32 px total.
    assert result.video_tokens == min(24_576, 32 * 768) == 24_576
    assert result.videos_in_kv == 15
    assert result.errors == []
    # 8 images x 16384 tokens = 131072 > 65536: the planner says so.
    assert any("8 full-budget images" in w and "at most 4 fit" in w for w in result.warnings)


def fp8_bytes(rows: int, cols: int, count: int) -> int:
    """One byte per weight plus a float32 scale per 128x128 block."""
    return rows * cols * count + math.ceil(rows / 128) * math.ceil(cols / 128) * count * 4


def test_30b_a3b_fp8_on_one_h100_by_hand() -> None:
    result = estimate(config("Qwen3-VL-30B-A3B"), Inputs(tp=1, fp8_weights=True, max_model_len=65536))
    layers, hidden, vocab, experts = 48, 2048, 151_936, 128
    bf16_params = (
        2 * vocab * hidden  # embed_tokens and lm_head (not tied)
        + (2 * layers + 1) * hidden  # two RMSNorms per layer and the final one
        + layers * 2 * 128  # q_norm and k_norm
        + layers * experts * hidden  # the routers
        + 538_631_408  # the vision encoder (as transformers counts it)
    )
    fp8 = (
        fp8_bytes(32 * 128, hidden, layers)  # q_proj: 32 heads x 128
        + fp8_bytes(4 * 128, hidden, 2 * layers)  # k_proj and v_proj: 4 KV heads x 128
        + fp8_bytes(hidden, 32 * 128, layers)  # o_proj
        + fp8_bytes(2 * 768, hidden, layers * experts)  # experts' gate_proj + up_proj
        + fp8_bytes(hidden, 768, layers * experts)  # experts' down_proj
    )
    assert result.weights_bytes_per_gpu == 2 * bf16_params + fp8 == 32_251_808_224  # 30.04 GiB
    assert result.kv_bytes_per_token_per_gpu == 2 * 48 * 4 * 128 * 2 == 98_304
    assert result.kv_capacity_tokens == (BUDGET - 32_251_808_224 - RESERVE) // (16 * 98_304) * 16 == 406_688
    assert (result.images_in_kv, result.videos_in_kv) == (24, 16)
    assert result.full_length_sequences == pytest.approx(406_688 / 65_536)


def test_235b_fp8_on_eight_h100_shards_by_tensor_parallelism() -> None:
    one = estimate(config("Qwen3-VL-235B-A22B"), Inputs(tp=1, fp8_weights=True))
    eight = estimate(config("Qwen3-VL-235B-A22B"), Inputs(tp=8, fp8_weights=True, vision_data_parallel=True))
    # 4 KV heads on 8 GPUs: each GPU keeps one (vLLM replicates KV heads when there are fewer than GPUs).
    assert eight.kv_bytes_per_token_per_gpu == 2 * 94 * 1 * 128 * 2 == 48_128
    assert eight.kv_bytes_per_token_model == 2 * 94 * 4 * 128 * 2
    # The experts split eight ways; the data-parallel vision encoder is whole on every GPU.
    assert eight.weights_by_part["experts"] < one.weights_by_part["experts"] / 8 + 94 * 128 * 4096 * 2
    assert eight.weights_by_part["vision"] == one.weights_by_part["vision"] == 2 * 576_388_336
    assert one.errors and "weights need" in one.errors[0]  # 235B does not fit one GPU, even in FP8
    assert not eight.errors


def test_fp8_kv_cache_doubles_capacity_and_yarn_needs_a_longer_position_limit() -> None:
    base = Inputs(tp=8, fp8_weights=True, vision_data_parallel=True, max_model_len=1_000_000)
    bf16_kv = estimate(config("Qwen3-VL-235B-A22B"), base)
    assert any("max_position_embeddings 262144" in e for e in bf16_kv.errors)
    assert any("KV capacity" in e and "below max_model_len 1000000" in e for e in bf16_kv.errors)
    from dataclasses import replace

    fixed = estimate(
        config("Qwen3-VL-235B-A22B"),
        replace(base, kv_cache_bytes_per_value=1, max_position_embeddings_override=1_000_000),
    )
    assert fixed.errors == []
    assert fixed.kv_bytes_per_token_per_gpu * 2 == bf16_kv.kv_bytes_per_token_per_gpu
    assert fixed.kv_capacity_tokens >= 2 * bf16_kv.kv_capacity_tokens - 16


def test_impossible_layouts_are_errors() -> None:
    assert any("not divisible" in e for e in estimate(config("Qwen3-VL-8B"), Inputs(tp=3)).errors)
    small = estimate(config("Qwen3-VL-32B"), Inputs(tp=1, gpu_memory_gib=24.0))
    assert small.kv_capacity_tokens == 0 and small.errors


def test_bundled_config_covers_every_profile_model() -> None:
    from server.profiles import load_profile

    for name in list_profiles():
        model = load_profile(name).settings["model"]
        assert bundled_config_name(model) in {f"{c}.json" for c in CONFIGS}, model
    assert bundled_config_name("Qwen/Qwen3-VL-30B-A3B-Thinking-FP8") == "Qwen3-VL-30B-A3B.json"
    assert bundled_config_name("some/other-model") is None


def test_a_local_config_wins_over_the_bundled_one(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps(config("Qwen3-VL-2B")))
    data, source = load_config("Qwen/Qwen3-VL-8B-Instruct", tmp_path)
    assert source.endswith("config.json") and data["text_config"]["hidden_size"] == 2048
    with pytest.raises(ValueError, match="--config"):
        load_config("some/other-model")
    with pytest.raises(ValueError, match=r"no config\.json"):
        load_config("Qwen/Qwen3-VL-8B-Instruct", tmp_path / "missing.json")


@pytest.mark.parametrize("name", list_profiles())
def test_every_profile_fits_its_gpus(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", "--profile", name, "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["errors"] == []
    assert result["kv_capacity_tokens"] >= result["max_model_len"]
    assert result["warnings"] == []  # e.g. each profile's per-prompt media limits fit its max_model_len


def test_plan_prints_the_arithmetic_and_fails_on_an_impossible_override(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", "--profile", "qwen3-vl-8b-instruct-1xh100"]) == 0
    out = capsys.readouterr().out
    for text in ("parameters: 8,767,123,696", "weights per GPU: 16.33 GiB", "147,456 bytes/token", "370,928 tokens"):
        assert text in out
    assert "verdict: fits" in out
    # Server flags after the plan's own options override the profile, as they would when serving.
    assert main(["plan", "--profile", "qwen3-vl-8b-instruct-1xh100", "--max-model-len", "400000"]) == 1
    assert "KV capacity 370928 tokens is below max_model_len 400000" in capsys.readouterr().out
    # Bad input is one line on stderr and exit 2, not a traceback.
    assert main(["plan", "--profile", "nope"]) == 2
    assert "unknown profile 'nope'" in capsys.readouterr().err
