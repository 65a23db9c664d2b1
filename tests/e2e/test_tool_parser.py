"""README: tool calls are parsed by vLLM's own ``hermes`` parser (Qwen3-VL's ``<tool_call>`` JSON blocks) into
``message.tool_calls``, or into tool-call deltas when streaming.

The random-weight checkpoint never writes a ``<tool_call>`` block, so a known one is fed through the engine adapter's
own path (``OutputParsing.plan`` → ``choice_parser`` → ``parse_step`` over vLLM ``CompletionOutput`` deltas, exactly as
``VllmEngine`` does for each engine step) with the served checkpoint's real tokenizer and vLLM's real
``Hermes2ProToolParser``: once as a single delta, once token by token.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import pytest

from server.engine.base import ChoiceDelta, OutputSpec
from server.engine.vllm_output import OutputParsing, ParserNames, RequestOutputPlan, parse_step
from tests.e2e.conftest import LiveServer

pytestmark = pytest.mark.e2e

TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
PREAMBLE = "Let me check."
CALL = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
TEXT = f"{PREAMBLE}\n{CALL}"


@pytest.fixture(scope="module")
def tokenizer(dense_server: LiveServer) -> Any:
    from vllm.tokenizers import get_tokenizer

    return get_tokenizer(str(dense_server.checkpoint))


@pytest.fixture(scope="module")
def parsing(dense_server: LiveServer, tokenizer: Any) -> OutputParsing:
    """The parsers the served engine was configured with (its default: hermes tool calls, no reasoning parser for the
    Instruct checkpoint), over the checkpoint's tokenizer."""
    from vllm.tool_parsers.hermes_tool_parser import Hermes2ProToolParser

    extra = dense_server.app.state.qwen3vl.engine.model.extra
    assert extra["tool_call_parser"] == "hermes"
    parsing = OutputParsing(tokenizer, ParserNames(extra["tool_call_parser"], extra["reasoning_parser"]))
    # vLLM composes the configured parsers into one class; its tool parser is the real Hermes parser, not a stand-in.
    assert issubclass(parsing._parser_cls.tool_parser_cls, Hermes2ProToolParser)
    return parsing


def plan(parsing: OutputParsing, model: str) -> RequestOutputPlan:
    return parsing.plan(OutputSpec(tools=(TOOL,), tool_choice="auto"), model)


def run(plan: RequestOutputPlan, tokenizer: Any, pieces: Sequence[Sequence[int]]) -> list[ChoiceDelta]:
    """Feed the token ids in ``pieces`` as successive vLLM delta outputs (the text of each piece as vLLM's incremental
    detokenizer gives it), the last one finished."""
    from vllm.outputs import CompletionOutput

    parser = plan.choice_parser(tokenizer.encode("What is the weather in Paris?"))
    deltas: list[ChoiceDelta] = []
    seen: list[int] = []
    for i, piece in enumerate(pieces):
        text = tokenizer.decode([*seen, *piece])[len(tokenizer.decode(seen)) :]
        seen.extend(piece)
        last = i == len(pieces) - 1
        out = CompletionOutput(
            index=0,
            text=text,
            token_ids=list(piece),
            cumulative_logprob=None,
            logprobs=None,
            finish_reason="stop" if last else None,
        )
        deltas.append(parse_step(parser, out, None, tokenizer))
    return deltas


def assert_one_weather_call(deltas: list[ChoiceDelta]) -> None:
    calls = [call for delta in deltas for call in delta.tool_calls]
    assert calls, [d.content for d in deltas]
    assert {call.index for call in calls} == {0}  # one call
    names = [call.name for call in calls if call.name]
    assert names == ["get_weather"]  # named once, in the call's first delta
    assert calls[0].id and calls[0].id.startswith("chatcmpl-tool-")
    assert json.loads("".join(call.arguments for call in calls)) == {"city": "Paris"}
    content = "".join(delta.content or "" for delta in deltas)
    assert content.strip() == PREAMBLE  # the text before the call, and none of its markup or JSON
    assert "<tool_call>" not in content and "</tool_call>" not in content and "get_weather" not in content
    assert "".join(delta.text for delta in deltas) == TEXT  # the raw text is still all there


def finish_reasons(deltas: list[ChoiceDelta]) -> list[str]:
    return [d.finish_reason for d in deltas if d.finish_reason]


def test_the_tokenizer_spells_the_call_markers_as_single_tokens(tokenizer: Any) -> None:
    ids = tokenizer.encode(TEXT, add_special_tokens=False)
    assert tokenizer.convert_tokens_to_ids("<tool_call>") in ids
    assert tokenizer.convert_tokens_to_ids("</tool_call>") in ids


def test_a_whole_tool_call_block_becomes_one_call(
    parsing: OutputParsing, tokenizer: Any, dense_server: LiveServer
) -> None:
    ids = tokenizer.encode(TEXT, add_special_tokens=False)
    assert_one_weather_call(run(plan(parsing, dense_server.model), tokenizer, [ids]))


def test_a_tool_call_streamed_token_by_token_becomes_the_same_call(
    parsing: OutputParsing, tokenizer: Any, dense_server: LiveServer
) -> None:
    ids = tokenizer.encode(TEXT, add_special_tokens=False)
    deltas = run(plan(parsing, dense_server.model), tokenizer, [[token] for token in ids])
    assert len(deltas) == len(ids)
    assert_one_weather_call(deltas)
    # Streamed: the arguments arrive in several deltas after the name, never inside content.
    assert sum(1 for d in deltas if any(call.arguments for call in d.tool_calls)) > 1
    assert finish_reasons(deltas) == ["stop"]


def test_without_tools_the_same_text_stays_content(
    parsing: OutputParsing, tokenizer: Any, dense_server: LiveServer
) -> None:
    """The parser runs only for requests that offer tools (``tool_choice: none`` leaves the text alone)."""
    ids = tokenizer.encode(TEXT, add_special_tokens=False)
    none = parsing.plan(OutputSpec(tools=(TOOL,), tool_choice="none"), dense_server.model)
    deltas = run(none, tokenizer, [[token] for token in ids])
    assert not any(d.tool_calls for d in deltas)
