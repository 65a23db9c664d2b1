"""What a decode worker says, checked: headers parsed field by field (anything off is a protocol breach, and the
worker is replaced), and refusals and deaths turned into the server's own error messages (only a short, checked
detail of the worker's is ever repeated)."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, TypeVar

from server.errors import MediaDecodeError, MediaError, MediaTooLargeError, MediaUnsupportedError
from server.media.decode import IMAGE_FORMATS, ImageHeader, VideoHeader
from server.media.handle import DeathCause, WorkerDied

H = TypeVar("H")
_DETAIL = re.compile(r"[A-Za-z0-9_./ -]{0,40}")


def _int(value: Any, low: int, high: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise WorkerDied("protocol")
    return value


def image_header(raw: dict[str, Any]) -> ImageHeader:
    fmt = raw.get("format")
    if fmt not in IMAGE_FORMATS:
        raise WorkerDied("protocol")
    return ImageHeader(format=fmt, width=_int(raw.get("width"), 1, 2**31), height=_int(raw.get("height"), 1, 2**31))


def video_header(raw: dict[str, Any]) -> VideoHeader:
    fps, duration = raw.get("fps"), raw.get("duration")
    if not isinstance(fps, (int, float)) or not isinstance(duration, (int, float)) or not fps > 0 or duration < 0:
        raise WorkerDied("protocol")
    codec, container = raw.get("codec"), raw.get("container")
    if not (
        isinstance(codec, str)
        and _DETAIL.fullmatch(codec)
        and isinstance(container, str)
        and _DETAIL.fullmatch(container)
    ):
        raise WorkerDied("protocol")
    return VideoHeader(
        container=container,
        codec=codec,
        width=_int(raw.get("width"), 1, 2**31),
        height=_int(raw.get("height"), 1, 2**31),
        frames=_int(raw.get("frames"), 0, 2**62),
        fps=float(fps),
        duration=float(duration),
    )


def header_or_raise(answer: dict[str, Any], kind: str, parse: Callable[[dict[str, Any]], H], param: str) -> H:
    if "error" in answer:
        raise failure(answer, kind, param)
    raw = answer.get("header")
    if not isinstance(raw, dict):
        raise WorkerDied("protocol")
    return parse(raw)


def failure(answer: dict[str, Any], kind: str, param: str) -> MediaError:
    """A worker's refusal, in the server's own words (only a short, checked detail of the worker's is repeated)."""
    code, detail = answer.get("error"), answer.get("detail")
    detail = detail if isinstance(detail, str) and _DETAIL.fullmatch(detail) else ""
    if code == "unsupported":
        if kind == "image":
            what = f"image format {detail}" if detail else "this image format"
            allowed = ", ".join(IMAGE_FORMATS)
        else:
            what = f"video {detail}" if detail else "this video format"
            allowed = "MP4/MOV or Matroska/WebM with H.264, HEVC, VP8, VP9, AV1 or MPEG-4"
        return MediaUnsupportedError(f"{param}: {what} is not accepted; use {allowed}", param=param)
    if code == "too_large":
        return MediaTooLargeError(f"{param} is too large to decode within the server's limits", param=param)
    return MediaDecodeError(f"{param} is not a decodable {kind}", param=param)


def death_error(cause: DeathCause, kind: str, param: str) -> MediaError:
    if cause == "memory":
        return MediaTooLargeError(
            f"{param} needs more memory to decode than the server's per-decoder limit", param=param
        )
    return MediaDecodeError(f"{param}: the decoder failed on this {kind}", param=param)
