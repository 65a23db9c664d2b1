"""What each choice of a request has produced so far, and how one engine step is applied to it.

The runner applies every step exactly once, here, whether the client streams or not: the tool-call filter
(``parallel_tool_calls: false``), the merge of tool-call pieces by index, token and logprob counts, and the finish
reason. A streaming API shapes each applied ``Piece`` into a chunk; a whole answer is shaped from the final states.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from server.engine.base import ChoiceDelta, EngineStep, OutputSpec, TokenLogprob
from server.errors import EngineUnavailableError


@dataclass
class ToolCallState:
    id: str
    name: str
    arguments: list[str] = field(default_factory=list)


@dataclass
class ChoiceState:
    """Everything one choice has produced so far: content, reasoning, tool calls (merged by index), logprobs."""

    index: int
    content: list[str] = field(default_factory=list)
    reasoning: list[str] = field(default_factory=list)
    tool_calls: dict[int, ToolCallState] = field(default_factory=dict)
    logprobs: list[TokenLogprob] = field(default_factory=list)
    logprob_chars: int = 0  # characters of the logprob tokens so far (where the next one starts in the text)
    tokens: int = 0
    reasoning_tokens: int = 0  # of tokens, those that were reasoning only (a Thinking checkpoint's <think> text)
    finish_reason: str | None = None

    def add(self, delta: ChoiceDelta) -> None:
        if delta.content:
            self.content.append(delta.content)
        if delta.reasoning:
            self.reasoning.append(delta.reasoning)
        for call in delta.tool_calls:
            state = self.tool_calls.get(call.index)
            if state is None:
                state = self.tool_calls[call.index] = ToolCallState(id=call.id or _call_id(), name=call.name or "")
            elif call.name and not state.name:
                state.name = call.name
            if call.arguments:
                state.arguments.append(call.arguments)
        if delta.logprobs:
            self.logprobs.extend(delta.logprobs)
            self.logprob_chars += sum(len(item.token) for item in delta.logprobs)
        self.tokens += len(delta.token_ids)
        if delta.reasoning and not delta.content:
            self.reasoning_tokens += len(delta.token_ids)
        if delta.finish_reason is not None:
            if delta.finish_reason == "abort":
                raise EngineUnavailableError("the request was aborted by the server")
            self.finish_reason = delta.finish_reason


@dataclass(slots=True)
class Piece:
    """One choice's share of one engine step, as applied: what a streaming API shapes into a chunk."""

    delta: ChoiceDelta  # as applied (calls beyond the first dropped when parallel tool calls are off)
    choice: ChoiceState  # the choice after it
    new_calls: frozenset[int]  # indices of the tool calls that first appear in this delta
    logprob_offset: int  # where this delta's first logprob token starts in the choice's text


NO_CALLS: frozenset[int] = frozenset()


def _call_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"


def keep_allowed_calls(delta: ChoiceDelta, output: OutputSpec) -> ChoiceDelta:
    """Calls beyond ``output.max_tool_calls`` are dropped: ``parallel_tool_calls: false`` keeps only the first (vLLM's
    own server filters the same way); otherwise the server's bound, which a forced call's grammar enforces already and
    an ``auto`` answer can only reach in text."""
    most = output.call_limit
    if not any(call.index >= most for call in delta.tool_calls):
        return delta
    return replace(delta, tool_calls=tuple(call for call in delta.tool_calls if call.index < most))


def apply_step(step: EngineStep, choices: Sequence[ChoiceState], output: OutputSpec) -> list[Piece]:
    """Apply one engine step to the choices it concerns; the pieces say what changed, in the step's order."""
    pieces: list[Piece] = []
    for raw in step.choices:  # per token of every stream: the common case (no tool call) stays cheap
        choice = choices[raw.index]
        offset = choice.logprob_chars
        if raw.tool_calls:
            delta = keep_allowed_calls(raw, output)
            known = set(choice.tool_calls)
            choice.add(delta)
            new_calls = frozenset(call.index for call in delta.tool_calls if call.index not in known)
        else:
            delta, new_calls = raw, NO_CALLS
            choice.add(delta)
        pieces.append(Piece(delta, choice, new_calls, offset))
    return pieces


def require_finished(choices: Sequence[ChoiceState]) -> None:
    """An engine stream that ends before every choice has a finish reason was cut off under us (the engine shut down
    mid-request); that is an error for the client, never a quiet, complete-looking answer."""
    if any(c.finish_reason is None for c in choices):
        raise EngineUnavailableError("the inference engine stopped before the request finished; retry")
