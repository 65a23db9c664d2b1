"""Turn OpenAI/Qwen messages into the chat template's conversation plus the ordered media references.

Limits on how many media parts a request may carry are checked here, before anything is fetched.
"""

from __future__ import annotations

import contextlib
import json
import re
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

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

# Qwen's control and vision placeholder tokens. Text that spells one would be tokenized as the token itself: a vision
# placeholder without media (the processor then fails or misaligns media) or a forged role boundary. Refused with a 400.
VISION_TOKENS = ("image_pad", "video_pad", "vision_start", "vision_end", "vision_pad")
CONTROL_TOKENS = (
    "im_start",
    "im_end",
    "endoftext",
    "object_ref_start",
    "object_ref_end",
    "box_start",
    "box_end",
    "quad_start",
    "quad_end",
)


def special_tokens(names: tuple[str, ...]) -> re.Pattern[str]:
    return re.compile(r"<\|(?:" + "|".join(names) + r")\|>")


_RESERVED = special_tokens(VISION_TOKENS + CONTROL_TOKENS)


def _check_text(text: str, param: str) -> str:
    found = _RESERVED.search(text)
    if found:
        raise InvalidRequestError(
            f"{param} contains the reserved token '{found.group(0)}'; media go in image_url/video_url parts, "
            "and the chat template adds role markers itself",
            param=param,
            code="reserved_token_in_text",
        )
    return text


@dataclass(frozen=True)
class Conversation:
    messages: list[dict[str, Any]]
    images: list[ImageRef]
    videos: list[VideoRef]


def build_conversation(messages: list[Message], limits: MediaLimits) -> Conversation:
    out: list[dict[str, Any]] = []
    images: list[ImageRef] = []
    videos: list[VideoRef] = []
    for i, message in enumerate(messages):
        role = _TEMPLATE_ROLE.get(message.role, message.role)
        if message.content is None or isinstance(message.content, str):
            entry: dict[str, Any] = {
                "role": role,
                "content": _check_text(message.content or "", f"messages[{i}].content"),
            }
            out.append(_with_tool_fields(entry, message, i))
            continue
        parts: list[dict[str, Any]] = []
        for j, part in enumerate(message.content):
            where = f"messages[{i}].content[{j}]"
            if isinstance(part, TextPart):
                parts.append({"type": "text", "text": _check_text(part.text, f"{where}.text")})
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
        out.append(_with_tool_fields({"role": role, "content": parts}, message, i))
    _check_counts(images, videos, limits)
    return Conversation(messages=out, images=images, videos=videos)


def _with_tool_fields(entry: dict[str, Any], message: Message, i: int) -> dict[str, Any]:
    """The assistant's earlier tool calls and the tool's answers, as chat templates expect them (arguments as a JSON
    object where they parse, as vLLM's renderer passes them)."""
    if isinstance(message, AssistantMessageParam) and message.tool_calls:
        calls = []
        for j, call in enumerate(message.tool_calls):
            arguments: Any = _check_text(call.function.arguments, f"messages[{i}].tool_calls[{j}].function.arguments")
            with contextlib.suppress(ValueError):
                arguments = json.loads(arguments)
            calls.append(
                {"id": call.id, "type": "function", "function": {"name": call.function.name, "arguments": arguments}}
            )
        entry["tool_calls"] = calls
    if isinstance(message, ToolMessageParam):
        entry["tool_call_id"] = message.tool_call_id
        if message.name is not None:
            entry["name"] = message.name
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
