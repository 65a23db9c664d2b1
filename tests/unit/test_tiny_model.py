"""The embedded default checkpoint: deterministic, offline, with the real Qwen special tokens and the MoE layout vLLM loads."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from offline.cli import main
from offline.tiny import (
    CHAT_TEMPLATE_PATH,
    SPECIAL_TOKENS,
    THINKING_CHAT_TEMPLATE_PATH,
    TinySpec,
    cached_checkpoint,
)


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


def test_variant_names() -> None:
    assert [TinySpec(moe=m, thinking=t).name for m in (False, True) for t in (False, True)] == [
        "tiny-qwen3vl",
        "tiny-qwen3vl-thinking",
        "tiny-qwen3vl-moe",
        "tiny-qwen3vl-moe-thinking",
    ]


def test_thinking_variant_shares_the_weights_not_the_template(tmp_path: Path) -> None:
    instruct, thinking = cached_checkpoint(), cached_checkpoint(thinking=True)
    assert thinking.name.startswith("tiny-qwen3vl-thinking-")
    assert main(["tiny-model", str(tmp_path / "thinking"), "--thinking"]) == 0
    for name in ("model.safetensors", "tokenizer.json", "config.json", "processor_config.json", "chat_template.jinja"):
        assert (tmp_path / "thinking" / name).read_bytes() == (thinking / name).read_bytes(), name  # deterministic
    for name in ("model.safetensors", "tokenizer.json", "config.json"):
        assert (thinking / name).read_bytes() == (instruct / name).read_bytes(), name
    assert (thinking / "chat_template.jinja").read_text() == THINKING_CHAT_TEMPLATE_PATH.read_text()
    assert (instruct / "chat_template.jinja").read_text() == CHAT_TEMPLATE_PATH.read_text()


HISTORY: list[dict[str, Any]] = [
    {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is it?"}]},
    {"role": "assistant", "content": "<think>\nA cat, surely.\n</think>\n\nA cat.", "reasoning_content": "hidden"},
    {"role": "user", "content": "Where?"},
    {
        "role": "assistant",
        "content": [{"type": "text", "text": "<think>look it up</think>\n\nLet me check."}],
        "tool_calls": [{"type": "function", "function": {"name": "locate", "arguments": {"what": "cat"}}}],
    },
    {"role": "tool", "content": "on the mat"},
]


def test_thinking_template_opens_a_think_block_and_drops_history_reasoning() -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(cached_checkpoint(thinking=True)))
    prompt = tokenizer.apply_chat_template(HISTORY, tokenize=False, add_generation_prompt=True)
    assert prompt.endswith("<|im_start|>assistant\n<think>\n")
    assert "<|im_start|>assistant\nA cat.<|im_end|>\n" in prompt
    assert (
        '<|im_start|>assistant\nLet me check.\n<tool_call>\n{"name": "locate", "arguments": {"what": "cat"}}\n'
        in prompt
    )
    assert "<|im_start|>user\n<tool_response>\non the mat\n</tool_response><|im_end|>\n" in prompt
    assert "<|vision_start|><|image_pad|><|vision_end|>What is it?" in prompt
    for gone in ("A cat, surely.", "hidden", "look it up", "</think>"):
        assert gone not in prompt, gone
    assert prompt.count("<think>") == 1  # only the generation prompt's
    # The Instruct edition keeps its own template: a bare generation prompt and the history verbatim.
    instruct = AutoTokenizer.from_pretrained(str(cached_checkpoint()))
    plain = instruct.apply_chat_template(HISTORY, tokenize=False, add_generation_prompt=True)
    assert plain.endswith("<|im_start|>assistant\n") and "A cat, surely." in plain


def test_thinking_generation_defaults() -> None:
    generation = json.loads((cached_checkpoint(thinking=True) / "generation_config.json").read_text())
    # The seed README's "Thinking models" hyperparameters.
    assert {k: generation[k] for k in ("temperature", "top_p", "top_k", "repetition_penalty", "presence_penalty")} == {
        "temperature": 0.6,
        "top_p": 0.95,
        "top_k": 20,
        "repetition_penalty": 1.0,
        "presence_penalty": 0.0,
    }
    assert generation["do_sample"] is True
    instruct = json.loads((cached_checkpoint() / "generation_config.json").read_text())
    assert (instruct["temperature"], instruct["top_p"]) == (0.7, 0.8)


def test_vllm_qwen3_reasoning_parser_works_with_the_thinking_checkpoint() -> None:
    from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest
    from vllm.reasoning import ReasoningParserManager
    from vllm.tokenizers import get_tokenizer

    tokenizer = get_tokenizer(str(cached_checkpoint(thinking=True)))
    parser = ReasoningParserManager.get_reasoning_parser("qwen3")(tokenizer)
    prompt = tokenizer.apply_chat_template(HISTORY, tokenize=False, add_generation_prompt=True)
    prompt_ids = tokenizer.encode(prompt, add_special_tokens=False)
    think_end = tokenizer.convert_tokens_to_ids("</think>")
    assert parser.is_reasoning_end(prompt_ids) is False  # the prompt opened <think>: the model starts reasoning
    assert parser.is_reasoning_end([*prompt_ids, think_end]) is True
    request = ChatCompletionRequest(model="m", messages=[{"role": "user", "content": "hi"}])
    assert parser.extract_reasoning("abc</think>def", request) == ("abc", "def")
    # A truncated answer that never closes the block is all reasoning.
    assert parser.extract_reasoning("still thinking", request) == ("still thinking", None)


def test_demo_settings_pick_the_variant_and_its_name() -> None:
    from server.app import engine_options
    from server.config import Settings

    settings = Settings(tiny_moe=True, tiny_thinking=True)
    options = engine_options(settings, str(cached_checkpoint(moe=True, thinking=True)), is_demo=True)
    assert options.served_model_name == "tiny-qwen3vl-moe-thinking"
    assert Settings(_cli_parse_args=["--tiny-thinking"]).tiny_thinking


def test_logprob_bytes_are_each_tokens_own_bytes() -> None:
    from transformers import AutoTokenizer

    from server.engine.vllm_output import token_bytes

    tokenizer = AutoTokenizer.from_pretrained(str(cached_checkpoint()))
    text = "日本語 ünïcödé 🙂 <|im_end|>"
    ids = tokenizer(text)["input_ids"]
    pieces = [bytes(token_bytes(i, tokenizer.decode([i]), tokenizer)) for i in ids]
    assert b"".join(pieces) == text.encode()
    # The tiny vocabulary splits these characters into single bytes: each token's text is U+FFFD, its bytes are exact.
    assert tokenizer.decode([ids[0]]) == "\ufffd" and pieces[0] == "日".encode()[:1]
