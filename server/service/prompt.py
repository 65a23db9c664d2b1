"""Turn OpenAI/Qwen messages into the chat template's conversation plus the ordered media references.

Limits on how many media parts a request may carry are checked here, before anything is fetched.
"""

from __future__ import annotations

import contextlib
import functools
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from server.engine.base import LITERAL_CLOSE, LITERAL_OPEN, literal_marker
from server.errors import InvalidRequestError
from server.media.budget import ImageControls, VideoControls
from server.media.limits import MediaLimits
from server.media.loader import ImageRef, VideoRef
from server.schemas.chat import (
    AssistantMessageParam,
    ImageControlFields,
    ImagePart,
    ImageURLPart,
    Message,
    TextPart,
    ToolMessageParam,
    VideoControlFields,
    VideoPart,
    VideoURLPart,
)

_TEMPLATE_ROLE = {"developer": "system"}

# Qwen's vision placeholder tokens: /v1/completions' raw prompt may not spell them (its documented rule); in chat text
# every added token is a literal instead (``Literals``).
VISION_TOKENS = ("image_pad", "video_pad", "vision_start", "vision_end", "vision_pad")


def special_tokens(names: tuple[str, ...]) -> re.Pattern[str]:
    return re.compile(r"<\|(?:" + "|".join(names) + r")\|>")


@functools.lru_cache(maxsize=8)
def _added_token_pattern(added_tokens: tuple[str, ...]) -> re.Pattern[str]:
    """Any added token's text (longest first), or a marker character the client wrote itself."""
    names = sorted((t for t in added_tokens if t), key=len, reverse=True)
    return re.compile("|".join([*(re.escape(t) for t in names), f"[{LITERAL_OPEN}{LITERAL_CLOSE}]"]))


class Literals:
    """Client text that spells an added token (``<|im_end|>``, ``<|image_pad|>``, ``<think>``...), set aside: the
    rendered prompt holds a marker where it was, and the engine tokenizes it as the plain text it is. Neither a forged
    role boundary nor a vision placeholder without media can come from client text, and nothing is refused."""

    def __init__(self, added_tokens: tuple[str, ...]) -> None:
        self._pattern = _added_token_pattern(added_tokens)
        self.items: list[str] = []

    def text(self, text: str) -> str:
        return self._pattern.sub(self._set_aside, text) if self._pattern.search(text) else text

    def value(self, value: Any) -> Any:
        """JSON data (a tool's definition) with every string in it (keys too) handled by ``text``."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, Mapping):
            return {self.text(str(k)): self.value(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.value(v) for v in value]
        return value

    def _set_aside(self, found: re.Match[str]) -> str:
        self.items.append(found.group(0))
        return literal_marker(len(self.items) - 1)


@dataclass(frozen=True)
class Conversation:
    messages: list[dict[str, Any]]
    images: list[ImageRef]
    videos: list[VideoRef]
    literals: Literals = field(default_factory=lambda: Literals(()))


def build_conversation(
    messages: list[Message], limits: MediaLimits, added_tokens: tuple[str, ...] = ()
) -> Conversation:
    literals = Literals(added_tokens)
    out: list[dict[str, Any]] = []
    images: list[ImageRef] = []
    videos: list[VideoRef] = []
    for i, message in enumerate(messages):
        role = _TEMPLATE_ROLE.get(message.role, message.role)
        if message.content is None or isinstance(message.content, str):
            entry: dict[str, Any] = {
                "role": role,
                "content": literals.text(message.content or ""),
            }
            out.append(_with_tool_fields(entry, message, literals))
            continue
        parts: list[dict[str, Any]] = []
        for j, part in enumerate(message.content):
            where = f"messages[{i}].content[{j}]"
            if isinstance(part, TextPart):
                parts.append({"type": "text", "text": literals.text(part.text)})
            elif isinstance(part, ImageURLPart):
                controls = _image_controls(part, part.image_url, detail=part.image_url.detail)
                images.append(ImageRef(part.image_url.url, f"{where}.image_url", controls))
                parts.append({"type": "image"})
            elif isinstance(part, ImagePart):
                images.append(ImageRef(part.image, f"{where}.image", _image_controls(part)))
                parts.append({"type": "image"})
            elif isinstance(part, VideoURLPart):
                videos.append(VideoRef(part.video_url.url, f"{where}.video_url", _video_controls(part, part.video_url)))
                parts.append({"type": "video"})
            elif isinstance(part, VideoPart):
                videos.append(_video_part(part, f"{where}.video"))
                parts.append({"type": "video"})
        out.append(_with_tool_fields({"role": role, "content": parts}, message, literals))
    _check_counts(images, videos, limits)
    return Conversation(messages=out, images=images, videos=videos, literals=literals)


def _with_tool_fields(entry: dict[str, Any], message: Message, literals: Literals) -> dict[str, Any]:
    """The assistant's earlier tool calls and the tool's answers, as chat templates expect them (arguments as a JSON
    object where they parse, as vLLM's renderer passes them)."""
    if isinstance(message, AssistantMessageParam) and message.tool_calls:
        calls = []
        for call in message.tool_calls:
            arguments: Any = literals.text(call.function.arguments)
            with contextlib.suppress(ValueError):
                arguments = json.loads(arguments)
            calls.append(
                {
                    "id": call.id,
                    "type": "function",
                    "function": {"name": literals.text(call.function.name), "arguments": arguments},
                }
            )
        entry["tool_calls"] = calls
    if isinstance(message, ToolMessageParam):
        entry["tool_call_id"] = literals.text(message.tool_call_id)
        if message.name is not None:
            entry["name"] = literals.text(message.name)
    return entry


def _video_part(part: VideoPart, param: str) -> VideoRef:
    controls = _video_controls(part)
    if isinstance(part.video, list):
        return VideoRef(tuple(part.video), param, controls, sample_fps=part.sample_fps or part.fps)
    return VideoRef(part.video, param, controls)


def _pick(name: str, *sources: BaseModel | None) -> Any:
    """The first source that sets ``name`` wins (the nested ``image_url``/``video_url`` object before the part)."""
    for source in sources:
        value = getattr(source, name, None) if source is not None else None
        if value is not None:
            return value
    return None


def _image_controls(
    part: ImageControlFields, inner: ImageControlFields | None = None, detail: Any = None
) -> ImageControls:
    fields = ("min_pixels", "max_pixels", "resized_height", "resized_width")
    values = {name: _pick(name, inner, part) for name in fields}
    return ImageControls(detail=detail, **values)


def _video_controls(part: VideoControlFields, inner: VideoControlFields | None = None) -> VideoControls:
    fields = ("fps", "nframes", "min_frames", "max_frames", "min_pixels", "max_pixels", "total_pixels")
    values = {name: _pick(name, inner, part) for name in (*fields, "resized_height", "resized_width")}
    return VideoControls(**values)


def _check_counts(images: list[ImageRef], videos: list[VideoRef], limits: MediaLimits) -> None:
    if len(images) > limits.max_images_per_request:
        raise InvalidRequestError(
            f"the messages contain {len(images)} images; the limit is {limits.max_images_per_request} per request",
            param="messages",
            code="too_many_media_items",
        )
    if len(videos) > limits.max_videos_per_request:
        raise InvalidRequestError(
            f"the messages contain {len(videos)} videos; the limit is {limits.max_videos_per_request} per request",
            param="messages",
            code="too_many_media_items",
        )
