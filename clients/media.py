"""Local media made sendable: MIME sniffing, ``data:`` URLs, PIL images and arrays encoded, frames encoded as mp4, and
whether a path or URL names an image or a video.

Local media is inlined as a base64 ``data:`` URL (MIME sniffed from the bytes, else the file extension); ``http(s)``,
``data:`` and ``file:`` URLs are passed through for the server to fetch.
"""

from __future__ import annotations

import base64
import io
import mimetypes
import os
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal, TypeAlias
from urllib.parse import urlsplit

import numpy as np
from PIL import Image

__all__ = [
    "VIDEO_EXTENSIONS",
    "ImageSource",
    "Pixels",
    "data_url",
    "encode_mp4",
    "file_data_url",
    "is_url",
    "media_kind",
    "sniff_mime",
    "source_url",
    "to_pil",
]

Pixels: TypeAlias = np.ndarray[Any, Any] | Image.Image
"""An HxWx3 uint8 array or a PIL image."""
ImageSource: TypeAlias = str | os.PathLike[str] | bytes | Pixels
"""A URL (``http(s)``, ``data:``, ``file:``), a local path, encoded bytes, a PIL image or an HxWx3 uint8 array."""

VIDEO_EXTENSIONS = frozenset({".mp4", ".m4v", ".webm", ".mov", ".mkv", ".avi", ".mpeg", ".mpg", ".flv", ".wmv", ".3gp"})
_PASS_THROUGH = ("http://", "https://", "data:", "file:")


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


def is_url(src: str) -> bool:
    return src.lower().startswith(_PASS_THROUGH)


def file_data_url(path: str | os.PathLike[str]) -> str:
    p = Path(path)
    data = p.read_bytes()
    return data_url(data, name=p.name)


def to_pil(frame: Pixels) -> Image.Image:
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


def source_url(src: ImageSource, fmt: str) -> str:
    if isinstance(src, str) and is_url(src):
        return src
    if isinstance(src, str | os.PathLike):
        return file_data_url(src)
    if isinstance(src, bytes | bytearray):
        return data_url(bytes(src))
    return _encode_image(to_pil(src), fmt)


def encode_mp4(frames: np.ndarray[Any, Any] | Sequence[Pixels], *, fps: float = 2.0) -> bytes:
    """Encode frames as an H.264 mp4 with PyAV (installed with qwen-vl-utils). Odd sizes lose their last row/column
    (yuv420p needs even sides)."""
    import av  # lazily: only this helper needs it

    if not (isinstance(fps, int | float) and 0 < fps <= 1000):
        raise ValueError(f"fps must be in (0, 1000], got {fps!r}")

    images = [
        np.asarray(to_pil(f).convert("RGB")) for f in (list(frames) if isinstance(frames, np.ndarray) else frames)
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
    path = urlsplit(text).path if is_url(text) else text
    suffix = Path(path).suffix.lower()
    if suffix in VIDEO_EXTENSIONS:
        return "video"
    if not suffix and not is_url(text) and Path(text).is_file():
        with open(text, "rb") as f:
            return "video" if sniff_mime(f.read(64)).startswith("video/") else "image"
    return "image"
