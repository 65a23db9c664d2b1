"""The ``Engine`` protocol and the plain frozen dataclasses that cross it.

Everything above this boundary (service, api) talks to an ``Engine``; only ``server.engine.vllm`` imports vLLM.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import numpy as np

# Re-exported: they cross the Engine boundary too (defined in a neutral module that media also uses).
from server.vision import VideoInput as VideoInput
from server.vision import VisionSpec as VisionSpec

FinishReason = Literal["stop", "length", "abort"]


@dataclass(frozen=True)
class SamplingSpec:
    """Sampling fields as the client sent them; ``None`` means "not set" (the checkpoint's defaults apply)."""

    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    min_p: float | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    repetition_penalty: float | None = None
    seed: int | None = None
    stop: tuple[str, ...] = ()
    n: int = 1
    ignore_eos: bool = False
    logprobs: int | None = None  # alternatives per token to report (0: only the sampled token's); None: no logprobs
    logit_bias: Mapping[int, float] | None = None


@dataclass(frozen=True)
class OutputSpec:
    """What the client asked of the output's shape, in OpenAI's terms (JSON-compatible values, validated by the API).

    ``parse`` is off for raw text completions: their text is returned as generated, with no tool or reasoning parsing.
    """

    parse: bool = True
    tools: tuple[Mapping[str, Any], ...] = ()  # OpenAI tool objects: {"type": "function", "function": {...}}
    tool_choice: str | Mapping[str, Any] = "none"  # "none" | "auto" | "required" | {"type": "function", ...}
    parallel_tool_calls: bool = True
    max_tool_calls: int = 8  # the most calls one answer may make with parallel calls (the server's --max-tool-calls)
    response_format: Mapping[str, Any] | None = None  # {"type": "json_object"} | {"type": "json_schema", ...}
    chat_template_kwargs: Mapping[str, Any] = field(default_factory=dict)

    @property
    def call_limit(self) -> int:
        """The most tool calls one answer may make: one without parallel calls."""
        return self.max_tool_calls if self.parallel_tool_calls else 1

    @property
    def named_tool(self) -> str | None:
        if isinstance(self.tool_choice, Mapping):
            return str(self.tool_choice["function"]["name"])
        return None


@dataclass(frozen=True)
class EngineRequest:
    request_id: str
    prompt: str
    sampling: SamplingSpec
    output: OutputSpec = field(default_factory=OutputSpec)
    images: tuple[np.ndarray, ...] = ()  # RGB, uint8 [H, W, 3]
    videos: tuple[VideoInput, ...] = ()
    # The gateway already resized these to their exact Qwen grid: the processor must not resize them again.
    images_resized: bool = False
    videos_resized: bool = False
    # (param, predicted visual tokens) per item, for error messages that explain a context overflow.
    visual_items: tuple[tuple[str, int], ...] = ()
    # Stable ids of the prepared items (content + budget + pre-processing), so the engine's own caches can hit.
    image_uuids: tuple[str, ...] = ()
    video_uuids: tuple[str, ...] = ()
    # The request field the prompt came from, named in context-length errors ("messages" for chat, "prompt" for text).
    prompt_param: str = "messages"
    # Client text that spells an added token, in order: the prompt holds literal_marker(k) for literals[k], and the
    # engine tokenizes it as plain text (the template's own markers stay the control tokens they are).
    literals: tuple[str, ...] = ()
    # vLLM's priority scheduling: lower runs first. Live requests are 0; batch lines run behind them.
    priority: int = 0


LITERAL_OPEN, LITERAL_CLOSE = "\ue000", "\ue001"  # private-use characters; in client text they are literals too
LITERAL_MARKER = re.compile(LITERAL_OPEN + r"(\d+)" + LITERAL_CLOSE)


def literal_marker(index: int) -> str:
    return f"{LITERAL_OPEN}{index}{LITERAL_CLOSE}"


def with_literals(prompt: str, literals: Sequence[str]) -> str:
    """The prompt as text, each marker replaced by its literal (what the client wrote)."""
    return LITERAL_MARKER.sub(lambda m: literals[int(m.group(1))], prompt) if literals else prompt


@dataclass(frozen=True)
class ToolCallDelta:
    """A piece of a tool call: the first piece of a call has its id and name, later ones add to its arguments."""

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""


@dataclass(frozen=True)
class TopLogprob:
    token: str
    logprob: float
    bytes: tuple[int, ...]


@dataclass(frozen=True)
class TokenLogprob:
    """One generated token's log-probability and the most likely alternatives at its position."""

    token: str
    logprob: float
    bytes: tuple[int, ...]
    top: tuple[TopLogprob, ...] = ()


@dataclass(frozen=True)
class ChoiceDelta:
    """What one choice produced since the previous step.

    ``text`` is the raw generated text; ``content``, ``reasoning`` and ``tool_calls`` are that text as the client sees it:
    split by the engine's tool-call and reasoning parsers when the request's ``OutputSpec.parse`` is on, otherwise
    ``content`` is ``text``.
    """

    index: int
    text: str
    token_ids: tuple[int, ...]
    finish_reason: FinishReason | None = None
    content: str | None = None
    reasoning: str | None = None
    tool_calls: tuple[ToolCallDelta, ...] = ()
    logprobs: tuple[TokenLogprob, ...] = ()


@dataclass(frozen=True)
class EngineStep:
    """One step of a request's output stream."""

    prompt_tokens: int
    choices: tuple[ChoiceDelta, ...]
    finished: bool
    image_tokens: int = 0  # visual tokens of the prompt, as the engine placed them
    video_tokens: int = 0
    cached_tokens: int = 0  # prompt tokens found in the engine's prefix cache


@dataclass(frozen=True)
class ModelInfo:
    name: str  # the id served in the API
    path: str  # where the weights came from
    max_model_len: int
    created: int
    is_demo: bool = False
    vocab_size: int = 0  # 0: unknown
    vision: VisionSpec = field(default_factory=lambda: VisionSpec())
    extra: Mapping[str, Any] = field(default_factory=dict)
    # Every string the tokenizer reads as one added token (<|im_end|>, <|image_pad|>, <think>, ...): in client text
    # they are literals (see LITERAL_MARKER), never control or placeholder tokens.
    added_tokens: tuple[str, ...] = ()


@dataclass(frozen=True)
class PromptCount:
    """A prompt's tokens as the engine would place them (visual tokens included), without generating."""

    prompt_tokens: int
    image_tokens: int = 0
    video_tokens: int = 0


class Engine(Protocol):
    """What the service layer needs from an inference engine."""

    @property
    def model(self) -> ModelInfo: ...

    def render_prompt(self, messages: Sequence[Mapping[str, Any]], **template_kwargs: Any) -> str:
        """Render a conversation with the checkpoint's chat template (media parts as ``{"type": "image"}``)."""
        ...

    def generate(self, request: EngineRequest) -> AsyncIterator[EngineStep]:
        """Stream the request's output; raises ``server.errors`` exceptions only."""
        ...

    async def count_prompt(self, request: EngineRequest) -> PromptCount:
        """The request's prompt tokens exactly as ``generate`` would place them; nothing is generated or cached in the
        engine core. Raises ``server.errors`` exceptions only."""
        ...

    async def check_health(self) -> None:
        """Return if the engine can serve; raise ``EngineUnavailableError`` if it is dead or wedged."""
        ...

    async def abort_all(self) -> int:
        """Abort every request in flight (they end with an error for their clients); returns how many."""
        ...

    async def shutdown(self) -> None: ...
