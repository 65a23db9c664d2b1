"""The embedded default checkpoint: deterministic, offline, with the real Qwen special tokens and the MoE layout vLLM loads."""

from __future__ import annotations

import json
from pathlib import Path

from server.__main__ import main
from server.models.tiny import SPECIAL_TOKENS, cached_checkpoint


def test_build_is_deterministic_and_matches_the_cache(tmp_path: Path) -> None:
    cached = cached_checkpoint()
    assert main(["tiny-model", str(tmp_path / "again")]) == 0
    for name in ("model.safetensors", "tokenizer.json", "config.json", "processor_config.json", "chat_template.jinja"):
        assert (tmp_path / "again" / name).read_bytes() == (cached / name).read_bytes(), name


def test_token_ids_agree_between_config_and_tokenizer() -> None:
    from transformers import AutoTokenizer

    path = cached_checkpoint()
    config = json.loads((path / "config.json").read_text())
    generation = json.loads((path / "generation_config.json").read_text())
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    ids = tokenizer.convert_tokens_to_ids(list(SPECIAL_TOKENS))
    assert ids == list(range(ids[0], ids[0] + len(SPECIAL_TOKENS)))  # Qwen's order, contiguous
    assert config["image_token_id"] == tokenizer.convert_tokens_to_ids("<|image_pad|>")
    assert config["video_token_id"] == tokenizer.convert_tokens_to_ids("<|video_pad|>")
    assert config["vision_start_token_id"] == tokenizer.convert_tokens_to_ids("<|vision_start|>")
    assert generation["eos_token_id"][0] == tokenizer.convert_tokens_to_ids("<|im_end|>")
    # <tool_call> and <think> are single tokens that survive decoding (tool and reasoning parsers look for them).
    for plain in ("<tool_call>", "</tool_call>", "<think>", "</think>"):
        (token_id,) = tokenizer(plain, add_special_tokens=False)["input_ids"]
        assert tokenizer.decode([token_id], skip_special_tokens=True) == plain


def test_moe_variant_layout(tmp_path: Path) -> None:
    from safetensors import safe_open

    assert main(["tiny-model", str(tmp_path / "moe"), "--moe"]) == 0
    config = json.loads((tmp_path / "moe" / "config.json").read_text())
    text = config["text_config"]
    assert config["architectures"] == ["Qwen3VLMoeForConditionalGeneration"]
    assert text["norm_topk_prob"] is True
    assert text.get("num_experts", text.get("num_local_experts")) == 4
    hidden, inter = text["hidden_size"], text["moe_intermediate_size"]
    with safe_open(str(tmp_path / "moe" / "model.safetensors"), "pt") as f:
        shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys() if ".experts." in k}  # noqa: SIM118 (safe_open is not a dict)
    assert shapes, "no fused expert weights found"
    for name, shape in shapes.items():
        # [experts, in, out], as the published checkpoints vLLM loads hold them
        expected = (4, hidden, 2 * inter) if name.endswith("gate_up_proj") else (4, inter, hidden)
        assert shape == expected, name
