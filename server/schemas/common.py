"""What chat and text completions share: the request base (sampling options, stop sequences, streaming, refused fields),
the usage block of every answer, and the base of response models that leave unset fields out.

Unknown request fields are ignored and logged (by name), so clients that send newer OpenAI fields keep working; fields
that OpenAI or vLLM define but this server does not implement (``REFUSED_FIELDS``) are refused with a 400 that names
them, because ignoring them would silently change the answer. Every bound is a 400 naming its field.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    GetJsonSchemaHandler,
    SerializerFunctionWrapHandler,
    WithJsonSchema,
    field_validator,
    model_serializer,
    model_validator,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import PydanticCustomError, core_schema

# Bounds on what one request may ask for. Each protects the engine or the event loop from a request that costs far more
# than its size suggests (vLLM had an advisory for unbounded n).
MAX_CHOICES = 8
MAX_STOP_SEQUENCES = 8
MAX_STOP_CHARS = 256
MAX_TOP_LOGPROBS = 20  # OpenAI's own limit
MAX_LOGIT_BIAS = 300  # OpenAI's own limit

# Any signed 64-bit seed is accepted; the document states the bounds one float step inside, because JSON tools read
# them as doubles (2**63 rounds to itself, so a generator would offer seeds just past it as valid).
Seed = Annotated[
    int,
    Field(ge=-(1 << 63), lt=1 << 63),
    WithJsonSchema({"type": "integer", "minimum": -(1 << 63) + 1024, "maximum": (1 << 63) - 1024}),
]
StopSequence = Annotated[str, Field(min_length=1, max_length=MAX_STOP_CHARS)]
_TOKEN_ID = r"[0-9]{1,9}"  # a logit_bias key
LogitBias = Annotated[
    dict[str, Annotated[float, Field(ge=-100, le=100)]],
    Field(max_length=MAX_LOGIT_BIAS, json_schema_extra={"propertyNames": {"pattern": f"^{_TOKEN_ID}$"}}),
]

# Fields of OpenAI's (or vLLM's) API that this server does not implement. Accepting them silently would change what the
# client gets without telling it, so a request that sets one is refused with a 400 that says what to use instead. A
# request model that declares one of these fields itself accepts it (see ``CompletionBase.refused``).
REFUSED_FIELDS: dict[str, str] = {
    "functions": "the deprecated functions field is not supported; use tools",
    "function_call": "the deprecated function_call field is not supported; use tool_choice",
    "audio": "audio output is not supported",
    "prediction": "predicted outputs are not supported",
    "web_search_options": "web search is not supported",
    "chat_template": "request-supplied chat templates are not accepted; the model's own template is used",
    "guided_json": "use response_format with type json_schema",
    "guided_regex": "regex-constrained output is not supported; use response_format",
    "guided_choice": "use response_format with type json_schema and an enum",
    "guided_grammar": "grammar-constrained output is not supported; use response_format",
    "structured_outputs": "use response_format",
    "best_of": "best_of is not supported; use n",
    "use_beam_search": "beam search is not supported",
    "echo": "echo is not supported on chat completions",
}


def field_error(param: str, message: str) -> PydanticCustomError:
    """A validation error that names its field (``param``, relative to where it is raised) even when raised by a
    whole-model validator; ``server.api.errors`` joins the two into the 400's ``param``."""
    return PydanticCustomError("invalid_field", "{message}", {"param": param, "message": message})


class StreamOptions(BaseModel):
    include_usage: bool = False


class CompletionBase(BaseModel):
    """Fields shared by chat and text completions. Unknown fields are accepted and ignored (logged by the route);
    fields in ``REFUSED_FIELDS`` are refused unless the subclass declares them."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    top_k: int | None = Field(None, ge=-1)
    min_p: float | None = Field(None, ge=0, le=1)
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    repetition_penalty: float | None = Field(None, gt=0, le=2)
    n: int = Field(1, ge=1, le=MAX_CHOICES)
    stop: StopSequence | Annotated[list[StopSequence], Field(max_length=MAX_STOP_SEQUENCES)] | None = None
    seed: Seed | None = None
    logit_bias: LogitBias | None = None
    ignore_eos: bool = False  # vLLM extension: generate exactly max_tokens (load tests, benchmarks)
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = Field(None, max_length=256)

    @model_validator(mode="before")
    @classmethod
    def _refuse(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for name, reason in cls.refused().items():
                if data.get(name) is not None:
                    raise field_error(name, f"not accepted: {reason}")
        return data

    @classmethod
    def refused(cls) -> dict[str, str]:
        return {k: v for k, v in REFUSED_FIELDS.items() if k not in cls.model_fields}

    # The two checks below run before the fields' own (which state the same bounds in the schema), for their messages.

    @field_validator("stop", mode="before")
    @classmethod
    def _stop_bounds(cls, value: Any) -> Any:
        stops = [value] if isinstance(value, str) else value if isinstance(value, list) else []
        if len(stops) > MAX_STOP_SEQUENCES:
            raise ValueError(f"at most {MAX_STOP_SEQUENCES} stop sequences are allowed")
        if any(isinstance(stop, str) and not 0 < len(stop) <= MAX_STOP_CHARS for stop in stops):
            raise ValueError(f"a stop sequence must have 1 to {MAX_STOP_CHARS} characters")
        return value

    @field_validator("logit_bias", mode="before")
    @classmethod
    def _token_ids(cls, value: Any) -> Any:
        for key in value if isinstance(value, dict) else {}:
            if not re.fullmatch(_TOKEN_ID, str(key)):
                raise ValueError(f"logit_bias keys are token ids (non-negative integers); got '{str(key)[:20]}'")
        return value

    @property
    def stop_sequences(self) -> tuple[str, ...]:
        if self.stop is None:
            return ()
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)

    @property
    def completion_limit(self) -> int | None:
        return self.max_tokens

    @property
    def ignored_fields(self) -> list[str]:
        return sorted(self.model_extra or {})


class PromptTokensDetails(BaseModel):
    """Visual tokens among the prompt tokens, as the engine placed them (video counts exclude timestamp text), and the
    prompt tokens the engine's prefix cache already held (OpenAI's ``cached_tokens``)."""

    cached_tokens: int = 0
    image_tokens: int = 0
    video_tokens: int = 0


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: PromptTokensDetails | None = None


class CountedTokensDetails(BaseModel):
    image_tokens: int = 0
    video_tokens: int = 0


class TokenCount(BaseModel):
    """``POST /v1/chat/completions/count_tokens``: the prompt tokens the same body would report in ``usage``."""

    object: Literal["chat.completion.token_count"] = "chat.completion.token_count"
    model: str
    prompt_tokens: int
    prompt_tokens_details: CountedTokensDetails
    max_model_len: int = Field(description="The context the prompt and the completion share.")


class OmitNone(BaseModel):
    """A response model that leaves unset (``None``) fields out, as OpenAI does rather than sending null; the fields in
    ``always_sent`` are sent even when null."""

    always_sent: ClassVar[tuple[str, ...]] = ()

    @model_serializer(mode="wrap")
    def _omit_none(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        return {k: v for k, v in data.items() if v is not None or k in self.always_sent}

    @classmethod
    def __get_pydantic_json_schema__(
        cls, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        # pydantic would describe the serializer's return type (a loose object); describe the fields instead, which is
        # what the serializer returns minus the null ones. The always-sent fields are required.
        json_schema = handler({key: value for key, value in schema.items() if key != "serialization"})
        if cls.always_sent:
            target = handler.resolve_ref_schema(json_schema)
            target["required"] = [*target.get("required", []), *cls.always_sent]
        return json_schema
