"""The page's grounding parser (server/playground/grounding.js, run in Chromium) agrees with clients/grounding.py.

The same model texts and image sizes go to both; the boxes and points (labels, pixels, order) must be identical. The
texts are the tricky ones by hand (fences, truncation, nesting, labels of every JSON type, rounding halves, Python's
NaN/Infinity, integer limits, overflow) and a few thousand seeded random ones built from JSON-ish fragments.
"""

from __future__ import annotations

import random
from typing import Any

import pytest

from clients.grounding import Box, parse_grounding
from tests.browser.conftest import Served, Tab

pytestmark = pytest.mark.browser

SIZES = [(640, 480), (1, 1), (1000, 1000), (333, 777), (2000, 2000), (100, 100), (1920, 1080)]

TRICKY = [
    "",
    "no boxes here",
    "{",
    "}{][",
    "```json\n```",
    "[1, 2, 3]",
    '```json\n[\n  {"bbox_2d": [100, 200, 500, 600], "label": "cat"},\n  {"bbox_2d": [0, 0, 1000, 1000], "label": "frame"}\n]\n```',
    '{"bbox_2d": [250, 250, 750, 750]}',
    '[{"point_2d": [500, 500], "label": "nose"}, {"bbox_2d": [0, 0, 500, 500], "label": 7}]',
    '{"bbox_2d": [900, 1100, -20, 333.3], "label": "odd"}',
    '{"point_2d": [1001, -1]}',
    '```json\n[{"bbox_2d": [10, 10, 20, 20], "label": "a"}, {"bbox_2d": [30, 30, 4',
    '{"objects": [{"bbox_2d": [1, 2, 3, 4], "label": {"x": 1}}], "note": "ok"}',
    "{'bbox_2d': [1, 2, 3, 4]}",
    '{"bbox_2d": [1, 2, 3]}',
    '{"bbox_2d": "10,20,30,40"}',
    '{"bbox_2d": [true, 2, 3, 4]}',
    '{"bbox_2d": [NaN, 2, 3, 4]}',
    '{"bbox_2d": [1, 2, 3, Infinity]}',
    '{"bbox_2d": [-Infinity, 2, 3, 4]}',
    '{"point_2d": [1, null]}',
    '{"point_2d": {"x": 1, "y": 2}}',
    "{" * 500 + "}" * 10,
    "\x00\xff<|im_end|>",
    # labels of every JSON type, as Python's str() writes them
    '[{"point_2d": [1, 2], "label": 1.0}, {"point_2d": [1, 2], "label": 1e16}, {"point_2d": [1, 2], "label": 1e15}]',
    '[{"point_2d": [1, 2], "label": 0.0001}, {"point_2d": [1, 2], "label": 0.00001}, {"point_2d": [1, 2], "label": -0}]',
    '[{"point_2d": [1, 2], "label": -0.0}, {"point_2d": [1, 2], "label": true}, {"point_2d": [1, 2], "label": false}]',
    '[{"point_2d": [1, 2], "label": null}, {"point_2d": [1, 2], "label": [1]}, {"point_2d": [1, 2], "label": NaN}]',
    '[{"point_2d": [1, 2], "label": Infinity}, {"point_2d": [1, 2], "label": 123456789012345678901234567890}]',
    '[{"point_2d": [1, 2], "label": 1.5e300}, {"point_2d": [1, 2], "label": 2.5E-7}, {"point_2d": [1, 2], "label": 0.1}]',
    '[{"point_2d": [1, 2], "label": 1e400}, {"point_2d": [1, 2], "label": 123.456e2}, {"point_2d": [1, 2], "label": 1E2}]',
    # strings: escapes, unicode, raw control characters (refused by Python's strict json)
    '{"bbox_2d": [1, 2, 3, 4], "label": "caf\\u00e9 \\"quoted\\" \\\\ \\/ \\b\\f\\n\\r\\t \\ud83d\\ude00 😀"}',
    '{"bbox_2d": [1, 2, 3, 4], "label": "tab\there"} {"point_2d": [5, 6], "label": "ok"}',
    '{"bbox_2d": [1, 2, 3, 4], "label": "bad \\x escape"} {"point_2d": [5, 6]}',
    '{"bbox_2d": [1, 2, 3, 4], "label": "bad \\u12 escape"}',
    # numbers Python's json refuses or reads its own way
    '{"bbox_2d": [01, 2, 3, 4]}',
    '{"bbox_2d": [1., 2, 3, 4]}',
    '{"bbox_2d": [.5, 2, 3, 4]}',
    '{"bbox_2d": [+1, 2, 3, 4]}',
    '{"bbox_2d": [1e, 2, 3, 4]}',
    '{"bbox_2d": [1e5, 2E+2, 3e-1, -0]}',
    '{"bbox_2d": [-, 2, 3, 4]}',
    '{"bbox_2d": [1' + "0" * 400 + ", 2, 3, 4]}",
    '{"bbox_2d": [1.7e308, 2, 3, 4]}',
    '{"bbox_2d": [9007199254740993, 2, 3, 4]}',
    # Python's int limit (4300 digits): one more digit fails the whole object, and the parser looks inside it
    '{"bbox_2d": [1, 2, 3, 4], "n": ' + "1" * 4300 + ', "in": {"point_2d": [7, 8]}}',
    '{"bbox_2d": [1, 2, 3, 4], "n": ' + "1" * 4301 + ', "in": {"point_2d": [7, 8]}}',
    # rounding halves: Python rounds them to the even neighbour
    '[{"point_2d": [125, 375]}, {"point_2d": [625, 875]}, {"bbox_2d": [5, 15, 25, 35]}, {"point_2d": [0.5, 1.5]}]',
    '[{"point_2d": [250, 750]}, {"bbox_2d": [2.5, 7.5, 12.5, 17.5]}]',
    # structure: trailing commas, missing colons, duplicate keys, keys that are special in JavaScript
    '{"bbox_2d": [1, 2, 3, 4],}',
    '{"bbox_2d": [1, 2, 3, 4,]}',
    '{"bbox_2d" [1, 2, 3, 4]}',
    '{"bbox_2d": [1, 2, 3, 4], "bbox_2d": [5, 6, 7, 8], "label": "a", "label": "b"}',
    '{"__proto__": {"bbox_2d": [1, 2, 3, 4]}, "constructor": 1, "point_2d": [9, 9]}',
    '{"bbox_2d": [1, 2, 3, 4], "point_2d": [5, 6]}',
    '{"bbox_2d": null, "point_2d": [5, 6], "label": "fallback"}',
    '{"point_2d": [1, 2, 3]}',
    '{ "bbox_2d" :\t[ 1 ,2\n, 3 ,\r4 ] , "label" : "spaced" }',
    '{"a": "{\\"bbox_2d\\": [1, 2, 3, 4]}"} {"b": "}{"} {"point_2d": [3, 4]}',
    '{"wrap": {"bbox_2d": [1, 2, 3, 4]}, "bbox_2d": "not a box"} {"point_2d": [3, 4]}',
    'Sure: {"bbox_2d": [1, 2, 3, 4]} and {"point_2d": [5, 6], "label": "p"} end',
    '[{"bbox_2d": [1, 2, 3, 4]}, {"bbox_2d": [5, 6, 7, 8]}]' * 3,
    "<ref>cat</ref><box>(100,200),(300,400)</box>",
]

