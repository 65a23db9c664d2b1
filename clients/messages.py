"""Build multimodal chat messages for the server from local files, URLs, bytes, PIL images and numpy frames.

    from clients.messages import Conversation, image_part, video_part

    chat = Conversation(system="You are concise.")
    chat.user(image_part("cat.jpg", max_pixels=512 * 512), "What is in this image?")
    reply = client.chat.completions.create(model=model, messages=chat.messages)
    chat.assistant(reply.choices[0].message.content)

Local media is inlined as a base64 ``data:`` URL (MIME sniffed from the bytes, else the file extension); ``http(s)``,
``data:`` and ``file:`` URLs are passed through for the server to fetch. Per-item Qwen controls go on the
``image_url``/``video_url`` object (or on the part, for frame lists), exactly as the server reads them.

Messages are plain dicts. They are typed as the openai SDK's ``ChatCompletionMessageParam`` (for type checkers only:
openai is not imported at runtime) so ``client.chat.completions.create(messages=...)`` type-checks, although a
``video_url`` part is the server's extension of OpenAI's schema.
"""

from __future__ import annotations

import base64
import io
import math
import mimetypes
import os
from collections.abc import Sequence
from dataclasses import dataclass, fields
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeAlias, cast
from urllib.parse import urlsplit

import numpy as np
from PIL import Image

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
Pixels: TypeAlias = np.ndarray[Any, Any] | Image.Image
"""An HxWx3 uint8 array or a PIL image."""
ImageSource: TypeAlias = str | os.PathLike[str] | bytes | Pixels
"""A URL (``http(s)``, ``data:``, ``file:``), a local path, encoded bytes, a PIL image or an HxWx3 uint8 array."""
VideoSource: TypeAlias = str | os.PathLike[str] | bytes | np.ndarray[Any, Any] | Sequence[ImageSource]
"""A URL, local path or encoded bytes (sent as ``video_url``), or frames: a TxHxWx3 uint8 array or a sequence of
images of any ``ImageSource`` kind (sent as the Qwen frame list ``{"type": "video", "video": [...], "sample_fps": …}``)."""
Detail = Literal["auto", "low", "high"]

VIDEO_EXTENSIONS = frozenset({".mp4", ".m4v", ".webm", ".mov", ".mkv", ".avi", ".mpeg", ".mpg", ".flv", ".wmv", ".3gp"})
_PASS_THROUGH = ("http://", "https://", "data:", "file:")


# --- per-item controls -------------------------------------------------------------------------------------------


def _check_positive(owner: Any) -> None:
    for f in fields(owner):
        value = getattr(owner, f.name)
        if f.name == "detail" or value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0 or not math.isfinite(value):
            raise ValueError(f"{f.name} must be a positive number, got {value!r}")


def _present(owner: Any) -> dict[str, Any]:
    return {f.name: getattr(owner, f.name) for f in fields(owner) if getattr(owner, f.name) is not None}


@dataclass(frozen=True, kw_only=True)
class ImageControls:
    """qwen-vl-utils' per-image controls (pixels are H×W, rounded by the server to the 32-pixel grid and clamped to its
    ceilings) and OpenAI's ``detail`` (``low`` ≤ 256 tokens, ``high`` = the server ceiling, ``auto`` = the default)."""

    min_pixels: int | None = None
    max_pixels: int | None = None
    resized_height: int | None = None
    resized_width: int | None = None
    detail: Detail | None = None

    def __post_init__(self) -> None:
        _check_positive(self)
        if (self.resized_height is None) != (self.resized_width is None):
            raise ValueError("resized_height and resized_width go together")
        if self.min_pixels and self.max_pixels and self.min_pixels > self.max_pixels:
            raise ValueError("min_pixels is larger than max_pixels")
        if self.detail not in (None, "auto", "low", "high"):
            raise ValueError(f"detail must be auto, low or high, got {self.detail!r}")

    def as_dict(self) -> dict[str, Any]:
        """The controls that are set, as request fields."""
        return _present(self)


@dataclass(frozen=True, kw_only=True)
class VideoControls:
    """qwen-vl-utils' per-video controls: frame sampling (``fps`` or ``nframes``, ``min_frames``, ``max_frames``; for
    video files) and pixel budgets (``min_pixels``/``max_pixels`` per frame, ``total_pixels`` over all frames)."""

    fps: float | None = None
    nframes: int | None = None
    min_frames: int | None = None
    max_frames: int | None = None
    min_pixels: int | None = None
    max_pixels: int | None = None
    total_pixels: int | None = None
    resized_height: int | None = None
    resized_width: int | None = None

    def __post_init__(self) -> None:
        _check_positive(self)
        if self.fps is not None and self.nframes is not None:
            raise ValueError("set either fps or nframes, not both")
        if (self.resized_height is None) != (self.resized_width is None):
            raise ValueError("resized_height and resized_width go together")
        if self.min_pixels and self.max_pixels and self.min_pixels > self.max_pixels:
            raise ValueError("min_pixels is larger than max_pixels")
        if self.min_frames and self.max_frames and self.min_frames > self.max_frames:
            raise ValueError("min_frames is larger than max_frames")

    @property
    def samples(self) -> bool:
        """Whether a frame-sampling control is set (those apply to video files, not to frame lists)."""
        return any(v is not None for v in (self.fps, self.nframes, self.min_frames, self.max_frames))

    def as_dict(self) -> dict[str, Any]:
        return _present(self)


