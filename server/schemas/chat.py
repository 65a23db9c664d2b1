"""``/v1/chat/completions`` request and response models.

Content parts accept OpenAI's shapes (``text``, ``image_url``, and the common ``video_url`` extension) and the seed README's
own Qwen shapes (``{"type": "image", "image": URL}``, ``{"type": "video", "video": URL or [frame URLs]}``).

Unknown request fields are ignored and logged (by name), so clients that send newer OpenAI fields keep working; fields
that OpenAI or vLLM define but this server does not implement (``REFUSED_FIELDS``) are refused with a 400 that names
them, because ignoring them would silently change the answer. Every bound is a 400 naming its field.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    field_validator,
    model_serializer,
    model_validator,
)
from pydantic_core import PydanticCustomError

# Bounds on what one request may ask for. Each protects the engine or the event loop from a request that costs far more
# than its size suggests (vLLM had advisories for unbounded n and for schemas that crashed the grammar compiler).
MAX_CHOICES = 8
MAX_MESSAGES = 1024
MAX_STOP_SEQUENCES = 8
MAX_STOP_CHARS = 256
MAX_TOP_LOGPROBS = 20  # OpenAI's own limit
MAX_LOGIT_BIAS = 300  # OpenAI's own limit
MAX_TOOLS = 128  # OpenAI's own limit
MAX_TOOL_DESCRIPTION_CHARS = 8192
MAX_TOOL_ARGUMENTS_CHARS = 1 << 20
MAX_SCHEMA_BYTES = 64 * 1024  # one JSON schema (response_format, or one tool's parameters), serialized
MAX_TOOLS_SCHEMA_BYTES = 256 * 1024  # all tools' parameter schemas together
MAX_SCHEMA_DEPTH = 32  # nesting of objects/arrays in one schema


def _depth(value: Any, limit: int, level: int = 0) -> int:
    if level > limit:
        return level
    if isinstance(value, dict):
        return max((_depth(v, limit, level + 1) for v in value.values()), default=level + 1)
    if isinstance(value, list):
        return max((_depth(v, limit, level + 1) for v in value), default=level + 1)
    return level


def check_json_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """Bound a JSON schema's size and nesting, then check it against the JSON Schema meta-schema, so a schema the grammar
    compiler would choke on is a 400 here rather than a failure inside the engine."""
    size = len(json.dumps(schema))
    if size > MAX_SCHEMA_BYTES:
        raise ValueError(f"the schema takes {size} bytes; the limit is {MAX_SCHEMA_BYTES}")
    if _depth(schema, MAX_SCHEMA_DEPTH) > MAX_SCHEMA_DEPTH:
        raise ValueError(f"the schema nests deeper than {MAX_SCHEMA_DEPTH} levels")
    import jsonschema  # imported here: only requests with schemas pay for it

    validator = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    try:
        validator.check_schema(schema)
    except jsonschema.SchemaError as exc:
        where = "/".join(str(p) for p in exc.absolute_path) or "(root)"
        raise ValueError(f"not a valid JSON schema at {where}: {exc.message[:200]}") from None
    return schema


def _refused(param: str, message: str) -> PydanticCustomError:
    """A validation error that names its field (``param``) even when raised by a whole-model validator."""
    return PydanticCustomError("invalid_field", "{message}", {"param": param, "message": message})


class _Part(BaseModel):
    model_config = ConfigDict(extra="ignore")


class TextPart(_Part):
    type: Literal["text"]
    text: str


PixelCount = Annotated[int, Field(ge=1, le=1 << 31)]
Side = Annotated[int, Field(ge=1, le=1 << 16)]
FrameCount = Annotated[int, Field(ge=1, le=1 << 16)]
Fps = Annotated[float, Field(gt=0, le=60)]


class ImageControlFields(_Part):
    """qwen-vl-utils' per-image controls (pixels are H×W; rounded to Qwen3-VL's 32-pixel grid; clamped to server ceilings)."""

    min_pixels: PixelCount | None = None
    max_pixels: PixelCount | None = None
    resized_height: Side | None = None
    resized_width: Side | None = None


class VideoControlFields(_Part):
    """qwen-vl-utils' per-video controls: frame sampling (fps or nframes, min/max frames) and pixel budgets."""

    fps: Fps | None = None
    nframes: FrameCount | None = None
    min_frames: FrameCount | None = None
    max_frames: FrameCount | None = None
    min_pixels: PixelCount | None = None
    max_pixels: PixelCount | None = None
    total_pixels: PixelCount | None = None
    resized_height: Side | None = None
    resized_width: Side | None = None
    sample_fps: Fps | None = None  # the rate of a frame-list video

    @model_validator(mode="after")
    def _fps_or_nframes(self) -> VideoControlFields:
        if self.fps is not None and self.nframes is not None:
            raise ValueError("set either fps or nframes, not both")
        return self


