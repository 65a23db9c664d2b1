"""``/v1/chat/completions`` requests: the messages (one model per role) with their content parts, and the request.

Content parts accept OpenAI's shapes (``text``, ``image_url``, and the common ``video_url`` extension) and the seed README's
own Qwen shapes (``{"type": "image", "image": URL}``, ``{"type": "video", "video": URL or [frame URLs]}``).

Each role has its own message model, told apart by ``role``, so the OpenAPI document states what each role may carry:
only user messages carry media, only assistant messages carry ``tool_calls`` (and may then have null content), and a
tool message needs its ``tool_call_id``. Sampling options and refused fields come from ``server.schemas.common``, tools
and ``response_format`` from ``server.schemas.tools``, the answers' models are in ``server.schemas.chat_response``.

How many messages and content parts a request may hold is the server's setting (``ShapeLimits``, read from the context
variable ``shape_limits`` that the HTTP guard sets per request; the defaults otherwise). The counts are checked on the raw
JSON before any message or part is validated, so a body of a million tiny parts costs one ``len()``, not a million models.
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from server.schemas.common import MAX_TOP_LOGPROBS, CompletionBase, field_error
from server.schemas.tools import (
    MAX_TOOLS,
    MAX_TOOLS_SCHEMA_BYTES,
    NamedToolChoice,
    ResponseFormat,
    Tool,
    ToolCall,
    ToolChoice,
    tools_schema_bytes,
)

MAX_MESSAGES = 1024
MAX_PARTS_PER_MESSAGE = 128  # text parts included: images and videos have their own, far smaller caps
MAX_PARTS = 2048  # all messages together (a string content counts as one): ample for 1024 string messages


@dataclass(frozen=True)
class ShapeLimits:
    """How many messages and content parts one chat request may hold (settings ``--max-messages`` and so on)."""

    max_messages: int = MAX_MESSAGES
    max_parts_per_message: int = MAX_PARTS_PER_MESSAGE
    max_parts: int = MAX_PARTS


DEFAULT_SHAPE = ShapeLimits()
shape_limits: ContextVar[ShapeLimits] = ContextVar("shape_limits", default=DEFAULT_SHAPE)


def _all_set(*names: str) -> dict[str, Any]:
    """The JSON schema of an object that sets every one of ``names`` (to anything but null): the condition of a
    cross-field rule, so that the OpenAPI document states the rules the validators enforce."""
    return {"required": list(names), "properties": {name: {"not": {"type": "null"}} for name in names}}


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

    model_config = ConfigDict(json_schema_extra={"not": _all_set("fps", "nframes")})

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
    video: Annotated[str, Field(min_length=1)] | Annotated[list[str], Field(min_length=1)]


ContentPart = Annotated[
    TextPart | ImageURLPart | VideoURLPart | ImagePart | VideoPart,
    Field(discriminator="type"),
]


# --- messages --------------------------------------------------------------------------------------------------------

ROLES = ("system", "developer", "user", "assistant", "tool")
TextContent = str | Annotated[list[TextPart], Field(min_length=1)]
UserContent = str | Annotated[list[ContentPart], Field(min_length=1)]


class _MessageBase(BaseModel):
    model_config = ConfigDict(extra="ignore")

    name: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _check_role_rules(cls, data: Any) -> Any:
        """The rules each role's fields state, checked before the fields so that the 400 says the rule in words."""
        if not isinstance(data, dict):
            return data
        role, content = data.get("role"), data.get("content")
        a_role = f"{'an' if role == 'assistant' else 'a'} {role} message"
        media = isinstance(content, list) and any(isinstance(p, dict) and p.get("type") != "text" for p in content)
        if media and role not in ("user", "tool"):
            raise field_error("content", f"{a_role} may contain only text parts")
        if content is None and role != "assistant":
            raise field_error("content", f"{a_role} needs content")
        if isinstance(content, list) and not content:
            raise ValueError("content must be a string or a non-empty list of parts")
        if data.get("tool_calls") not in (None, []) and role != "assistant":
            raise field_error("tool_calls", "only assistant messages carry tool_calls")
        if role == "tool" and not data.get("tool_call_id"):
            raise field_error("tool_call_id", "a tool message needs the tool_call_id it answers")
        return data


class _NotAssistant(_MessageBase):
    # Unknown fields are ignored, but tool calls in a message that cannot carry them are refused: the document says so.
    model_config = ConfigDict(
        json_schema_extra={
            "not": {"required": ["tool_calls"], "properties": {"tool_calls": {"not": {"enum": [None, []]}}}}
        }
    )


class SystemMessageParam(_NotAssistant):
    """An instruction; ``developer`` is OpenAI's newer name for ``system`` (the chat template sees ``system``)."""

    role: Literal["system", "developer"]
    content: TextContent


