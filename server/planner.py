"""Memory arithmetic for a profile: weights per GPU, KV cache per token, KV capacity, and how much media that holds.

``qwen3vl-server plan --profile NAME`` prints it. Everything comes from the model's own ``config.json`` (a local folder, the
Hugging Face cache, ``--config``, or the copy bundled in ``server/profiles/configs/``) and from the profile's settings;
nothing is downloaded and no GPU is needed. vLLM decides the real numbers when it profiles memory at start-up; this is the
same arithmetic done beforehand, so that a profile that cannot fit is caught at review time instead of after a 30-minute
load. Written by hand: no library computes per-GPU sharded sizes of a Qwen3-VL checkpoint from its config.

Sharding follows vLLM's layout under tensor parallelism ``t``: attention heads, MLP and expert weights and the vocabulary
are split ``t`` ways (expert parallelism splits the experts instead, the same bytes per GPU); K/V projections and the KV
cache keep at least one KV head per GPU (replicated when ``num_key_value_heads < t``); norms and the MoE router are
replicated; the vision encoder is replicated per GPU with ``mm_encoder_tp_mode="data"``, otherwise its linear layers are
split ``t`` ways. FP8 follows Qwen's official FP8 checkpoints (fine-grained e4m3 with one float32 scale per 128×128
block, dynamic activations): the language model's linear layers are FP8, while embeddings, ``lm_head``, norms, the MoE
router and the whole vision encoder stay BF16.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

GIB = 1024**3
# What CUDA reports as total memory on an H100 SXM 80GB (vLLM logs "total_gpu_memory (79.19GiB)").
H100_MEMORY_GIB = 79.19
# Memory vLLM's profiling run takes besides weights and KV cache (peak activations of the largest batch and of the vision
# encoder, CUDA graphs, NCCL/cuBLAS workspaces). vLLM measures it at start-up; a planner can only assume it.
DEFAULT_RESERVE_GIB = 4.0
KV_BLOCK_TOKENS = 16  # vLLM's default KV-cache block size on CUDA
FP8_BLOCK = 128  # Qwen's FP8 checkpoints: one float32 scale per 128x128 weight block


@dataclass(frozen=True)
class Shape:
    """The fields of a Qwen3-VL ``config.json`` that decide memory (dense and MoE)."""

    vocab: int
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    tied: bool
    experts: int  # 0 for a dense model
    moe_intermediate: int
    dense_layers: int  # MoE models: layers listed in mlp_only_layers (dense MLP instead of experts)
    max_position_embeddings: int
    v_depth: int
    v_hidden: int
    v_intermediate: int
    v_out: int
    v_patch: int
    v_temporal_patch: int
    v_merge: int
    v_in_channels: int
    v_positions: int
    v_deepstack: int

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Shape:
        text, vision = config["text_config"], config["vision_config"]
        experts = int(text.get("num_experts") or text.get("num_local_experts") or 0)
        return cls(
            vocab=int(text["vocab_size"]),
            hidden=int(text["hidden_size"]),
            layers=int(text["num_hidden_layers"]),
            heads=int(text["num_attention_heads"]),
            kv_heads=int(text["num_key_value_heads"]),
            head_dim=int(text.get("head_dim") or text["hidden_size"] // text["num_attention_heads"]),
            intermediate=int(text["intermediate_size"]),
            tied=bool(config.get("tie_word_embeddings", False)),
            experts=experts,
            moe_intermediate=int(text.get("moe_intermediate_size") or 0),
            dense_layers=len(text.get("mlp_only_layers") or []) if experts else 0,
            max_position_embeddings=int(text["max_position_embeddings"]),
            v_depth=int(vision["depth"]),
            v_hidden=int(vision["hidden_size"]),
            v_intermediate=int(vision["intermediate_size"]),
            v_out=int(vision["out_hidden_size"]),
            v_patch=int(vision["patch_size"]),
            v_temporal_patch=int(vision["temporal_patch_size"]),
            v_merge=int(vision["spatial_merge_size"]),
            v_in_channels=int(vision.get("in_channels", 3)),
            v_positions=int(vision["num_position_embeddings"]),
            v_deepstack=len(vision.get("deepstack_visual_indexes") or []),
        )

    @property
    def factor(self) -> int:
        """Pixels per side of one visual token (patch × merge)."""
        return self.v_patch * self.v_merge


@dataclass(frozen=True)
class Matrix:
    """One weight matrix (or a stack of ``count`` equal ones): its shape decides its FP8 block scales."""

    rows: int
    cols: int
    count: int = 1

    @property
    def params(self) -> int:
        return self.rows * self.cols * self.count

    def fp8_bytes(self) -> int:
        scales = math.ceil(self.rows / FP8_BLOCK) * math.ceil(self.cols / FP8_BLOCK) * self.count * 4
        return self.params + scales


@dataclass
class Part:
    """Weights of one component on one GPU."""

    name: str
    quantizable: list[Matrix] = field(default_factory=list)  # FP8 in an FP8 checkpoint (LM linear layers)
    bf16_params: int = 0  # always BF16 (embeddings, norms, router, biases, vision)

    @property
    def params(self) -> int:
        return self.bf16_params + sum(m.params for m in self.quantizable)

    def bytes(self, fp8: bool) -> int:
        if fp8:
            return 2 * self.bf16_params + sum(m.fp8_bytes() for m in self.quantizable)
        return 2 * self.params


def vision_params(s: Shape, shards: int = 1) -> int:
    """Vision encoder parameters on one GPU (linear layers split ``shards`` ways; the rest replicated)."""
    h, i, merged = s.v_hidden, s.v_intermediate, s.v_hidden * s.v_merge**2
    linear = s.v_depth * (h * 3 * h + h * h + h * i + i * h)  # qkv, proj, fc1, fc2 (weights)
    linear += (1 + s.v_deepstack) * (merged * merged + merged * s.v_out)  # patch mergers' fc1, fc2
    rest = h * s.v_in_channels * s.v_temporal_patch * s.v_patch**2 + h  # patch embedding (conv + bias)
    rest += s.v_positions * h  # learned position embeddings
    rest += s.v_depth * (3 * h + h + i + h + 4 * h)  # biases of qkv, proj, fc1, fc2; two LayerNorms (weight + bias)
    rest += 2 * h + merged + s.v_out  # final merger: LayerNorm over hidden, fc1/fc2 biases
    rest += s.v_deepstack * (2 * merged + merged + s.v_out)  # deepstack mergers: LayerNorm over merged, biases
    return linear // shards + rest


def weight_parts(s: Shape, tp: int, vision_data_parallel: bool) -> list[Part]:
    """The model's weights on one GPU, by component."""
    kv_per_gpu = max(1, s.kv_heads // tp)
    attention = Part(
        "attention",
        quantizable=[
            Matrix(s.heads * s.head_dim // tp, s.hidden, s.layers),  # q_proj
            Matrix(kv_per_gpu * s.head_dim, s.hidden, 2 * s.layers),  # k_proj, v_proj
            Matrix(s.hidden, s.heads * s.head_dim // tp, s.layers),  # o_proj
        ],
        bf16_params=s.layers * 2 * s.head_dim,  # q_norm, k_norm
    )
    norms = Part("norms", bf16_params=(2 * s.layers + 1) * s.hidden)
    embed = Part("embed_tokens", bf16_params=s.vocab * s.hidden // tp)
    parts = [embed, attention, norms]
    if not s.tied:
        parts.append(Part("lm_head", bf16_params=s.vocab * s.hidden // tp))
    moe_layers = s.layers - s.dense_layers if s.experts else 0
    dense_layers = s.layers - moe_layers
    if dense_layers:
        parts.append(
            Part(
                "mlp",
                quantizable=[
                    Matrix(2 * s.intermediate // tp, s.hidden, dense_layers),  # gate_proj + up_proj
                    Matrix(s.hidden, s.intermediate // tp, dense_layers),  # down_proj
                ],
            )
        )
    if moe_layers:
        experts = moe_layers * s.experts // tp  # whole experts per GPU (expert parallel); TP splits each: same bytes
        parts.append(
            Part(
                "experts",
                quantizable=[
                    Matrix(2 * s.moe_intermediate, s.hidden, experts),
                    Matrix(s.hidden, s.moe_intermediate, experts),
                ],
                bf16_params=moe_layers * s.experts * s.hidden,  # router (replicated, kept BF16)
            )
        )
    parts.append(Part("vision", bf16_params=vision_params(s, 1 if vision_data_parallel else tp)))
    return parts


def total_params(s: Shape) -> int:
    """All parameters of the checkpoint (one GPU, no parallelism): the number transformers counts."""
    return sum(p.params for p in weight_parts(s, tp=1, vision_data_parallel=True))


@dataclass(frozen=True)
class Inputs:
    """What a plan depends on besides the model's shape."""

    tp: int = 1
    vision_data_parallel: bool = False
    fp8_weights: bool = False
    kv_cache_bytes_per_value: int = 2  # BF16; 1 with kv_cache_dtype fp8
    gpu_memory_gib: float = H100_MEMORY_GIB
    gpu_memory_utilization: float = 0.9
    reserve_gib: float = DEFAULT_RESERVE_GIB
    max_model_len: int | None = None
    max_num_seqs: int | None = None
    images_per_prompt: int = 0
    videos_per_prompt: int = 0
    image_max_pixels: int = 16384 * 32 * 32
    video_total_pixels: int = 24576 * 32 * 32
    video_max_frames: int = 64
    video_max_tokens_per_frame: int = 768  # qwen-vl-utils' per-frame ceiling for videos
    max_position_embeddings_override: int | None = None


@dataclass(frozen=True)
class Plan:
    params_total: int
    weights_bytes_per_gpu: int
    weights_by_part: dict[str, int]
    kv_bytes_per_token_model: int  # whole model, all KV heads (what one token costs across the deployment)
    kv_bytes_per_token_per_gpu: int
    budget_bytes_per_gpu: int
    kv_bytes_per_gpu: int
    kv_capacity_tokens: int
    image_tokens: int  # visual tokens of one full-budget image
    video_tokens: int  # visual tokens of one full-budget video
    images_in_kv: int
    videos_in_kv: int
    full_length_sequences: float
    max_model_len: int | None
    derived_max_model_len: int
    warnings: list[str]
    errors: list[str]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def plan(config: dict[str, Any], inputs: Inputs) -> Plan:
    s = Shape.from_config(config)
    t = inputs.tp
    errors: list[str] = []
    warnings: list[str] = []
    if s.heads % t:
        errors.append(f"num_attention_heads {s.heads} is not divisible by tensor_parallel_size {t}")
    if s.kv_heads % t and t % s.kv_heads:
        errors.append(f"num_key_value_heads {s.kv_heads} and tensor_parallel_size {t} do not divide one another")
    if s.experts and s.experts % t:
        errors.append(f"{s.experts} experts cannot be split across {t} GPUs")

    parts = weight_parts(s, t, inputs.vision_data_parallel)
    by_part = {p.name: p.bytes(inputs.fp8_weights) for p in parts}
    weights = sum(by_part.values())
    kv_per_gpu_heads = max(1, s.kv_heads // t)
    kv_token_gpu = 2 * s.layers * kv_per_gpu_heads * s.head_dim * inputs.kv_cache_bytes_per_value
    kv_token_model = 2 * s.layers * s.kv_heads * s.head_dim * inputs.kv_cache_bytes_per_value
    budget = int(inputs.gpu_memory_gib * inputs.gpu_memory_utilization * GIB)
    kv_bytes = budget - weights - int(inputs.reserve_gib * GIB)
    blocks = max(0, kv_bytes) // (KV_BLOCK_TOKENS * kv_token_gpu)
    capacity = blocks * KV_BLOCK_TOKENS

    if weights > budget:
        errors.append(
            f"weights need {weights / GIB:.1f} GiB per GPU but gpu_memory_utilization {inputs.gpu_memory_utilization} "
            f"of {inputs.gpu_memory_gib} GiB allows {budget / GIB:.1f} GiB"
        )
    elif kv_bytes <= 0:
        errors.append(
            f"no memory is left for the KV cache: {weights / GIB:.1f} GiB of weights + {inputs.reserve_gib} GiB reserve "
            f"> {budget / GIB:.1f} GiB"
        )

    derived = inputs.max_position_embeddings_override or s.max_position_embeddings  # vLLM does not rescale YaRN
    max_len = inputs.max_model_len
    if max_len is not None and max_len > derived:
        errors.append(
            f"max_model_len {max_len} exceeds the model's max_position_embeddings {derived}: vLLM refuses to start "
            "(for YaRN, override text_config.max_position_embeddings too, as the seed README's config.json edit does)"
        )
    if max_len is not None and capacity < max_len:
        errors.append(
            f"KV capacity {capacity} tokens is below max_model_len {max_len}: vLLM refuses to start "
            "(lower max_model_len, raise gpu_memory_utilization, use more GPUs or kv_cache_dtype fp8)"
        )

    image_tokens = inputs.image_max_pixels // s.factor**2
    groups = math.ceil(inputs.video_max_frames / s.v_temporal_patch)
    video_tokens = min(inputs.video_total_pixels // s.factor**2, groups * inputs.video_max_tokens_per_frame)
    if max_len is not None:
        for kind, count, tokens in (
            ("image", inputs.images_per_prompt, image_tokens),
            ("video", inputs.videos_per_prompt, video_tokens),
        ):
            if count and count * tokens > max_len:
                warnings.append(
                    f"{count} full-budget {kind}s per prompt ({count} x {tokens} tokens) exceed max_model_len {max_len}: "
                    f"such requests get a 400; at most {max_len // tokens} fit"
                )
    full_length = capacity / max_len if max_len else 0.0
    if max_len is not None and inputs.max_num_seqs and capacity >= max_len and full_length < 1.5:
        warnings.append(
            f"only {full_length:.2f} full-length sequences fit in the KV cache; long requests will queue "
            f"(max_num_seqs {inputs.max_num_seqs})"
        )
    return Plan(
        params_total=total_params(s),
        weights_bytes_per_gpu=weights,
        weights_by_part=by_part,
        kv_bytes_per_token_model=kv_token_model,
        kv_bytes_per_token_per_gpu=kv_token_gpu,
        budget_bytes_per_gpu=budget,
        kv_bytes_per_gpu=max(0, kv_bytes),
        kv_capacity_tokens=capacity,
        image_tokens=image_tokens,
        video_tokens=video_tokens,
        images_in_kv=capacity // image_tokens if image_tokens else 0,
        videos_in_kv=capacity // video_tokens if video_tokens else 0,
        full_length_sequences=full_length,
        max_model_len=max_len,
        derived_max_model_len=derived,
        warnings=warnings,
        errors=errors,
    )


# --- Profiles ---------------------------------------------------------------------------------------------------------

_SIZE = re.compile(r"Qwen3-VL-(\d+B(?:-A\d+B)?)", re.IGNORECASE)


def bundled_config_name(model: str) -> str | None:
    """The bundled config for a Qwen3-VL hub id: Instruct, Thinking and FP8 variants share one architecture."""
    match = _SIZE.search(model)
    return f"Qwen3-VL-{match.group(1).upper()}.json" if match else None


def load_config(model: str, explicit: Path | None = None) -> tuple[dict[str, Any], str]:
    """The model's config.json and where it came from: ``explicit``, a local folder, the HF cache, or the bundled copy."""
    local = explicit if explicit is not None else (Path(model) if Path(model).is_dir() else None)
    if local is not None:
        path = local / "config.json" if local.is_dir() else local
        if not path.is_file():
            raise ValueError(f"no config.json at {path}")
        return json.loads(path.read_text()), str(path)
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(model, "config.json")
    if isinstance(cached, str):
        return json.loads(Path(cached).read_text()), cached
    name = bundled_config_name(model)
    if name is None:
        raise ValueError(f"no config.json for {model!r}: pass --config PATH")
    bundled = resources.files("server.profiles").joinpath("configs", name)
    return json.loads(bundled.read_text()), f"bundled {name}"


def inputs_for(settings: Any, config: dict[str, Any], gpu_memory_gib: float, reserve_gib: float) -> Inputs:
    """Plan inputs from our ``Settings`` (a profile plus any overrides)."""
    extra: dict[str, Any] = dict(settings.engine_extra or {})
    quant = (config.get("quantization_config") or {}).get("quant_method")
    fp8 = quant == "fp8" or extra.get("quantization") == "fp8" or str(settings.model).upper().endswith("-FP8")
    kv_dtype = str(extra.get("kv_cache_dtype", "auto"))
    text_overrides = (extra.get("hf_overrides") or {}).get("text_config") or {}
    limits = settings.limit_mm_per_prompt
    return Inputs(
        tp=settings.tensor_parallel_size,
        vision_data_parallel=extra.get("mm_encoder_tp_mode") == "data",
        fp8_weights=fp8,
        kv_cache_bytes_per_value=1 if kv_dtype.startswith("fp8") else 2,
        gpu_memory_gib=gpu_memory_gib,
        gpu_memory_utilization=settings.gpu_memory_utilization,
        reserve_gib=reserve_gib,
        max_model_len=settings.max_model_len,
        max_num_seqs=settings.max_num_seqs,
        images_per_prompt=int(limits.get("image", 0)),
        videos_per_prompt=int(limits.get("video", 0)),
        image_max_pixels=settings.media_image_max_pixels,
        video_total_pixels=settings.media_video_total_pixels,
        video_max_frames=settings.media_max_video_frames,
        max_position_embeddings_override=text_overrides.get("max_position_embeddings"),
    )


def gib(n: int) -> str:
    return f"{n / GIB:,.2f} GiB"


def render(name: str, source: str, inputs: Inputs, result: Plan) -> str:
    precision = "FP8 (Qwen fine-grained, block 128)" if inputs.fp8_weights else "BF16"
    lines = [
        f"# plan for {name}",
        f"config: {source}",
        f"parameters: {result.params_total:,} ({result.params_total / 1e9:.2f} B)",
        f"GPUs: {inputs.tp} x {inputs.gpu_memory_gib} GiB, gpu_memory_utilization {inputs.gpu_memory_utilization}"
        f" -> budget {gib(result.budget_bytes_per_gpu)} per GPU",
        f"weights: {precision}, vision encoder {'replicated (data parallel)' if inputs.vision_data_parallel else 'sharded'}",
        f"weights per GPU: {gib(result.weights_bytes_per_gpu)}",
    ]
    lines += [f"  {part:14s} {gib(size)}" for part, size in result.weights_by_part.items()]
    kv_kind = "FP8" if inputs.kv_cache_bytes_per_value == 1 else "BF16"
    lines += [
        f"reserve (activations, CUDA graphs, workspaces): {inputs.reserve_gib} GiB per GPU (assumed)",
        f"KV cache ({kv_kind}): {result.kv_bytes_per_token_model:,} bytes/token for the model, "
        f"{result.kv_bytes_per_token_per_gpu:,} bytes/token per GPU",
        f"KV cache per GPU: {gib(result.kv_bytes_per_gpu)} -> capacity {result.kv_capacity_tokens:,} tokens",
        f"max_model_len: {result.max_model_len} (model allows {result.derived_max_model_len:,});"
        f" full-length sequences that fit at once: {result.full_length_sequences:.2f}",
        f"full-budget image: {inputs.image_max_pixels:,} px = {result.image_tokens:,} visual tokens;"
        f" {result.images_in_kv:,} fit in the KV cache at once",
        f"full-budget video: {inputs.video_max_frames} frames, {inputs.video_total_pixels:,} px in all ="
        f" {result.video_tokens:,} visual tokens; {result.videos_in_kv:,} fit in the KV cache at once",
    ]
    lines += [f"WARNING: {w}" for w in result.warnings]
    lines += [f"ERROR: {e}" for e in result.errors]
    lines.append("verdict: " + ("does not fit" if result.errors else "fits"))
    return "\n".join(lines)