FRAGMENTS = [
    "{",
    "}",
    "[",
    "]",
    ",",
    ":",
    " ",
    "\n",
    '"bbox_2d"',
    '"point_2d"',
    '"label"',
    '"bbox_2d": [',
    '"point_2d": [',
    '"label": ',
    "```json\n",
    "0",
    "-0",
    "1",
    "125",
    "375",
    "500",
    "999.5",
    "1000",
    "1001",
    "-20",
    "1.5",
    "2.5e2",
    "1e400",
    "NaN",
    "Infinity",
    "-Infinity",
    "true",
    "null",
    '"cat"',
    '"caf\\u00e9"',
    '"\\ud83d\\ude00"',
    '"bad\\q"',
    "x",
    "'",
    '"',
]


def _random_box(rng: random.Random) -> str:
    def coordinate() -> str:
        kind = rng.random()
        if kind < 0.5:
            return str(rng.randint(-50, 1050))
        if kind < 0.8:
            return f"{rng.randint(0, 2000) / 2}"  # halves, to exercise round-half-even
        return repr(rng.uniform(-10, 1010))

    label = rng.choice(['"obj"', "3", "2.0", "null", "true", '"a b"', "[1]", "1e-5"])
    if rng.random() < 0.7:
        return f'{{"bbox_2d": [{", ".join(coordinate() for _ in range(4))}], "label": {label}}}'
    return f'{{"point_2d": [{coordinate()}, {coordinate()}], "label": {label}}}'


