"""What the memory arithmetic depends on besides the model's shape: the GPUs, the precisions and the serving limits.

``inputs_for`` reads them from our ``Settings`` (a profile plus any overrides), so ``plan`` checks exactly what
``qwen3vl-server --profile NAME`` would run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from server.config import Settings

GIB = 1024**3
# What CUDA reports as total memory on an H100 SXM 80GB (vLLM logs "total_gpu_memory (79.19GiB)").
H100_MEMORY_GIB = 79.19
# Memory vLLM's profiling run takes besides weights and KV cache (peak activations of the largest batch and of the vision
# encoder, CUDA graphs, NCCL/cuBLAS workspaces). vLLM measures it at start-up; a planner can only assume it.
DEFAULT_RESERVE_GIB = 4.0


@dataclass(frozen=True)
class Inputs:
    """What an estimate depends on besides the model's shape."""

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


def inputs_for(settings: Settings, config: dict[str, Any], gpu_memory_gib: float, reserve_gib: float) -> Inputs:
    """Estimate inputs from our ``Settings`` (a profile plus any overrides)."""
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