class ImageURL(ImageControlFields):
    url: str = Field(min_length=1)
    detail: Literal["auto", "low", "high"] | None = None


class ImageURLPart(ImageControlFields):
    type: Literal["image_url"]
    image_url: ImageURL


class VideoURL(VideoControlFields):
    url: str = Field(min_length=1)


class VideoURLPart(VideoControlFields):
    type: Literal["video_url"]
    video_url: VideoURL


class ImagePart(ImageControlFields):
    """The seed README's shape: ``{"type": "image", "image": "https://…" | "data:…", "max_pixels": …}``."""

    type: Literal["image"]
    image: str = Field(min_length=1)


class VideoPart(VideoControlFields):
    """The seed README's shape: a video URL, or a list of frame image URLs (``sample_fps`` gives their rate)."""

    type: Literal["video"]
    video: str | list[str] = Field(min_length=1)


ContentPart = Annotated[
    TextPart | ImageURLPart | VideoURLPart | ImagePart | VideoPart,
    Field(discriminator="type"),
]


# --- tools -----------------------------------------------------------------------------------------------------------

FunctionName = Annotated[str, Field(pattern=r"^[a-zA-Z0-9_.-]{1,64}$")]


class FunctionDefinition(BaseModel):
    model_config = ConfigDict(extra="ignore")

    name: FunctionName
    description: str | None = Field(None, max_length=MAX_TOOL_DESCRIPTION_CHARS)
    parameters: dict[str, Any] | None = None
    strict: bool | None = None

    @field_validator("parameters")
    @classmethod
    def _bounded_schema(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        return None if value is None else check_json_schema(value)


class Tool(BaseModel):
    type: Literal["function"]
    function: FunctionDefinition


class NamedFunction(BaseModel):
    name: FunctionName


class NamedToolChoice(BaseModel):
    """``{"type": "function", "function": {"name": …}}``: the model must call this function."""

    type: Literal["function"]
    function: NamedFunction


ToolChoice = Literal["none", "auto", "required"] | NamedToolChoice


class ToolCallFunction(BaseModel):
    name: FunctionName
    arguments: str = Field(max_length=MAX_TOOL_ARGUMENTS_CHARS)


class ToolCall(BaseModel):
    """A tool call, as the assistant made it (in responses) or as the client sends it back in the history."""

    id: str = Field(min_length=1, max_length=128)
    type: Literal["function"] = "function"
    function: ToolCallFunction


# --- messages --------------------------------------------------------------------------------------------------------


class Message(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = Field(None, max_length=MAX_TOOLS)
    tool_call_id: str | None = Field(None, max_length=128)

    @model_validator(mode="after")
    def _check_roles(self) -> Message:
        if self.role != "user" and isinstance(self.content, list):
            for part in self.content:
                if not isinstance(part, TextPart):
                    raise ValueError(f"a {self.role} message may contain only text parts")
        if self.content is None and not (self.role == "assistant"):
            raise ValueError(f"a {self.role} message needs content")
        if isinstance(self.content, list) and not self.content:
            raise ValueError("content must be a string or a non-empty list of parts")
        if self.tool_calls and self.role != "assistant":
            raise ValueError("only assistant messages carry tool_calls")
        if self.role == "tool" and not self.tool_call_id:
            raise ValueError("a tool message needs the tool_call_id it answers")
        return self


class StreamOptions(BaseModel):
    include_usage: bool = False


# --- response_format ---------------------------------------------------------------------------------------------------


class ResponseFormatText(BaseModel):
    type: Literal["text"]


class ResponseFormatJSONObject(BaseModel):
    type: Literal["json_object"]


class JSONSchemaFormat(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    name: FunctionName
    description: str | None = None
    schema_: dict[str, Any] = Field(default_factory=dict, alias="schema")
    strict: bool | None = None

    @field_validator("schema_")
    @classmethod
    def _bounded_schema(cls, value: dict[str, Any]) -> dict[str, Any]:
        return check_json_schema(value)


class ResponseFormatJSONSchema(BaseModel):
    type: Literal["json_schema"]
    json_schema: JSONSchemaFormat


ResponseFormat = Annotated[
    ResponseFormatText | ResponseFormatJSONObject | ResponseFormatJSONSchema, Field(discriminator="type")
]


class ChatTemplateKwargs(BaseModel):
    """The chat-template switches a request may set; anything else is refused (no request-supplied templates)."""

    model_config = ConfigDict(extra="forbid")

    enable_thinking: bool | None = None
    add_vision_id: bool | None = None

    def as_kwargs(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True)


# Fields of OpenAI's (or vLLM's) API that this server does not implement. Accepting them silently would change what the
# client gets without telling it, so a request that sets one is refused with a 400 that says what to use instead.
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


class _Request(BaseModel):
    """Fields shared by chat and text completions. Unknown fields are accepted and ignored (logged by the route);
    fields in ``REFUSED_FIELDS`` are refused."""

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
    stop: str | list[str] | None = None
    seed: int | None = Field(None, ge=-(1 << 63), lt=1 << 63)
    logit_bias: dict[str, Annotated[float, Field(ge=-100, le=100)]] | None = Field(None, max_length=MAX_LOGIT_BIAS)
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
                    raise _refused(name, f"not accepted: {reason}")
        return data

    @classmethod
    def refused(cls) -> dict[str, str]:
        return {k: v for k, v in REFUSED_FIELDS.items() if k not in cls.model_fields}

    @field_validator("stop")
    @classmethod
    def _stop_bounds(cls, value: str | list[str] | None) -> str | list[str] | None:
        stops = [value] if isinstance(value, str) else value or []
        if len(stops) > MAX_STOP_SEQUENCES:
            raise ValueError(f"at most {MAX_STOP_SEQUENCES} stop sequences are allowed")
        if any(not 0 < len(stop) <= MAX_STOP_CHARS for stop in stops):
            raise ValueError(f"a stop sequence must have 1 to {MAX_STOP_CHARS} characters")
        return value

    @field_validator("logit_bias")
    @classmethod
    def _token_ids(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        for key in value or {}:
            if not key.isdigit() or len(key) > 9:
                raise ValueError(f"logit_bias keys are token ids (non-negative integers); got '{key[:20]}'")
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


class ChatCompletionRequest(_Request):
    messages: list[Message] = Field(min_length=1, max_length=MAX_MESSAGES)
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=MAX_TOP_LOGPROBS)
    tools: list[Tool] | None = Field(None, max_length=MAX_TOOLS)
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool = True
    response_format: ResponseFormat | None = None
    chat_template_kwargs: ChatTemplateKwargs | None = None
    modalities: list[Literal["text"]] | None = None

    @model_validator(mode="after")
    def _check(self) -> ChatCompletionRequest:
        if self.top_logprobs is not None and not self.logprobs:
            raise _refused("top_logprobs", "needs logprobs set to true")
        if self.tool_choice not in (None, "none") and not self.tools:
            raise _refused("tool_choice", "needs tools")
        if isinstance(self.tool_choice, NamedToolChoice):
            names = {tool.function.name for tool in self.tools or []}
            if self.tool_choice.function.name not in names:
                raise _refused(
                    "tool_choice.function.name",
                    f"'{self.tool_choice.function.name}' is not among the tools",
                )
        if self.tools:
            size = sum(len(json.dumps(tool.function.parameters or {})) for tool in self.tools)
            if size > MAX_TOOLS_SCHEMA_BYTES:
                raise _refused(
                    "tools", f"the parameter schemas take {size} bytes in all; the limit is {MAX_TOOLS_SCHEMA_BYTES}"
                )
        return self

    @property
    def completion_limit(self) -> int | None:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens

    @property
    def effective_tool_choice(self) -> str | NamedToolChoice:
        """OpenAI's default: ``auto`` when tools are given, ``none`` otherwise."""
        if self.tool_choice is not None:
            return self.tool_choice
        return "auto" if self.tools else "none"


# --- responses ----------------------------------------------------------------------------------------------------------


class PromptTokensDetails(BaseModel):
    """Visual tokens among the prompt tokens, as the engine placed them (video counts exclude timestamp text)."""

    image_tokens: int = 0
    video_tokens: int = 0


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: PromptTokensDetails | None = None


class _OmitNone(BaseModel):
    @model_serializer(mode="wrap")
    def _omit_none(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # OpenAI leaves unset optional fields out rather than sending null.
        data: dict[str, Any] = handler(self)
        return {k: v for k, v in data.items() if v is not None}


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


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str | None = None
    reasoning_content: str | None = None  # Thinking checkpoints: the text between <think> and </think>
    tool_calls: list[ToolCall] | None = None

    @model_serializer(mode="wrap")
    def _omit_none(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data: dict[str, Any] = {k: v for k, v in handler(self).items() if v is not None}
        data.setdefault("content", None)  # OpenAI always sends content: null when the answer is only tool calls
        return data


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


class ToolCallFunctionDelta(_OmitNone):
    name: str | None = None
    arguments: str | None = None


class ToolCallDelta(_OmitNone):
    index: int
    id: str | None = None
    type: Literal["function"] | None = None
    function: ToolCallFunctionDelta | None = None


class Delta(_OmitNone):
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
