"""``POST /v1/responses``: OpenAI's Responses API request and response, as far as this server implements it.

The request's top level is typed here (unknown fields are ignored and logged, like chat's; fields OpenAI defines that
this server does not implement are a 400 naming them). Input items are JSON objects checked where they are translated
into the chat request every generation here runs on (``server.service.responses``), so each refusal names its
``input[i]`` location. The response models follow the openai SDK's ``Response`` (the tests validate every answer and
every streamed event with the SDK's own types).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from server.schemas.common import Seed, field_error

__all__ = ["ResponseDeleted", "ResponseObject", "ResponsesRequest"]

# Fields of OpenAI's Responses API this server does not implement, and what to do instead.
REFUSED_FIELDS = {
    "background": "background responses are not supported; stream instead",
    "conversation": "conversations are not supported; pass the history in input",
    "prompt": "stored prompt templates are not supported; send instructions and input",
    "include": "no extra output data is available",
    "prompt_cache_key": "the engine's prefix cache needs no key",
    "top_logprobs": "logprobs are available on /v1/chat/completions",
    "context_management": "context management is not supported",
}
_TRUNCATION = "truncation"


class ResponsesRequest(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1)
    input: str | list[dict[str, Any]] = Field(min_length=1)
    instructions: str | None = None
    max_output_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool = True
    max_tool_calls: int | None = Field(None, ge=1)
    text: dict[str, Any] | None = None
    reasoning: dict[str, Any] | None = None
    metadata: dict[str, str] | None = Field(None, max_length=16)
    store: bool = True
    previous_response_id: str | None = Field(None, min_length=1, max_length=128)
    stream: bool = False
    user: str | None = Field(None, max_length=256)
    safety_identifier: str | None = Field(None, max_length=256)
    service_tier: str | None = None
    # vLLM's extensions, as on chat: sampling knobs the Responses API leaves out.
    top_k: int | None = Field(None, ge=-1)
    min_p: float | None = Field(None, ge=0, le=1)
    repetition_penalty: float | None = Field(None, gt=0, le=2)
    seed: Seed | None = None

    @model_validator(mode="before")
    @classmethod
    def _refuse(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for name, reason in REFUSED_FIELDS.items():
                if data.get(name) not in (None, [], False):
                    raise field_error(name, f"not accepted: {reason}")
            if data.get(_TRUNCATION) not in (None, "disabled"):
                raise field_error(_TRUNCATION, "only 'disabled' is supported: a prompt over the context is a 400")
        return data

    @property
    def ignored_fields(self) -> list[str]:
        return sorted((self.model_extra or {}).keys())


class ResponseUsage(BaseModel):
    input_tokens: int
    input_tokens_details: dict[str, int]
    output_tokens: int
    output_tokens_details: dict[str, int]
    total_tokens: int


class ResponseObject(BaseModel):
    """The Responses API's ``response`` object (the fields the openai SDK's ``Response`` requires, and those we set)."""

    id: str
    object: Literal["response"] = "response"
    created_at: float
    completed_at: float | None = None
    model: str
    status: Literal["completed", "incomplete", "in_progress", "failed"]
    error: dict[str, Any] | None = None
    incomplete_details: dict[str, Any] | None = None
    instructions: str | None = None
    metadata: dict[str, str] | None = None
    output: list[dict[str, Any]]
    parallel_tool_calls: bool
    temperature: float | None = None
    top_p: float | None = None
    max_output_tokens: int | None = None
    max_tool_calls: int | None = None
    tool_choice: str | dict[str, Any]
    tools: list[dict[str, Any]]
    text: dict[str, Any] | None = None
    store: bool = False
    previous_response_id: str | None = None
    truncation: Literal["disabled"] = "disabled"
    usage: ResponseUsage | None = None
    user: str | None = None


class ResponseDeleted(BaseModel):
    id: str
    object: Literal["response"] = "response"
    deleted: Literal[True] = True