def _fuzz_texts(count: int, seed: int = 8) -> list[str]:
    rng = random.Random(seed)
    texts = []
    for _ in range(count):
        if rng.random() < 0.5:
            boxes = [_random_box(rng) for _ in range(rng.randint(1, 4))]
            text = "```json\n[" + ", ".join(boxes) + "]\n```"
            if rng.random() < 0.3:  # cut short, as by max_tokens
                text = text[: rng.randint(0, len(text))]
            if rng.random() < 0.3:  # a random edit somewhere
                i = rng.randint(0, len(text))
                text = text[:i] + rng.choice(FRAGMENTS) + text[i:]
        else:
            text = "".join(rng.choice(FRAGMENTS) for _ in range(rng.randint(1, 40)))
        texts.append(text)
    return texts


def _python(text: str, width: int, height: int) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for item in parse_grounding(text, width, height):
        if isinstance(item, Box):
            out.append({"type": "box", "label": item.label, "x1": item.x1, "y1": item.y1, "x2": item.x2, "y2": item.y2})
        else:
            out.append({"type": "point", "label": item.label, "x": item.x, "y": item.y})
    return out


def _javascript(tab: Tab, cases: list[tuple[str, int, int]]) -> list[list[dict[str, Any]]]:
    result: list[list[dict[str, Any]]] = tab.page.evaluate(
        """async (cases) => {
            const { parseGrounding } = await import("/playground/grounding.js");
            return cases.map(([text, width, height]) => parseGrounding(text, width, height));
        }""",
        cases,
    )
    return result


def _agree(tab: Tab, cases: list[tuple[str, int, int]]) -> int:
    found = 0
    for (text, width, height), got in zip(cases, _javascript(tab, cases), strict=True):
        want = _python(text, width, height)
        assert got == want, (text, width, height)
        found += len(want)
    return found


def test_tricky_texts_parse_identically_in_python_and_in_the_browser(tab: Tab, server: Served) -> None:
    tab.open(server.base_url)
    cases = [(text, width, height) for text in TRICKY for width, height in SIZES]
    found = _agree(tab, cases)
    assert found > 300  # most texts do hold boxes or points: the comparison is not of empty lists


def test_random_texts_parse_identically_in_python_and_in_the_browser(tab: Tab, server: Served) -> None:
    tab.open(server.base_url)
    rng = random.Random(3)
    cases = [(text, *rng.choice(SIZES)) for text in _fuzz_texts(3000)]
    found = _agree(tab, cases)
    assert found > 1000


def test_the_port_refuses_a_bad_image_size_as_python_does(tab: Tab, server: Served) -> None:
    tab.open(server.base_url)
    with pytest.raises(ValueError, match="positive"):
        parse_grounding("[]", 0, 10)
    message = tab.page.evaluate(
        """async () => {
            const { parseGrounding } = await import("/playground/grounding.js");
            try { parseGrounding("[]", 0, 10); return "no error"; } catch (e) { return `${e.name}: ${e.message}`; }
        }"""
    )
    assert message == "RangeError: width, height and scale must be positive"
