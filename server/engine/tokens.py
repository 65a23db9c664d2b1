"""Client text that spells an added token, tokenized as the plain text it is.

HF tokenizers match added tokens before anything else; ``split_special_tokens=True`` turns that off for the *special*
ones only (``<|im_end|>``, ``<|image_pad|>``), while Qwen's ``<think>`` and ``<tool_call>`` are added but not special
and would still be matched. Such a literal is tokenized in two pieces (its first character, then the rest), which no
added token can span. The result is checked: it never holds an added token's id.
"""

from __future__ import annotations

from collections.abc import Set
from typing import Any

__all__ = ["inert_ids"]


def inert_ids(tokenizer: Any, literal: str, added_ids: Set[int]) -> list[int]:
    """``literal``'s token ids with no added token among them."""
    ids: list[int] = tokenizer.encode(literal, add_special_tokens=False, split_special_tokens=True)
    if added_ids.isdisjoint(ids):
        return ids
    ids = [
        *tokenizer.encode(literal[:1], add_special_tokens=False, split_special_tokens=True),
        *tokenizer.encode(literal[1:], add_special_tokens=False, split_special_tokens=True),
    ]
    if added_ids.isdisjoint(ids):
        return ids
    # An added token one character long, or one nested in another: character by character, each checked.
    out: list[int] = []
    for char in literal:
        piece = tokenizer.encode(char, add_special_tokens=False, split_special_tokens=True)
        if not added_ids.isdisjoint(piece):
            raise ValueError("a literal character is itself an added token")
        out += piece
    return out
