"""Build the tiny random-weight Qwen3-VL checkpoint: the embedded default model, offline and deterministic.

It has the real Qwen3-VL architecture (interleaved M-RoPE, deepstack vision merger, 16-pixel patches merged 2×2, temporal
patch 2), the real Qwen special tokens, Qwen3-VL's chat template and processor configs, and about 1.4 M random parameters,
so the whole vLLM serving path runs on a CPU in seconds. Its text is gibberish: tests check structure, never content.

Like the real family it comes in an Instruct and a Thinking edition (``thinking=True``). They share their weights (same
seed, same config); the Thinking edition differs only in its chat template (the generation prompt opens ``<think>\n``
and history turns drop their reasoning, as in Qwen3-VL-*-Thinking) and its generation defaults, so vLLM's ``qwen3``
reasoning parser can be exercised end to end.

Nothing here downloads anything: the tokenizer is a byte-level BPE trained on the Python standard library's own sources.
Heavy libraries (torch, transformers, tokenizers) are imported inside the functions, so importing this module is cheap.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import sysconfig
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

_HERE = Path(__file__).resolve().parent
CHAT_TEMPLATE_PATH = _HERE / "qwen3_vl_chat_template.jinja"
THINKING_CHAT_TEMPLATE_PATH = _HERE / "qwen3_vl_thinking_chat_template.jinja"

# Qwen's special tokens in their real order (ids 151643… in the published vocab; here they follow the BPE vocab).
SPECIAL_TOKENS: tuple[str, ...] = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
)
# Added but not special: they appear in decoded text (vLLM's tool and reasoning parsers look for them).
PLAIN_ADDED_TOKENS: tuple[str, ...] = (
    "<tool_call>",
    "</tool_call>",
    "<tool_response>",
    "</tool_response>",
    "<think>",
    "</think>",
)

BPE_VOCAB_SIZE = 2000
SEED = 1234
# Modules of the standard library whose sources train the tokenizer (a fixed list, so the vocabulary is stable).
_CORPUS_MODULES: tuple[str, ...] = (
    "argparse.py",
    "textwrap.py",
    "string.py",
    "json/decoder.py",
    "json/encoder.py",
    "email/message.py",
    "pathlib.py",
    "dataclasses.py",
    "calendar.py",
    "difflib.py",
    "shutil.py",
    "csv.py",
)

# Small pixel budgets keep vLLM's start-up memory profiling cheap on a CPU.
IMAGE_MIN_PIXELS = 32 * 32 * 4
IMAGE_MAX_PIXELS = 512 * 512
VIDEO_MIN_PIXELS = 32 * 32 * 4 * 2
VIDEO_MAX_FRAMES = 16
# The text model's position limit and M-RoPE layout (head_dim 64 → 32 rotary pairs split over t, h, w): what a scale
# model of a long-context (YaRN) profile scales from.
TEXT_MAX_POSITIONS = 32768
ROPE_THETA = 5000000.0
MROPE_SECTION = (12, 10, 10)
VIDEO_MAX_PIXELS = VIDEO_MAX_FRAMES * 256 * 256  # Qwen3-VL's video budget is over T×H×W


# The seed README's generation hyperparameters, per edition (presence_penalty is read by vLLM, not by transformers).
INSTRUCT_GENERATION_DEFAULTS: dict[str, Any] = {
    "do_sample": True,
    "temperature": 0.7,
    "top_p": 0.8,
    "top_k": 20,
    "repetition_penalty": 1.0,
}
THINKING_GENERATION_DEFAULTS: dict[str, Any] = {
    "do_sample": True,
    "temperature": 0.6,
    "top_p": 0.95,
    "top_k": 20,
    "repetition_penalty": 1.0,
    "presence_penalty": 0.0,
}


@dataclass(frozen=True)
class TinySpec:
    moe: bool = False
    thinking: bool = False

    @property
    def name(self) -> str:
        return "tiny-qwen3vl" + ("-moe" if self.moe else "") + ("-thinking" if self.thinking else "")

    @property
    def chat_template_path(self) -> Path:
        return THINKING_CHAT_TEMPLATE_PATH if self.thinking else CHAT_TEMPLATE_PATH

    @property
    def generation_defaults(self) -> dict[str, Any]:
        return dict(THINKING_GENERATION_DEFAULTS if self.thinking else INSTRUCT_GENERATION_DEFAULTS)


def builder_fingerprint() -> str:
    """Changes whenever the builder or the template changes, so a cached checkpoint is rebuilt."""
    digest = hashlib.sha256()
    for path in (Path(__file__), CHAT_TEMPLATE_PATH, THINKING_CHAT_TEMPLATE_PATH):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "qwen3vl-server"


def cached_checkpoint(cache_dir: Path | None = None, *, moe: bool = False, thinking: bool = False) -> Path:
    """Return the cached tiny checkpoint, building it first if it is absent or stale."""
    spec = TinySpec(moe=moe, thinking=thinking)
    root = cache_dir or default_cache_dir()
    target = root / f"{spec.name}-{builder_fingerprint()}"
    if (target / "config.json").is_file():
        return target
    build_checkpoint(target, moe=moe, thinking=thinking)
    return target


def build_checkpoint(out_dir: Path, *, moe: bool = False, thinking: bool = False) -> Path:
    """Write the tiny checkpoint to ``out_dir`` atomically (built in a sibling temporary folder, then renamed)."""
    out_dir = Path(out_dir).resolve()
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    tmp.chmod(0o755)
    try:
        _build_into(tmp, TinySpec(moe=moe, thinking=thinking))
        if out_dir.exists():
            shutil.rmtree(out_dir)
        tmp.rename(out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info(
        "built tiny random-weight Qwen3-VL checkpoint (%s, %s) at %s",
        "MoE" if moe else "dense",
        "Thinking" if thinking else "Instruct",
        out_dir,
    )
    return out_dir


def _build_into(out: Path, spec: TinySpec) -> None:
    chat_template = spec.chat_template_path.read_text()
    tokenizer = _build_tokenizer(chat_template)
    ids = {tok: tokenizer.convert_tokens_to_ids(tok) for tok in (*SPECIAL_TOKENS, *PLAIN_ADDED_TOKENS)}
    config = _build_config(spec, vocab_size=len(tokenizer), ids=ids)
    _save_weights(out, config, spec)
    _save_processor(out, tokenizer, chat_template)
    generation = {
        "bos_token_id": ids["<|endoftext|>"],
        "pad_token_id": ids["<|endoftext|>"],
        "eos_token_id": [ids["<|im_end|>"], ids["<|endoftext|>"]],
        # Qwen3-VL Instruct or Thinking defaults (the seed README's generation hyperparameters).
        **spec.generation_defaults,
    }
    (out / "generation_config.json").write_text(json.dumps(generation, indent=2) + "\n")
    (out / "README.md").write_text(
        f"# {spec.name}\n\nA random-weight Qwen3-VL checkpoint built offline by `qwen3vl-offline tiny-model`. "
        "Its answers are gibberish; it exists to run the real serving path without a GPU or a model hub.\n"
    )


def _corpus() -> list[str]:
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    texts = [(stdlib / rel).read_text(encoding="utf-8") for rel in _CORPUS_MODULES if (stdlib / rel).is_file()]
    # A little prose and chat-like text, so common English and JSON pieces get merges too.
    texts.append("Describe this image. What is in the picture? The video shows a person walking. " * 20)
    texts.append(
        '{"name": "get_weather", "arguments": {"city": "Paris"}} {"bbox_2d": [10, 20, 300, 400], "label": "cat"}'
    )
    return texts


def _build_tokenizer(chat_template: str) -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import Qwen2Tokenizer

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=BPE_VOCAB_SIZE,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
        special_tokens=[],
    )
    bpe.train_from_iterator(_corpus(), trainer=trainer)
    model = json.loads(bpe.to_str())["model"]
    vocab: dict[str, int] = model["vocab"]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ", 1)) for m in model["merges"]]
    # The added tokens follow the BPE vocabulary in Qwen's own order, whatever order transformers registers them in.
    for token in (*SPECIAL_TOKENS, *PLAIN_ADDED_TOKENS):
        vocab[token] = len(vocab)

    tokenizer = Qwen2Tokenizer(
        vocab=vocab,
        merges=merges,
        unk_token=None,
        bos_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        model_max_length=262144,
    )
    tokenizer.add_special_tokens({"additional_special_tokens": list(SPECIAL_TOKENS)})
    tokenizer.add_tokens(list(PLAIN_ADDED_TOKENS), special_tokens=False)
    tokenizer.chat_template = chat_template
    return tokenizer


def _text_config(spec: TinySpec, *, vocab_size: int, ids: dict[str, int]) -> dict[str, Any]:
    """The language model: 2 layers, 2 query heads sharing 1 KV head (GQA, as in the real family), MoE on request."""
    text: dict[str, Any] = {
        "vocab_size": (vocab_size + 63) // 64 * 64,
        "hidden_size": 128,
        "intermediate_size": 256,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "num_key_value_heads": 1,
        "head_dim": 64,
        "max_position_embeddings": TEXT_MAX_POSITIONS,
        "rms_norm_eps": 1e-6,
        "tie_word_embeddings": False,
        "bos_token_id": ids["<|endoftext|>"],
        "eos_token_id": ids["<|im_end|>"],
        "dtype": "bfloat16",
        # Interleaved M-RoPE: head_dim 64 → 32 rotary pairs split over (t, h, w).
        "rope_parameters": {
            "rope_type": "default",
            "rope_theta": ROPE_THETA,
            "mrope_section": list(MROPE_SECTION),
            "mrope_interleaved": True,
        },
    }
    if spec.moe:
        text.update(
            {
                "num_experts": 4,
                "num_experts_per_tok": 2,
                "moe_intermediate_size": 64,
                "decoder_sparse_step": 1,
                "mlp_only_layers": [],
                # vLLM reads it; transformers' config does not set it.
                "norm_topk_prob": True,
            }
        )
    return text


def _vision_config() -> dict[str, Any]:
    """The vision encoder: Qwen3-VL's layout (16-pixel patches merged 2×2, temporal patch 2, deepstack), tiny widths."""
    return {
        "depth": 2,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_heads": 2,
        "in_channels": 3,
        "patch_size": 16,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
        "out_hidden_size": 128,
        "num_position_embeddings": 256,
        "deepstack_visual_indexes": [0, 1],
        "hidden_act": "gelu_pytorch_tanh",
    }


