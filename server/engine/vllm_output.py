"""vLLM's own machinery for what the client asked of the output: structured outputs, tool calls, reasoning, logprobs.

Nothing here parses model output by hand. The request's tools, ``tool_choice``, ``response_format`` and chat-template
switches are handed to vLLM's OpenAI request model, and vLLM's unified ``Parser`` (the configured tool-call parser, e.g.
``hermes`` for Qwen3-VL's ``<tool_call>`` blocks, composed with the reasoning parser, ``qwen3`` for Thinking checkpoints)
does two things with it, exactly as ``vllm serve`` does:

* ``adjust_request`` turns ``tool_choice: required`` or a named function into a structured-output constraint, so even a
  random-weight model must produce a valid call; ``response_format`` becomes vLLM's ``StructuredOutputsParams``;
* ``parse_delta`` splits each choice's streamed text into reasoning, content and tool-call deltas.

Both the streaming and the non-streaming API answers are built from the same ``parse_delta`` stream, so they cannot
disagree.
"""

from __future__ import annotations

import functools
import json
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from server.engine.base import ChoiceDelta, OutputSpec, TokenLogprob, ToolCallDelta, TopLogprob
from server.engine.grammar import bounded_calls, compact_arguments, json_safe_schema
from server.errors import ContextLengthError, InvalidRequestError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ParserNames:
    tool_call_parser: str | None = None
    reasoning_parser: str | None = None


class OutputParsing:
    """The engine-wide part: which parsers, over which tokenizer."""

    def __init__(
        self, tokenizer: Any, names: ParserNames, model_config: Any = None, compact_json: bool = False
    ) -> None:
        from vllm.parser.parser_manager import ParserManager

        self.names = names
        self._compact_json = compact_json
        self._tokenizer = tokenizer
        self._model_config = model_config
        self._parser_cls = ParserManager.get_parser(
            tool_parser_name=names.tool_call_parser,
            reasoning_parser_name=names.reasoning_parser,
            enable_auto_tools=names.tool_call_parser is not None,
            tokenizer=tokenizer,
        )

    def plan(self, spec: OutputSpec, model: str) -> RequestOutputPlan:
        """vLLM's view of the request's output options, adjusted by the parser (forced tool calls → a grammar)."""
        from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest

        if not spec.parse:
            return RequestOutputPlan(self, None, spec, None)
        if spec.tools and spec.tool_choice != "none" and self.names.tool_call_parser is None:
            raise InvalidRequestError(
                "tool calling is not enabled on this server (it runs with --tool-call-parser none)", param="tools"
            )
        body: dict[str, Any] = {
            "model": model,
            "messages": [{"role": "user", "content": ""}],
            "stream": True,
            "parallel_tool_calls": spec.parallel_tool_calls,
            "chat_template_kwargs": dict(spec.chat_template_kwargs) or None,
        }
        if spec.tools:
            forced = spec.tool_choice == "required" or spec.named_tool is not None
            body["tools"] = [_pinned(tool) if forced else dict(tool) for tool in spec.tools]
            body["tool_choice"] = spec.tool_choice
        if spec.response_format is not None:
            body["response_format"] = _json_safe_format(spec.response_format)
        try:
            request = ChatCompletionRequest.model_validate(body)
        except ValueError as exc:  # our API validated these fields already; vLLM's model may still be stricter
            raise InvalidRequestError(f"vLLM refused the request's output options: {first_line(exc)}") from exc
        parser = None
        if self._parser_cls is not None:
            parser = self._new_parser(spec)
            request = parser.adjust_request(request)
        structured = request.extract_structured_outputs()
        if structured is not None and structured.structural_tag:
            tag = bounded_calls(json.loads(structured.structural_tag), spec.call_limit)
            if self._compact_json:
                try:
                    tag = compact_arguments(tag)
                except RuntimeError as exc:  # xgrammar refused a tool's parameter schema (e.g. a lookbehind)
                    message = _XGRAMMAR_LOCATION.sub("", first_line(exc)).strip()
                    raise InvalidRequestError(
                        f"a tool's parameters cannot be compiled: {message}", param="tools"
                    ) from exc
            structured = replace(structured, structural_tag=json.dumps(tag))
        return RequestOutputPlan(self, request, spec, structured, parser)

    def _new_parser(self, spec: OutputSpec) -> Any:
        assert self._parser_cls is not None
        tools = None
        if spec.tools:
            from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionToolsParam

            tools = [ChatCompletionToolsParam.model_validate(dict(tool)) for tool in spec.tools]
        return self._parser_cls(
            self._tokenizer,
            tools,
            chat_template_kwargs=dict(spec.chat_template_kwargs),
            model_config=self._model_config,
        )


