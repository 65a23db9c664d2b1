"""The fields of a Qwen3-VL ``config.json`` that decide memory, read once so the arithmetic never touches raw JSON."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


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