def _build_config(spec: TinySpec, *, vocab_size: int, ids: dict[str, int]) -> Any:
    text = _text_config(spec, vocab_size=vocab_size, ids=ids)
    common = {
        "image_token_id": ids["<|image_pad|>"],
        "video_token_id": ids["<|video_pad|>"],
        "vision_start_token_id": ids["<|vision_start|>"],
        "vision_end_token_id": ids["<|vision_end|>"],
        "tie_word_embeddings": False,
        "dtype": "bfloat16",
    }
    if spec.moe:
        from transformers import Qwen3VLMoeConfig

        return Qwen3VLMoeConfig(text_config=text, vision_config=_vision_config(), **common)
    from transformers import Qwen3VLConfig

    return Qwen3VLConfig(text_config=text, vision_config=_vision_config(), **common)


def _save_weights(out: Path, config: Any, spec: TinySpec) -> None:
    import torch
    from safetensors.torch import load_file, save_file

    torch.manual_seed(SEED)
    if spec.moe:
        from transformers import Qwen3VLMoeForConditionalGeneration as ModelClass
    else:
        from transformers import Qwen3VLForConditionalGeneration as ModelClass
    model = ModelClass(config).to(torch.bfloat16).eval()
    model.save_pretrained(out, safe_serialization=True)
    config.text_config.norm_topk_prob = True if spec.moe else getattr(config.text_config, "norm_topk_prob", None)
    if not spec.moe:
        return
    # transformers 5.19 writes fused expert weights as [experts, out, in]; the published checkpoints that vLLM loads
    # (is_fused_checkpoint_transposed) hold them as [experts, in, out].
    for path in sorted(out.glob("*.safetensors")):
        tensors = load_file(str(path))
        for name, tensor in tensors.items():
            if name.endswith(("experts.gate_up_proj", "experts.down_proj")) and tensor.dim() == 3:
                tensors[name] = tensor.transpose(1, 2).contiguous()
        save_file(tensors, str(path), metadata={"format": "pt"})
    # Make sure norm_topk_prob is in the saved config even if transformers dropped it.
    cfg_path = out / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg.setdefault("text_config", {})["norm_topk_prob"] = True
    cfg_path.write_text(json.dumps(cfg, indent=2) + "\n")


def _save_processor(out: Path, tokenizer: Any, chat_template: str) -> None:
    from transformers import Qwen2VLImageProcessor, Qwen3VLProcessor, Qwen3VLVideoProcessor

    image_processor = Qwen2VLImageProcessor(
        size={"shortest_edge": IMAGE_MIN_PIXELS, "longest_edge": IMAGE_MAX_PIXELS},
        patch_size=16,
        temporal_patch_size=2,
        merge_size=2,
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
    )
    video_processor = Qwen3VLVideoProcessor(
        size={"shortest_edge": VIDEO_MIN_PIXELS, "longest_edge": VIDEO_MAX_PIXELS},
        patch_size=16,
        temporal_patch_size=2,
        merge_size=2,
        fps=2,
        min_frames=2,
        max_frames=VIDEO_MAX_FRAMES,
        # qwen-vl-utils' per-frame pixel cap (transformers' announced default from 5.22); set explicitly, no warning.
        cap_pixels_per_frame=True,
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
    )
    processor = Qwen3VLProcessor(
        image_processor=image_processor,
        video_processor=video_processor,
        tokenizer=tokenizer,
        chat_template=chat_template,
    )
    processor.save_pretrained(out)