def _pinned(tool: Mapping[str, Any]) -> dict[str, Any]:
    """A forced call (``required`` or a named function) must be a valid call: its arguments follow the tool's parameter
    schema. vLLM 0.32 constrains only the call's envelope for a tool without ``strict: true`` (the arguments may be any
    JSON value, e.g. ``true``), so a tool that leaves ``strict`` unset is pinned here; an explicit ``strict: false``
    is the client's choice and is kept. A function without ``parameters`` takes none (OpenAI): its arguments are ``{}``.
    """
    function = dict(tool.get("function") or {})
    function.setdefault("strict", True)
    function.setdefault("parameters", {"type": "object", "properties": {}, "additionalProperties": False})
    return {**tool, "function": function}


def _json_safe_format(response_format: Mapping[str, Any]) -> dict[str, Any]:
    """``response_format`` with its JSON schema made safe for xgrammar (``grammar.json_safe_schema``)."""
    found = dict(response_format)
    inner = found.get("json_schema")
    if isinstance(inner, Mapping) and "schema" in inner:
        found["json_schema"] = {**inner, "schema": json_safe_schema(inner["schema"])}
    return found


@dataclass
class RequestOutputPlan:
    parsing: OutputParsing
    request: Any  # vLLM's ChatCompletionRequest, or None when the output is not parsed
    spec: OutputSpec
    structured_outputs: Any  # vLLM's StructuredOutputsParams or None
    adjusting_parser: Any = None  # the parser that adjusted the request (its is_reasoning_end is stateless)

    def reasoning_kwargs(self, prompt_token_ids: Sequence[int]) -> dict[str, Any]:
        """What ``AsyncLLM.generate`` needs so a grammar starts after the reasoning, not inside it."""
        parser = self.adjusting_parser
        if self.request is None or parser is None or parser.reasoning_parser is None:
            return {}
        return {
            "reasoning_ended": self.request.resolve_reasoning_ended(parser, list(prompt_token_ids)),
            "reasoning_parser_kwargs": {"chat_template_kwargs": dict(self.spec.chat_template_kwargs)},
        }

    def choice_parser(self, prompt_token_ids: Sequence[int]) -> ChoiceParser:
        parser = None
        if self.request is not None and self.parsing._parser_cls is not None:
            parser = self.parsing._new_parser(self.spec)
        return ChoiceParser(parser, self.request, list(prompt_token_ids))


class ChoiceParser:
    """One choice's stream through vLLM's stateful ``Parser.parse_delta``."""

    def __init__(self, parser: Any, request: Any, prompt_token_ids: list[int]) -> None:
        self._parser = parser
        self._request = request
        self._prompt = prompt_token_ids

    def feed(
        self, text: str, token_ids: Sequence[int], finished: bool
    ) -> tuple[str | None, str | None, tuple[ToolCallDelta, ...]]:
        if self._parser is None:
            return text, None, ()
        try:
            delta = self._parser.parse_delta(
                text, list(token_ids), self._request, prompt_token_ids=self._prompt, finished=finished
            )
        except Exception:  # a parser bug must not cost the client its answer: fall back to the raw text
            logger.exception("vLLM's output parser failed; returning the raw text of this delta")
            return text, None, ()
        if delta is None:
            return None, None, ()
        calls = tuple(
            ToolCallDelta(
                index=int(call.index),
                id=call.id,
                name=call.function.name if call.function is not None else None,
                arguments=(call.function.arguments or "") if call.function is not None else "",
            )
            for call in delta.tool_calls or ()
        )
        return delta.content or None, delta.reasoning or None, calls


