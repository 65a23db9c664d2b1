"""``/v1/chat/completions`` answers: the whole completion (``ChatCompletion``) and the streamed chunks
(``ChatCompletionChunk``), in OpenAI's shapes.

As OpenAI does, unset optional fields of messages and deltas are left out rather than sent as null (``OmitNone``); an
assistant message always has ``content`` (null when the answer is only tool calls).
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import BaseModel, Field

from server.schemas.common import OmitNone, Usage
from server.schemas.tools import ToolCall


class TopLogprob(BaseModel):
    token: str
    logprob: float
    bytes: list[int] | None = None


class TokenLogprob(TopLogprob):
    top_logprobs: list[TopLogprob] = Field(default_factory=list)


class ChoiceLogprobs(BaseModel):
    content: list[TokenLogprob] | None = None
    refusal: None = None


FinishReasonOut = Literal["stop", "length", "tool_calls"]


class AssistantMessage(OmitNone):
    always_sent: ClassVar[tuple[str, ...]] = ("content",)  # OpenAI sends content: null when the answer is tool calls

    role: Literal["assistant"] = "assistant"
    content: str | None = None
    reasoning_content: str | None = None  # Thinking checkpoints: the text between <think> and </think>
    tool_calls: list[ToolCall] | None = None


class Choice(BaseModel):
    index: int
    message: AssistantMessage
    finish_reason: FinishReasonOut
    logprobs: ChoiceLogprobs | None = None


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    usage: Usage


class ToolCallFunctionDelta(OmitNone):
    name: str | None = None
    arguments: str | None = None


class ToolCallDelta(OmitNone):
    index: int
    id: str | None = None
    type: Literal["function"] | None = None
    function: ToolCallFunctionDelta | None = None


class Delta(OmitNone):
    role: Literal["assistant"] | None = None
    content: str | None = None
    reasoning_content: str | None = None
    tool_calls: list[ToolCallDelta] | None = None


class ChunkChoice(BaseModel):
    index: int
    delta: Delta
    finish_reason: FinishReasonOut | None = None
    logprobs: ChoiceLogprobs | None = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: Usage | None = None
