"""The estimate itself: KV cache per token and per GPU, KV capacity, how much media it holds, and what cannot work.

The KV cache keeps at least one KV head per GPU (replicated when ``num_key_value_heads < t``) and is allocated in
vLLM's 16-token blocks from what the memory budget leaves after the weights and an assumed reserve.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from offline.memory.inputs import GIB, Inputs
from offline.memory.shape import Shape
from offline.memory.weights import total_params, weight_parts

KV_BLOCK_TOKENS = 16  # vLLM's default KV-cache block size on CUDA


@dataclass(frozen=True)
class Estimate:
    """Memory per GPU of one deployment of one model, and the reasons it would not start or would serve badly."""

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


@dataclass(frozen=True)
class _Memory:
    """Bytes per GPU: the budget, the weights in it, and the KV cache that is left."""

    budget: int
    weights: int
    by_part: dict[str, int]
    kv_bytes: int  # may be negative: the weights and the reserve do not fit
    kv_token_gpu: int
    kv_token_model: int
    capacity: int  # tokens


def _parallelism_errors(s: Shape, t: int) -> list[str]:
    errors = []
    if s.heads % t:
        errors.append(f"num_attention_heads {s.heads} is not divisible by tensor_parallel_size {t}")
    if s.kv_heads % t and t % s.kv_heads:
        errors.append(f"num_key_value_heads {s.kv_heads} and tensor_parallel_size {t} do not divide one another")
    if s.experts and s.experts % t:
        errors.append(f"{s.experts} experts cannot be split across {t} GPUs")
    return errors


def _memory(s: Shape, inputs: Inputs) -> _Memory:
    t = inputs.tp
    by_part = {p.name: p.bytes(inputs.fp8_weights) for p in weight_parts(s, t, inputs.vision_data_parallel)}
    weights = sum(by_part.values())
    kv_token_gpu = 2 * s.layers * max(1, s.kv_heads // t) * s.head_dim * inputs.kv_cache_bytes_per_value
    kv_token_model = 2 * s.layers * s.kv_heads * s.head_dim * inputs.kv_cache_bytes_per_value
    budget = int(inputs.gpu_memory_gib * inputs.gpu_memory_utilization * GIB)
    kv_bytes = budget - weights - int(inputs.reserve_gib * GIB)
    blocks = max(0, kv_bytes) // (KV_BLOCK_TOKENS * kv_token_gpu)
    return _Memory(budget, weights, by_part, kv_bytes, kv_token_gpu, kv_token_model, blocks * KV_BLOCK_TOKENS)


def _memory_errors(memory: _Memory, inputs: Inputs) -> list[str]:
    budget, weights = memory.budget, memory.weights
    if weights > budget:
        return [
            f"weights need {weights / GIB:.1f} GiB per GPU but gpu_memory_utilization {inputs.gpu_memory_utilization} "
            f"of {inputs.gpu_memory_gib} GiB allows {budget / GIB:.1f} GiB"
        ]
    if memory.kv_bytes <= 0:
        return [
            f"no memory is left for the KV cache: {weights / GIB:.1f} GiB of weights + {inputs.reserve_gib} GiB reserve "
            f"> {budget / GIB:.1f} GiB"
        ]
    return []


def _context_errors(max_len: int | None, derived: int, capacity: int) -> list[str]:
    if max_len is None:
        return []
    errors = []
    if max_len > derived:
        errors.append(
            f"max_model_len {max_len} exceeds the model's max_position_embeddings {derived}: vLLM refuses to start "
            "(for YaRN, override text_config.max_position_embeddings too, as the seed README's config.json edit does)"
        )
    if capacity < max_len:
        errors.append(
            f"KV capacity {capacity} tokens is below max_model_len {max_len}: vLLM refuses to start "
            "(lower max_model_len, raise gpu_memory_utilization, use more GPUs or kv_cache_dtype fp8)"
        )
    return errors


def media_tokens(s: Shape, inputs: Inputs) -> tuple[int, int]:
    """Visual tokens of one full-budget image and of one full-budget video."""
    image_tokens = inputs.image_max_pixels // s.factor**2
    groups = math.ceil(inputs.video_max_frames / s.v_temporal_patch)
    video_tokens = min(inputs.video_total_pixels // s.factor**2, groups * inputs.video_max_tokens_per_frame)
    return image_tokens, video_tokens


def _warnings(inputs: Inputs, image_tokens: int, video_tokens: int, capacity: int) -> list[str]:
    max_len = inputs.max_model_len
    if max_len is None:
        return []
    warnings = []
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
    if inputs.max_num_seqs and capacity >= max_len and full_length < 1.5:
        warnings.append(
            f"only {full_length:.2f} full-length sequences fit in the KV cache; long requests will queue "
            f"(max_num_seqs {inputs.max_num_seqs})"
        )
    return warnings


def estimate(config: dict[str, Any], inputs: Inputs) -> Estimate:
    """The memory estimate of the model described by ``config`` (its ``config.json``) deployed as ``inputs`` say."""
    s = Shape.from_config(config)
    memory = _memory(s, inputs)
    derived = inputs.max_position_embeddings_override or s.max_position_embeddings  # vLLM does not rescale YaRN
    max_len, capacity = inputs.max_model_len, memory.capacity
    errors = _parallelism_errors(s, inputs.tp) + _memory_errors(memory, inputs)
    errors += _context_errors(max_len, derived, capacity)
    image_tokens, video_tokens = media_tokens(s, inputs)
    return Estimate(
        params_total=total_params(s),
        weights_bytes_per_gpu=memory.weights,
        weights_by_part=memory.by_part,
        kv_bytes_per_token_model=memory.kv_token_model,
        kv_bytes_per_token_per_gpu=memory.kv_token_gpu,
        budget_bytes_per_gpu=memory.budget,
        kv_bytes_per_gpu=max(0, memory.kv_bytes),
        kv_capacity_tokens=capacity,
        image_tokens=image_tokens,
        video_tokens=video_tokens,
        images_in_kv=capacity // image_tokens if image_tokens else 0,
        videos_in_kv=capacity // video_tokens if video_tokens else 0,
        full_length_sequences=capacity / max_len if max_len else 0.0,
        max_model_len=max_len,
        derived_max_model_len=derived,
        warnings=_warnings(inputs, image_tokens, video_tokens, capacity),
        errors=errors,
    )
