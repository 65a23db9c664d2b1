"""The grammar repairs (server/engine/grammar.py), checked against xgrammar itself: what the compiled grammar accepts.

``xgrammar.testing._is_grammar_accept_string`` is xgrammar's own test helper (a whole-string match of a grammar); the
e2e suite checks the same promises on the real engine's output (tests/e2e/test_structured_seeds.py).
"""

from __future__ import annotations

import json
import random
from typing import Any

import xgrammar
from xgrammar.testing import _is_grammar_accept_string as accepts

from server.engine.grammar import bounded_calls, compact_arguments, json_safe_schema

CITY = {
    "type": "object",
    "properties": {"city": {"type": "string", "maxLength": 12}, "n": {"type": "integer", "minimum": 0, "maximum": 99}},
    "required": ["city", "n"],
    "additionalProperties": False,
}


def compact(schema: Any) -> Any:
    return xgrammar.Grammar.from_json_schema(json.dumps(schema), any_whitespace=False)


def test_xgrammar_alone_lets_a_raw_control_character_into_a_bounded_string() -> None:
    """The defect being repaired: if this starts failing, xgrammar fixed it and the rewrite may go."""
    assert accepts(compact(CITY), '{"city": "a\x1eb", "n": 26}')


def test_the_rewrite_refuses_raw_control_characters_and_keeps_the_lengths() -> None:
    grammar = compact(json_safe_schema(CITY))
    assert accepts(grammar, '{"city": "Paris", "n": 26}')
    assert accepts(grammar, '{"city": "", "n": 0}')
    assert accepts(grammar, '{"city": "' + "é" * 12 + '", "n": 99}')  # code points, as JSON Schema counts
    assert not accepts(grammar, '{"city": "' + "x" * 13 + '", "n": 1}')
    assert not accepts(grammar, '{"city": "a\x1eb", "n": 26}')
    assert not accepts(grammar, '{"city": "a\x00", "n": 26}')


def test_random_strings_are_accepted_exactly_when_json_allows_them_raw() -> None:
    """A fuzz loop: raw strings over an alphabet heavy in control characters, quotes and backslashes."""
    grammar = compact(json_safe_schema({"type": "string", "minLength": 1, "maxLength": 6}))
    alphabet = [chr(c) for c in range(0, 0x20)] + ['"', "\\", "a", "Z", " ", "é", "中", "\x7f", "\u2028"]
    rng = random.Random(18)
    for _ in range(1500):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 8)))
        literal = '"' + text + '"'
        safe = all(ch not in '"\\' and ord(ch) >= 0x20 for ch in text)
        assert accepts(grammar, literal) == (safe and 1 <= len(text) <= 6), repr(literal)
        if safe:
            assert json.loads(literal) == text  # strict: what is accepted always parses


def test_only_plain_length_bounded_strings_are_rewritten() -> None:
    schema = {
        "type": "object",
        "properties": {
            "a": {"type": "string", "minLength": 2},
            "b": {"type": "string", "maxLength": 3, "pattern": "^x+$"},
            "c": {"type": "string", "maxLength": 3, "enum": ["x"]},
            "d": {"type": "string", "format": "date", "maxLength": 10},
            "e": {"type": "array", "items": {"type": "string", "maxLength": 4}},
            "type": {"type": "string"},
        },
        "$defs": {"f": {"type": "string", "maxLength": 1}},
    }
    safe = json_safe_schema(schema)
    props = safe["properties"]
    assert props["a"] == {"type": "string", "pattern": '^[^\\x00-\\x1f"\\\\]{2,}$'}
    assert props["b"] == schema["properties"]["b"] and props["c"] == schema["properties"]["c"]
    assert props["d"] == schema["properties"]["d"] and props["type"] == {"type": "string"}
    assert props["e"]["items"] == {"type": "string", "pattern": '^[^\\x00-\\x1f"\\\\]{0,4}$'}
    assert safe["$defs"]["f"]["pattern"].endswith("{0,1}$")
    assert schema["properties"]["a"] == {"type": "string", "minLength": 2}  # the client's schema is not touched


def _hermes_tag(at_least_one: bool = True, stop_after_first: bool = False) -> dict[str, Any]:
    """The shape of vLLM 0.32's hermes structural tag for two tools (structural_tag_registry._hermes_tool_tags)."""
    tags = [
        {
            "type": "tag",
            "begin": f'<tool_call>{{"name": "{name}", "arguments": ',
            "content": {"type": "json_schema", "json_schema": CITY},
            "end": "}</tool_call>",
        }
        for name in ("f", "g")
    ]
    fmt = {
        "type": "tags_with_separator",
        "tags": tags,
        "separator": "",
        "at_least_one": at_least_one,
        "stop_after_first": stop_after_first,
    }
    return {"type": "structural_tag", "format": fmt}


def _calls(*names: str, arguments: str = '{"city": "Oslo", "n": 3}') -> str:
    return "".join(f'<tool_call>{{"name": "{name}", "arguments": {arguments}}}</tool_call>' for name in names)


def _tag_grammar(tag: dict[str, Any]) -> Any:
    return xgrammar.Grammar.from_structural_tag(json.dumps(tag))


def test_unbounded_required_calls_are_bounded() -> None:
    assert accepts(_tag_grammar(_hermes_tag()), _calls("f", "g", "f", "g", "f"))  # vLLM's tag: no bound
    bounded = _tag_grammar(bounded_calls(_hermes_tag(), 3))
    assert accepts(bounded, _calls("f")) and accepts(bounded, _calls("g", "f", "g"))
    assert not accepts(bounded, _calls("f", "g", "f", "g")) and not accepts(bounded, "")
    single = _tag_grammar(bounded_calls(_hermes_tag(), 1))
    assert accepts(single, _calls("g")) and not accepts(single, _calls("g", "f"))
    # A tag that already stops after the first call, or allows none, is left as vLLM made it.
    for kept in (_hermes_tag(stop_after_first=True), _hermes_tag(at_least_one=False)):
        assert bounded_calls(kept, 3) == kept


def test_a_separator_is_kept_between_bounded_calls() -> None:
    tag = _hermes_tag()
    tag["format"]["separator"] = "\n"
    grammar = _tag_grammar(bounded_calls(tag, 2))
    assert accepts(grammar, _calls("f") + "\n" + _calls("g"))
    assert not accepts(grammar, _calls("f") + _calls("g"))


def test_call_arguments_get_the_compact_grammar_and_json_safe_strings() -> None:
    loose = _tag_grammar(_hermes_tag())
    padded = _calls("f", arguments='{\n"city": "Oslo"\n,\n"n":3}')
    assert accepts(loose, padded)  # vLLM's tag: free whitespace in the arguments
    assert accepts(loose, _calls("f", arguments='{"city": "a\x1e", "n": 3}'))
    tight = _tag_grammar(compact_arguments(_hermes_tag()))
    assert accepts(tight, _calls("f", "g"))
    assert not accepts(tight, padded)
    assert not accepts(tight, _calls("f", arguments='{"city": "a\x1e", "n": 3}'))
    # A tool whose arguments are any JSON value (strict: false) compiles too.
    tag = _hermes_tag()
    tag["format"]["tags"][0]["content"]["json_schema"] = True
    assert accepts(_tag_grammar(compact_arguments(tag)), _calls("f", arguments="[1, 2]"))
