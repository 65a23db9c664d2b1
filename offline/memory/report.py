"""The text ``qwen3vl-offline plan`` prints: the estimate, part by part, with its warnings, errors and verdict."""

from __future__ import annotations

from offline.memory.estimate import Estimate
from offline.memory.inputs import GIB, Inputs


def gib(n: int) -> str:
    return f"{n / GIB:,.2f} GiB"


def _header(name: str, source: str, inputs: Inputs, result: Estimate) -> list[str]:
    precision = "FP8 (Qwen fine-grained, block 128)" if inputs.fp8_weights else "BF16"
    return [
        f"# plan for {name}",
        f"config: {source}",
        f"parameters: {result.params_total:,} ({result.params_total / 1e9:.2f} B)",
        f"GPUs: {inputs.tp} x {inputs.gpu_memory_gib} GiB, gpu_memory_utilization {inputs.gpu_memory_utilization}"
        f" -> budget {gib(result.budget_bytes_per_gpu)} per GPU",
        f"weights: {precision}, vision encoder {'replicated (data parallel)' if inputs.vision_data_parallel else 'sharded'}",
        f"weights per GPU: {gib(result.weights_bytes_per_gpu)}",
    ]


def _kv_and_media(inputs: Inputs, result: Estimate) -> list[str]:
    kv_kind = "FP8" if inputs.kv_cache_bytes_per_value == 1 else "BF16"
    return [
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


def render(name: str, source: str, inputs: Inputs, result: Estimate) -> str:
    lines = _header(name, source, inputs, result)
    lines += [f"  {part:14s} {gib(size)}" for part, size in result.weights_by_part.items()]
    lines += _kv_and_media(inputs, result)
    lines += [f"WARNING: {w}" for w in result.warnings]
    lines += [f"ERROR: {e}" for e in result.errors]
    lines.append("verdict: " + ("does not fit" if result.errors else "fits"))
    return "\n".join(lines)
