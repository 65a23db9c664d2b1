"""Build multimodal chat messages for the server from local files, URLs, bytes, PIL images and numpy frames.

    from clients.messages import Conversation, image_part, video_part

    chat = Conversation(system="You are concise.")
    chat.user(image_part("cat.jpg", max_pixels=512 * 512), "What is in this image?")
    reply = client.chat.completions.create(model=model, messages=chat.messages)
    chat.assistant(reply.choices[0].message.content)

Local media becomes a ``data:`` URL and URLs pass through (``clients.media``); the per-item Qwen controls are checked
by ``clients.controls`` and put where the server reads them. This module holds the parts and the messages built from
them, and re-exports what a caller needs from the other two, so ``from clients.messages import ...`` stays the one
import.

Messages are plain dicts. They are typed as the openai SDK's ``ChatCompletionMessageParam`` (for type checkers only:
openai is not imported at runtime) so ``client.chat.completions.create(messages=...)`` type-checks, although a
``video_url`` part is the server's extension of OpenAI's schema.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, TypeAlias, cast

import numpy as np

from clients.controls import Detail, ImageControls, VideoControls
from clients.media import (
    VIDEO_EXTENSIONS,
    ImageSource,
    Pixels,
    data_url,
    encode_mp4,
    file_data_url,
    is_url,
    media_kind,
    sniff_mime,
    source_url,
)

if TYPE_CHECKING:
    from openai.types.chat import ChatCompletionMessageParam as Message
else:
    Message = dict

__all__ = [
    "VIDEO_EXTENSIONS",
    "Conversation",
    "ImageControls",
    "ImageSource",
    "Message",
    "Part",
    "Pixels",
    "VideoControls",
    "VideoSource",
    "assistant_message",
    "data_url",
    "encode_mp4",
    "image_part",
    "media_kind",
    "sniff_mime",
    "system_message",
    "text_part",
    "user_message",
    "video_part",
]

Part: TypeAlias = dict[str, Any]
"""One content part: ``{"type": "text" | "image_url" | "video_url" | "video", ...}``."""
VideoSource: TypeAlias = str | os.PathLike[str] | bytes | np.ndarray[Any, Any] | Sequence[ImageSource]
"""A URL, local path or encoded bytes (sent as ``video_url``), or frames: a TxHxWx3 uint8 array or a sequence of
images of any ``ImageSource`` kind (sent as the Qwen frame list ``{"type": "video", "video": [...], "sample_fps": …}``)."""


# --- parts -------------------------------------------------------------------------------------------------------


def text_part(text: str) -> Part:
    return {"type": "text", "text": text}


def image_part(
    src: ImageSource,
    *,
    min_pixels: int | None = None,
    max_pixels: int | None = None,
    resized_height: int | None = None,
    resized_width: int | None = None,
    detail: Detail | None = None,
    image_format: str = "PNG",
) -> Part:
    """An ``image_url`` part; the controls go on the ``image_url`` object. ``image_format`` encodes PIL images and
    arrays (``PNG``, ``JPEG``, ``WEBP``); files and bytes are sent as they are."""
    controls = ImageControls(
        min_pixels=min_pixels,
        max_pixels=max_pixels,
        resized_height=resized_height,
        resized_width=resized_width,
        detail=detail,
    )
    return {"type": "image_url", "image_url": {"url": source_url(src, image_format), **controls.as_dict()}}


def _frames(src: np.ndarray[Any, Any] | Sequence[ImageSource]) -> list[ImageSource]:
    if isinstance(src, np.ndarray):
        if src.ndim != 4:
            raise ValueError(f"frames must be a TxHxWx3 uint8 array, got shape {src.shape}")
        return list(src)
    frames = list(src)
    if not frames:
        raise ValueError("a video needs at least one frame")
    return frames


def video_part(
    src: VideoSource,
    *,
    fps: float | None = None,
    nframes: int | None = None,
    min_frames: int | None = None,
    max_frames: int | None = None,
    min_pixels: int | None = None,
    max_pixels: int | None = None,
    total_pixels: int | None = None,
    resized_height: int | None = None,
    resized_width: int | None = None,
    sample_fps: float | None = None,
    frame_format: str = "JPEG",
) -> Part:
    """A video part.

    A URL, path or encoded bytes becomes ``{"type": "video_url", "video_url": {"url": …, **controls}}``; the server
    samples it (``fps``/``nframes``, ``min_frames``, ``max_frames``; Qwen's 2 fps by default).

    Frames (a TxHxWx3 uint8 array, or a sequence of HxWx3 arrays, PIL images, image paths or URLs) are sent as they
    are, arrays and PIL images encoded as ``frame_format`` data URLs, in the Qwen shape ``{"type": "video", "video": [...], "sample_fps": …, **controls}``:
    ``sample_fps`` says at which rate they were taken (the model's timestamps; default 2), and only the pixel controls
    apply. To let the server sample frames instead, send ``encode_mp4(frames, fps=…)``.
    """
    controls = VideoControls(
        fps=fps,
        nframes=nframes,
        min_frames=min_frames,
        max_frames=max_frames,
        min_pixels=min_pixels,
        max_pixels=max_pixels,
        total_pixels=total_pixels,
        resized_height=resized_height,
        resized_width=resized_width,
    )
    if isinstance(src, str | os.PathLike | bytes | bytearray):
        if sample_fps is not None:
            raise ValueError("sample_fps is the rate of a frame list; sample a video file with fps or nframes")
        if isinstance(src, bytes | bytearray):
            url = data_url(bytes(src))
        elif isinstance(src, str) and is_url(src):
            url = src
        else:
            url = file_data_url(src)
        return {"type": "video_url", "video_url": {"url": url, **controls.as_dict()}}
    if controls.samples:
        raise ValueError(
            "frames are sent as they are: fps, nframes, min_frames and max_frames sample video files; "
            "give sample_fps (the frames' rate) or sample the frames yourself"
        )
    rate = 2.0 if sample_fps is None else sample_fps
    if not (isinstance(rate, int | float) and 0 < rate <= 60):
        raise ValueError(f"sample_fps must be in (0, 60], got {sample_fps!r}")
    urls = [source_url(frame, frame_format) for frame in _frames(src)]
    return {"type": "video", "video": urls, "sample_fps": float(rate), **controls.as_dict()}


# --- messages ----------------------------------------------------------------------------------------------------


def _content(content: Sequence[str | Part]) -> str | list[Part]:
    if not content:
        raise ValueError("a message needs content")
    if len(content) == 1 and isinstance(content[0], str):
        return content[0]
    return [text_part(c) if isinstance(c, str) else c for c in content]


def user_message(*content: str | Part) -> Message:
    """A user message: strings become text parts (a single string stays plain text content)."""
    return cast("Message", {"role": "user", "content": _content(content)})


def system_message(text: str) -> Message:
    return cast("Message", {"role": "system", "content": text})


def assistant_message(text: str | None) -> Message:
    return cast("Message", {"role": "assistant", "content": text or ""})


class Conversation:
    """Multi-turn history: ``.user(...)`` and ``.assistant(text)`` append; ``.messages`` is what to send."""

    def __init__(self, system: str | None = None) -> None:
        self._messages: list[Message] = [system_message(system)] if system else []

    def user(self, *content: str | Part) -> Conversation:
        self._messages.append(user_message(*content))
        return self

    def assistant(self, text: str | None) -> Conversation:
        """Record the model's answer (``reply.choices[0].message.content``) before the next user turn."""
        self._messages.append(assistant_message(text))
        return self

    @property
    def messages(self) -> list[Message]:
        return list(self._messages)

    def __len__(self) -> int:
        return len(self._messages)