class UserMessageParam(_NotAssistant):
    role: Literal["user"]
    content: UserContent


class AssistantMessageParam(_MessageBase):
    """An earlier answer in the history: text, tool calls, or both (content may then be null or left out)."""

    role: Literal["assistant"]
    content: TextContent | None = None
    tool_calls: list[ToolCall] | None = Field(None, max_length=MAX_TOOLS)


class ToolMessageParam(_NotAssistant):
    """A tool's result, answering the assistant's tool call ``tool_call_id``: text, or parts with images and videos
    (a screenshot, a crop to look at again), rendered inside Qwen's ``<tool_response>`` like a user turn's media."""

    role: Literal["tool"]
    content: UserContent
    tool_call_id: str = Field(min_length=1, max_length=128)


def _known_role(data: Any) -> Any:
    """A missing or unknown role is a 400 naming ``role`` (the discriminator's own error would name only the message)."""
    if isinstance(data, dict) and data.get("role") not in ROLES:
        if "role" not in data:
            raise field_error("role", "Field required")
        raise field_error("role", "Input should be " + ", ".join(f"'{r}'" for r in ROLES[:-1]) + f" or '{ROLES[-1]}'")
    return data


Message = Annotated[
    SystemMessageParam | UserMessageParam | AssistantMessageParam | ToolMessageParam,
    Field(discriminator="role"),
    BeforeValidator(_known_role),
]


# --- the request -------------------------------------------------------------------------------------------------------


class ChatTemplateKwargs(BaseModel):
    """The chat-template switches a request may set; anything else is refused (no request-supplied templates)."""

    model_config = ConfigDict(extra="forbid")

    enable_thinking: bool | None = None
    add_vision_id: bool | None = None

    def as_kwargs(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True)


class ChatCompletionRequest(CompletionBase):
    # The cross-field rules of _check that a JSON schema can state (not: a named tool_choice names one of the tools).
    model_config = ConfigDict(
        json_schema_extra={
            "allOf": [
                {
                    "if": _all_set("top_logprobs"),
                    "then": {"required": ["logprobs"], "properties": {"logprobs": {"const": True}}},
                },
                {
                    "if": {
                        "required": ["tool_choice"],
                        "properties": {"tool_choice": {"not": {"enum": [None, "none"]}}},
                    },
                    "then": {"required": ["tools"], "properties": {"tools": {"type": "array", "minItems": 1}}},
                },
            ]
        }
    )

    messages: list[Message] = Field(
        min_length=1, description=f"At most {MAX_MESSAGES} messages and {MAX_PARTS} content parts (server defaults)."
    )
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=MAX_TOP_LOGPROBS)
    tools: list[Tool] | None = Field(None, max_length=MAX_TOOLS)
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool = True
    response_format: ResponseFormat | None = None
    chat_template_kwargs: ChatTemplateKwargs | None = None
    modalities: list[Literal["text"]] | None = None

    @model_validator(mode="before")
    @classmethod
    def _count(cls, data: Any) -> Any:
        """Messages and parts counted on the raw JSON, before a single message is validated."""
        messages = data.get("messages") if isinstance(data, dict) else None
        if not isinstance(messages, list):
            return data
        limits = shape_limits.get()
        if len(messages) > limits.max_messages:
            raise field_error(
                "messages", f"a request may hold at most {limits.max_messages} messages; got {len(messages)}"
            )
        total = 0
        for i, message in enumerate(messages):
            content = message.get("content") if isinstance(message, dict) else None
            if isinstance(content, list):
                if len(content) > limits.max_parts_per_message:
                    raise field_error(
                        f"messages[{i}].content",
                        f"a message may hold at most {limits.max_parts_per_message} content parts; got {len(content)}",
                    )
                total += len(content)
            elif content is not None:
                total += 1
        if total > limits.max_parts:
            raise field_error(
                "messages",
                f"a request may hold at most {limits.max_parts} content parts in all (a string content counts as "
                f"one); got {total}",
            )
        return data

    @model_validator(mode="after")
    def _check(self) -> ChatCompletionRequest:
        if self.top_logprobs is not None and not self.logprobs:
            raise field_error("top_logprobs", "needs logprobs set to true")
        if self.tool_choice not in (None, "none") and not self.tools:
            raise field_error("tool_choice", "needs tools")
        if isinstance(self.tool_choice, NamedToolChoice):
            names = {tool.function.name for tool in self.tools or []}
            if self.tool_choice.function.name not in names:
                raise field_error(
                    "tool_choice.function.name",
                    f"'{self.tool_choice.function.name}' is not among the tools",
                )
        if self.tools:
            size = tools_schema_bytes(self.tools)
            if size > MAX_TOOLS_SCHEMA_BYTES:
                raise field_error(
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
