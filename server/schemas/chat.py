"""``/v1/chat/completions`` request and response models.

Content parts accept OpenAI's shapes (``text``, ``image_url``, and the common ``video_url`` extension) and the seed README's
own Qwen shapes (``{"type": "image", "image": URL}``, ``{"type": "video", "video": URL or [frame URLs]}``). Unknown request
fields are ignored (as OpenAI-compatible servers commonly do), so clients that send newer OpenAI fields keep working.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SerializerFunctionWrapHandler, model_serializer, model_validator

MAX_CHOICES = 8
MAX_STOP_SEQUENCES = 8


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


class Message(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[ContentPart] | None = None
    name: str | None = None

    @model_validator(mode="after")
    def _media_only_from_user(self) -> Message:
        if self.role != "user" and isinstance(self.content, list):
            for part in self.content:
                if not isinstance(part, TextPart):
                    raise ValueError(f"a {self.role} message may contain only text parts")
        if self.content is None and self.role != "assistant":
            raise ValueError(f"a {self.role} message needs content")
        if isinstance(self.content, list) and not self.content:
            raise ValueError("content must be a string or a non-empty list of parts")
        return self


class StreamOptions(BaseModel):
    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str = Field(min_length=1)
    messages: list[Message] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    top_k: int | None = Field(None, ge=-1)
    min_p: float | None = Field(None, ge=0, le=1)
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    repetition_penalty: float | None = Field(None, gt=0, le=2)
    n: int = Field(1, ge=1, le=MAX_CHOICES)
    stop: str | list[str] | None = None
    seed: int | None = None
    ignore_eos: bool = False  # vLLM extension: generate exactly max_tokens (load tests, benchmarks)
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = None

    @model_validator(mode="after")
    def _check_stop(self) -> ChatCompletionRequest:
        if isinstance(self.stop, list) and len(self.stop) > MAX_STOP_SEQUENCES:
            raise ValueError(f"at most {MAX_STOP_SEQUENCES} stop sequences are allowed")
        return self

    @property
    def stop_sequences(self) -> tuple[str, ...]:
        if self.stop is None:
            return ()
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)

    @property
    def completion_limit(self) -> int | None:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens


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


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class Choice(BaseModel):
    index: int
    message: AssistantMessage
    finish_reason: Literal["stop", "length"]
    logprobs: None = None


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    usage: Usage


class Delta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None

    @model_serializer(mode="wrap")
    def _omit_unset(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # OpenAI leaves unset delta fields out rather than sending null.
        data: dict[str, Any] = handler(self)
        return {k: v for k, v in data.items() if v is not None}


class ChunkChoice(BaseModel):
    index: int
    delta: Delta
    finish_reason: Literal["stop", "length"] | None = None
    logprobs: None = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: Usage | None = None
