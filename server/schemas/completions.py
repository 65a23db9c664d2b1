"""``/v1/completions``: a raw text prompt in, text out, in OpenAI's legacy completions format.

Decided where OpenAI leaves room (and said in the refusals):

* one prompt per request: a string, or a list holding one string. Batched prompts are refused (send one request per
  prompt; the server batches concurrent requests anyway). Token-id prompts are refused too.
* ``echo`` and ``suffix`` are refused when set (``echo: false`` and ``suffix: null`` are accepted): Qwen3-VL has no
  fill-in-the-middle, and echoing the prompt would count it as completion text.
* ``max_tokens`` defaults to 16, as in OpenAI's and vLLM's completions API.
* ``logprobs`` is the number of alternatives per token (0…20): vLLM's limit of 20, not OpenAI's legacy 5.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, field_validator
from pydantic_core import PydanticCustomError

from server.schemas.common import MAX_TOP_LOGPROBS, CompletionBase, Usage

DEFAULT_MAX_TOKENS = 16
MAX_PROMPT_CHARS = 1 << 22  # 4 MiB of text: far beyond any context the model has, refused before tokenizing


Prompt = Annotated[str, Field(min_length=1, max_length=MAX_PROMPT_CHARS)]


class CompletionRequest(CompletionBase):
    prompt: Prompt | Annotated[list[Prompt], Field(min_length=1, max_length=1)] = Field(
        description="One text prompt (a list may hold exactly one string); no media: use chat completions for those."
    )
    max_tokens: int | None = Field(DEFAULT_MAX_TOKENS, ge=1)
    logprobs: int | None = Field(None, ge=0, le=MAX_TOP_LOGPROBS)
    echo: Literal[False] = Field(False, description="Only false: echoing the prompt is not supported.")
    suffix: None = Field(None, description="Only null: Qwen3-VL has no fill-in-the-middle.")

    @field_validator("prompt", mode="before")
    @classmethod
    def _one_prompt(cls, value: Any) -> Any:
        if isinstance(value, list) and len(value) != 1:
            raise ValueError("exactly one prompt per request: batched prompts are not supported, send one per request")
        return value

    @field_validator("echo", mode="before")
    @classmethod
    def _no_echo(cls, value: Any) -> Any:
        if value is True:
            raise PydanticCustomError("refused", "not accepted: echo is not supported")
        return value

    @field_validator("suffix", mode="before")
    @classmethod
    def _no_suffix(cls, value: Any) -> Any:
        if value is not None:
            raise PydanticCustomError(
                "refused", "not accepted: suffix (fill-in-the-middle) is not supported by Qwen3-VL"
            )
        return value

    @property
    def text(self) -> str:
        return self.prompt if isinstance(self.prompt, str) else self.prompt[0]


class CompletionLogprobs(BaseModel):
    """OpenAI's legacy logprobs: parallel lists per generated token; ``top_logprobs`` maps the sampled token and its
    ``logprobs`` most likely alternatives to their log-probabilities; ``text_offset`` is each token's start in ``text``."""

    tokens: list[str]
    token_logprobs: list[float]
    top_logprobs: list[dict[str, float]]
    text_offset: list[int]


class CompletionChoice(BaseModel):
    index: int
    text: str
    finish_reason: Literal["stop", "length"]
    logprobs: CompletionLogprobs | None = None


class Completion(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage


class CompletionChunkChoice(BaseModel):
    index: int
    text: str
    finish_reason: Literal["stop", "length"] | None = None
    logprobs: CompletionLogprobs | None = None


class CompletionChunk(BaseModel):
    """A streamed piece: same object type as the whole answer, as OpenAI sends it; with ``include_usage``, a last
    chunk with no choices carries the usage."""

    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChunkChoice]
    usage: Usage | None = None
