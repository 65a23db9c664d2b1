"""Two repairs to the grammars vLLM 0.32 builds with xgrammar 0.2.8, so constrained JSON is always valid and bounded.

* **Raw control characters.** xgrammar compiles a string schema with ``minLength``/``maxLength`` to the character class
  ``[^"\\\\\\r\\n]``, which admits U+0000–U+001F other than CR and LF; RFC 8259 forbids them unescaped and
  ``json.loads`` refuses them (a random-weight model wrote ``"actionir\\u001eB"`` with a raw U+001E). Its regex path is
  JSON-string aware, so ``json_safe_schema`` states the same lengths as a ``pattern`` of safe characters: the values
  allowed are those of the old class minus the control characters (neither allowed escapes).
* **Forced tool calls.** For ``tool_choice: required`` with parallel calls, vLLM's hermes structural tag repeats
  calls without bound, so a weak model calls until ``max_tokens`` and its last call is cut off; and the calls'
  arguments are xgrammar's ``json_schema`` content, which allows free whitespace (``{\\n"x": 5\\n,...``) whatever
  the engine's compact setting says. ``bounded_calls`` caps the repetition; ``compact_arguments`` swaps each
  arguments schema for the grammar xgrammar itself compiles from it without free whitespace (the grammar
  ``response_format`` gets under ``disable_any_whitespace``).

Hand-written because neither vLLM nor xgrammar offers a switch for either (checked against the installed sources); each
rewrite only narrows what the grammar allows.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["bounded_calls", "compact_arguments", "json_safe_schema"]

_LENGTHS = ("minLength", "maxLength")
_OWN_STRING_RULES = ("pattern", "format", "enum", "const")  # compiled by paths that exclude control characters


def json_safe_schema(schema: Any) -> Any:
    """``schema`` with every length-bounded plain string stated as an anchored pattern of characters JSON allows
    unescaped (neither ``"`` nor ``\\`` nor U+0000–U+001F), of the same lengths; anything else is kept as is."""
    if isinstance(schema, list):
        return [json_safe_schema(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    node = {key: json_safe_schema(value) for key, value in schema.items()}
    if (
        node.get("type") == "string"
        and any(k in node for k in _LENGTHS)
        and not any(k in node for k in _OWN_STRING_RULES)
    ):
        low, high = node.pop("minLength", 0), node.pop("maxLength", None)
        if isinstance(low, int) and (high is None or isinstance(high, int)):
            upper = "" if high is None else str(high)
            node["pattern"] = f'^[^\\x00-\\x1f"\\\\]{{{low},{upper}}}$'
        else:  # not integers: the API refused such a schema already; leave it to vLLM's own refusal
            node.update({"minLength": low, "maxLength": high})
    return node


def compact_arguments(node: Any) -> Any:
    """A structural tag (as JSON data) whose JSON-schema contents are replaced by xgrammar's compact grammar for the
    same (JSON-safe) schema: one blank after ``:`` and ``,``, nowhere else."""
    if isinstance(node, list):
        return [compact_arguments(item) for item in node]
    if not isinstance(node, dict):
        return node
    if node.get("type") == "json_schema" and node.get("style", "json") == "json":
        import xgrammar

        schema = json.dumps(json_safe_schema(node["json_schema"]))
        return {"type": "grammar", "grammar": str(xgrammar.Grammar.from_json_schema(schema, any_whitespace=False))}
    return {key: compact_arguments(value) for key, value in node.items()}


def bounded_calls(node: Any, most: int) -> Any:
    """A structural tag (as JSON data) in which every unbounded list of required tool calls (xgrammar's
    ``tags_with_separator`` with ``at_least_one`` and no ``stop_after_first``) takes at most ``most`` calls."""
    if isinstance(node, list):
        return [bounded_calls(item, most) for item in node]
    if not isinstance(node, dict):
        return node
    node = {key: bounded_calls(value, most) for key, value in node.items()}
    unbounded = (
        node.get("type") == "tags_with_separator" and node.get("at_least_one") and not node.get("stop_after_first")
    )
    if not unbounded:
        return node
    call = {"type": "or", "elements": node["tags"]}
    if most == 1:
        return call
    separator = node.get("separator") or ""
    then = (
        call
        if not separator
        else {"type": "sequence", "elements": [{"type": "const_string", "value": separator}, call]}
    )
    return {"type": "sequence", "elements": [call, {"type": "repeat", "min": 0, "max": most - 1, "content": then}]}
