"""The model's weights on one GPU, by component, sharded as vLLM shards them.

Sharding follows vLLM's layout under tensor parallelism ``t``: attention heads, MLP and expert weights and the vocabulary
are split ``t`` ways (expert parallelism splits the experts instead, the same bytes per GPU); K/V projections keep at
least one KV head per GPU (replicated when ``num_key_value_heads < t``); norms and the MoE router are replicated; the
vision encoder is replicated per GPU with ``mm_encoder_tp_mode="data"``, otherwise its linear layers are split ``t``
ways. FP8 follows Qwen's official FP8 checkpoints (fine-grained e4m3 with one float32 scale per 128×128 block, dynamic
activations): the language model's linear layers are FP8, while embeddings, ``lm_head``, norms, the MoE router and the
whole vision encoder stay BF16.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from offline.memory.shape import Shape

FP8_BLOCK = 128  # Qwen's FP8 checkpoints: one float32 scale per 128x128 weight block


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


def _attention(s: Shape, tp: int) -> Part:
    kv_per_gpu = max(1, s.kv_heads // tp)
    return Part(
        "attention",
        quantizable=[
            Matrix(s.heads * s.head_dim // tp, s.hidden, s.layers),  # q_proj
            Matrix(kv_per_gpu * s.head_dim, s.hidden, 2 * s.layers),  # k_proj, v_proj
            Matrix(s.hidden, s.heads * s.head_dim // tp, s.layers),  # o_proj
        ],
        bf16_params=s.layers * 2 * s.head_dim,  # q_norm, k_norm
    )


def _mlps(s: Shape, tp: int) -> list[Part]:
    """The dense MLP layers and the MoE expert layers (either or both, as the config says)."""
    moe_layers = s.layers - s.dense_layers if s.experts else 0
    dense_layers = s.layers - moe_layers
    parts = []
    if dense_layers:
        gate_up = Matrix(2 * s.intermediate // tp, s.hidden, dense_layers)
        down = Matrix(s.hidden, s.intermediate // tp, dense_layers)
        parts.append(Part("mlp", quantizable=[gate_up, down]))
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
    return parts


def weight_parts(s: Shape, tp: int, vision_data_parallel: bool) -> list[Part]:
    """The model's weights on one GPU, by component."""
    norms = Part("norms", bf16_params=(2 * s.layers + 1) * s.hidden)
    embed = Part("embed_tokens", bf16_params=s.vocab * s.hidden // tp)
    parts = [embed, _attention(s, tp), norms]
    if not s.tied:
        parts.append(Part("lm_head", bf16_params=s.vocab * s.hidden // tp))
    parts += _mlps(s, tp)
    parts.append(Part("vision", bf16_params=vision_params(s, 1 if vision_data_parallel else tp)))
    return parts


def total_params(s: Shape) -> int:
    """All parameters of the checkpoint (one GPU, no parallelism): the number transformers counts."""
    return sum(p.params for p in weight_parts(s, tp=1, vision_data_parallel=True))