def parse_step(parser: ChoiceParser, out: Any, logprobs: int | None, tokenizer: Any) -> ChoiceDelta:
    """One vLLM ``CompletionOutput`` delta as our ``ChoiceDelta``."""
    token_ids = tuple(int(t) for t in out.token_ids)
    content, reasoning, calls = parser.feed(str(out.text), token_ids, out.finish_reason is not None)
    return ChoiceDelta(
        index=int(out.index),
        text=str(out.text),
        token_ids=token_ids,
        finish_reason=out.finish_reason,
        content=content,
        reasoning=reasoning,
        tool_calls=calls,
        logprobs=_logprobs(token_ids, out.logprobs, logprobs, tokenizer) if logprobs is not None else (),
    )


@functools.cache
def _byte_decoder() -> dict[str, int]:
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    return {char: byte for byte, char in bytes_to_unicode().items()}


def token_bytes(token_id: int, text: str, tokenizer: Any) -> tuple[int, ...]:
    """A token's own bytes, as OpenAI reports them: Qwen's byte-level BPE spells each byte as one character, so a token
    that ends inside a UTF-8 character (whose decoded text is empty or U+FFFD) still has its exact bytes."""
    try:
        piece = tokenizer.convert_ids_to_tokens(token_id)
    except (AttributeError, IndexError, KeyError, TypeError, ValueError):
        piece = None
    decoder = _byte_decoder()
    if isinstance(piece, str) and piece and all(char in decoder for char in piece):
        return tuple(decoder[char] for char in piece)
    return tuple(text.encode())  # added tokens (<|im_end|>, ...) are stored as their text


def _token_text(token_id: int, entry: Any, tokenizer: Any) -> str:
    decoded = getattr(entry, "decoded_token", None)
    if decoded is None:
        decoded = tokenizer.decode([token_id])
    return str(decoded)


def _logprobs(
    token_ids: Sequence[int], positions: Sequence[Mapping[int, Any]] | None, top: int, tokenizer: Any
) -> tuple[TokenLogprob, ...]:
    if not positions:
        return ()
    out = []
    for token_id, alternatives in zip(token_ids, positions, strict=False):
        chosen = alternatives.get(token_id)
        token = _token_text(token_id, chosen, tokenizer)
        ranked = sorted(
            ((tid, lp) for tid, lp in alternatives.items() if lp.rank is not None and lp.rank <= top),
            key=lambda item: item[1].rank,
        )[:top]
        out.append(
            TokenLogprob(
                token=token,
                logprob=max(float(chosen.logprob), -9999.0) if chosen is not None else -9999.0,
                bytes=token_bytes(token_id, token, tokenizer),
                top=tuple(
                    TopLogprob(
                        token=(text := _token_text(tid, lp, tokenizer)),
                        logprob=max(float(lp.logprob), -9999.0),
                        bytes=token_bytes(tid, text, tokenizer),
                    )
                    for tid, lp in ranked
                ),
            )
        )
    return tuple(out)


def validation_error(exc: Any, output: OutputSpec | None = None, prompt_param: str = "messages") -> InvalidRequestError:
    """A vLLM validation error as a 400 naming the request field it is about."""
    message = str(exc.args[0] if exc.args else "invalid request")
    if "maximum context length" in message:
        return ContextLengthError(message, param=prompt_param)
    param = getattr(exc, "parameter", None)
    if param is None and output is not None and _GRAMMAR_FAILURE.search(message):
        # The grammar compiler refused a schema (e.g. a lookbehind in a pattern): name the field the schema came from,
        # and drop xgrammar's "[hh:mm:ss] /path/file.cc:83: " prefix from the message.
        param = _structured_output_field(output)
        message = _XGRAMMAR_LOCATION.sub("", message).strip()
    return InvalidRequestError(message, param=param)


_GRAMMAR_FAILURE = re.compile(r"grammar|structural tag|json schema", re.IGNORECASE)
_XGRAMMAR_LOCATION = re.compile(r"\[\d{2}:\d{2}:\d{2}\] \S+:\d+: ")


def _structured_output_field(output: OutputSpec) -> str | None:
    """Which request field a structured-output grammar came from: the tools when a call is forced (or no
    response_format is set), otherwise the response_format."""
    forced = output.tool_choice == "required" or output.named_tool is not None
    if output.tools and output.tool_choice != "none" and (forced or output.response_format is None):
        return "tools"
    return "response_format" if output.response_format is not None else None


def first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