# --- data URLs ---------------------------------------------------------------------------------------------------


def sniff_mime(data: bytes, name: str | None = None) -> str:
    """The MIME type of encoded media, from its magic bytes, else from ``name``'s extension."""
    head = data[:64]
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return "image/webp"
    if head.startswith(b"RIFF") and head[8:12] == b"AVI ":
        return "video/x-msvideo"
    if head.startswith(b"BM"):
        return "image/bmp"
    if head[4:8] == b"ftyp":
        return "video/quicktime" if head[8:12] == b"qt  " else "video/mp4"
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return "video/webm" if b"webm" in data[:256] else "video/x-matroska"
    if name:
        guessed, _ = mimetypes.guess_type(name)
        if guessed:
            return guessed
    return "application/octet-stream"


def data_url(data: bytes, mime: str | None = None, *, name: str | None = None) -> str:
    """``data:<mime>;base64,…`` for encoded bytes (MIME sniffed when not given)."""
    return f"data:{mime or sniff_mime(data, name)};base64,{base64.b64encode(data).decode('ascii')}"


def _is_url(src: str) -> bool:
    return src.lower().startswith(_PASS_THROUGH)


def _file_url(path: str | os.PathLike[str]) -> str:
    p = Path(path)
    data = p.read_bytes()
    return data_url(data, name=p.name)


def _to_pil(frame: Pixels) -> Image.Image:
    if isinstance(frame, Image.Image):
        return frame
    array = np.asarray(frame)
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(f"a frame must be an HxWx3 uint8 array, got shape {array.shape} dtype {array.dtype}")
    return Image.fromarray(array, "RGB")


def _encode_image(image: Image.Image, fmt: str) -> str:
    fmt = fmt.upper()
    keep = {"JPEG": ("RGB", "L"), "PNG": ("RGB", "RGBA", "L", "P"), "WEBP": ("RGB", "RGBA")}.get(fmt, ("RGB",))
    if image.mode not in keep:
        image = image.convert("RGBA" if "A" in image.mode and "RGBA" in keep else "RGB")
    buf = io.BytesIO()
    image.save(buf, fmt, **({"quality": 90} if fmt in ("JPEG", "WEBP") else {}))
    return data_url(buf.getvalue(), Image.MIME.get(fmt))


def _image_url(src: ImageSource, fmt: str) -> str:
    if isinstance(src, str) and _is_url(src):
        return src
    if isinstance(src, str | os.PathLike):
        return _file_url(src)
    if isinstance(src, bytes | bytearray):
        return data_url(bytes(src))
    return _encode_image(_to_pil(src), fmt)


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
    return {"type": "image_url", "image_url": {"url": _image_url(src, image_format), **controls.as_dict()}}


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
        elif isinstance(src, str) and _is_url(src):
            url = src
        else:
            url = _file_url(src)
        return {"type": "video_url", "video_url": {"url": url, **controls.as_dict()}}
    if controls.samples:
        raise ValueError(
            "frames are sent as they are: fps, nframes, min_frames and max_frames sample video files; "
            "give sample_fps (the frames' rate) or sample the frames yourself"
        )
    rate = 2.0 if sample_fps is None else sample_fps
    if not (isinstance(rate, int | float) and 0 < rate <= 60):
        raise ValueError(f"sample_fps must be in (0, 60], got {sample_fps!r}")
    urls = [_image_url(frame, frame_format) for frame in _frames(src)]
    return {"type": "video", "video": urls, "sample_fps": float(rate), **controls.as_dict()}


def encode_mp4(frames: np.ndarray[Any, Any] | Sequence[Pixels], *, fps: float = 2.0) -> bytes:
    """Encode frames as an H.264 mp4 with PyAV (installed with qwen-vl-utils). Odd sizes lose their last row/column
    (yuv420p needs even sides)."""
    import av  # lazily: only this helper needs it

    if not (isinstance(fps, int | float) and 0 < fps <= 1000):
        raise ValueError(f"fps must be in (0, 1000], got {fps!r}")

    images = [
        np.asarray(_to_pil(f).convert("RGB")) for f in (list(frames) if isinstance(frames, np.ndarray) else frames)
    ]
    if not images:
        raise ValueError("a video needs at least one frame")
    height, width = images[0].shape[0] // 2 * 2, images[0].shape[1] // 2 * 2
    if height == 0 or width == 0:
        raise ValueError("frames must be at least 2x2 pixels")
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for image in images:
            if image.shape[:2] != images[0].shape[:2]:
                raise ValueError("all frames must have the same size")
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image[:height, :width]), format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return buf.getvalue()


def media_kind(src: str | os.PathLike[str]) -> Literal["image", "video"]:
    """``video`` for a video extension (``.mp4``, ``.webm``, ``.mov``, ``.mkv``, ``.avi``, …), a ``data:video/…`` URL,
    or a local file whose bytes say so; ``image`` otherwise."""
    text = os.fspath(src)
    if text.lower().startswith("data:"):
        return "video" if text[5:].lower().startswith("video/") else "image"
    path = urlsplit(text).path if _is_url(text) else text
    suffix = Path(path).suffix.lower()
    if suffix in VIDEO_EXTENSIONS:
        return "video"
    if not suffix and not _is_url(text) and Path(text).is_file():
        with open(text, "rb") as f:
            return "video" if sniff_mime(f.read(64)).startswith("video/") else "image"
    return "image"


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
