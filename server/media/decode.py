"""Decoding untrusted image and video bytes: the code that runs inside a sandboxed decode worker (``media.worker``).

Every job has two steps, so that limits are checked before work is done and the API process decides every size:

1. ``open_*`` sniffs the magic bytes, opens the data with exactly one allowed demuxer or Pillow plugin, and reads the
   header: format, codec, width, height and, for video, frame count, frame rate and duration. Nothing is decoded yet.
2. The API process checks the header against its limits and answers with the target grid (and the frame indices);
   ``finish_image`` / ``decode_video`` then decode straight to that grid (JPEG DCT scaling, FFmpeg's own scaler) and
   write RGB bytes into the caller's output buffer.

What is switched off: only PNG, JPEG, WebP, BMP and GIF reach Pillow (``Image.open(formats=...)``, so no other plugin
parses a header); only ISO-BMFF (MP4/MOV) and Matroska/WebM reach FFmpeg, each with its one demuxer named explicitly,
``format_whitelist`` set, ``protocol_whitelist`` empty (no nested opens: HLS/DASH playlists, ``concat:``, ``subfile:``,
``file:``, ``http:`` all fail), MOV data references off, and only the H.264/HEVC/VP8/VP9/AV1/MPEG-4 decoders allowed.
Errors are :class:`DecodeFailure` with a stable code; the API process writes the user's message itself.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from PIL import Image

FailureCode = Literal["decode_failed", "unsupported", "too_large"]

IMAGE_FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "GIF")
# Demuxer names as FFmpeg spells them; the whitelist names every alias of the one demuxer we pick.
VIDEO_CONTAINERS = {"MP4": ("mov", "mov,mp4,m4a,3gp,3g2,mj2"), "MATROSKA": ("matroska", "matroska,webm")}
VIDEO_CODECS = frozenset({"h264", "hevc", "vp8", "vp9", "av1", "libdav1d", "mpeg4"})
FRAME_FACTOR = 2  # Qwen3-VL's temporal patch: videos carry an even number of frames


class DecodeFailure(Exception):
    """A job failed in a way the request caused. ``code`` maps to the error tree; ``detail`` is for the API's message
    and is built only from numbers and fixed words here, never from library messages."""

    def __init__(self, code: FailureCode, detail: str = "") -> None:
        super().__init__(code)
        self.code = code
        self.detail = detail


@dataclass(frozen=True)
class ImageHeader:
    format: str
    width: int
    height: int


@dataclass(frozen=True)
class VideoHeader:
    container: str
    codec: str
    width: int
    height: int
    frames: int  # from the container's index, or duration × rate when it has none
    fps: float
    duration: float


_ISO_BRANDS_IMAGE = (b"avif", b"avis", b"heic", b"heix", b"heim", b"heis", b"mif1", b"msf1")
_SIGNATURES: tuple[tuple[int, bytes, str], ...] = (
    (0, b"\x89PNG\r\n\x1a\n", "PNG"),
    (0, b"\xff\xd8\xff", "JPEG"),
    (0, b"GIF87a", "GIF"),
    (0, b"GIF89a", "GIF"),
    (0, b"BM", "BMP"),
    (0, b"\x1a\x45\xdf\xa3", "MATROSKA"),
    # Recognised so that the refusal can name them; never handed to a decoder.
    (0, b"II*\x00", "TIFF"),
    (0, b"MM\x00*", "TIFF"),
    (0, b"\x00\x00\x01\x00", "ICO"),
    (0, b"8BPS", "PSD"),
    (0, b"%PDF", "PDF"),
    (0, b"#EXTM3U", "HLS playlist"),
    (0, b"ffconcat", "concat script"),
    (0, b"\x1f\x8b", "gzip"),
    (0, b"FLV", "FLV"),
    (0, b"OggS", "Ogg"),
    (0, b"\x00\x00\x00\x0cjP  ", "JPEG 2000"),
)


def sniff(data: bytes | memoryview) -> str | None:
    """The media type by magic bytes, before any library sees the data; None when nothing matches.

    Only PNG, JPEG, WEBP, BMP, GIF, MP4 and MATROSKA are ever decoded; the other names exist for error messages.
    """
    head = bytes(data[:32])
    for offset, magic, name in _SIGNATURES:
        if head[offset : offset + len(magic)] == magic:
            return name
    if head[:4] == b"RIFF":
        return {b"WEBP": "WEBP", b"AVI ": "AVI", b"WAVE": "WAV"}.get(head[8:12], "RIFF")
    if head[4:8] == b"ftyp":
        return "HEIF/AVIF" if head[8:12] in _ISO_BRANDS_IMAGE else "MP4"
    if head[4:8] in (b"moov", b"mdat", b"free", b"wide", b"skip"):
        return "MP4"
    if head[:1] == b"\x47" and len(data) > 188 and bytes(data[188:189]) == b"\x47":
        return "MPEG-TS"
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if text.startswith((b"<?xml", b"<mpd", b"<svg", b"<!doctype", b"<html")):
        return "XML"
    return None


# --- images ---------------------------------------------------------------------------------------------------------


def open_image(data: bytes | memoryview, *, max_source_pixels: int) -> tuple[Image.Image, ImageHeader]:
    kind = sniff(data)
    if kind not in IMAGE_FORMATS:
        raise DecodeFailure("unsupported", kind) if kind else DecodeFailure("decode_failed")
    Image.MAX_IMAGE_PIXELS = max_source_pixels  # Pillow's own bomb check, at our limit (an error, not a warning)
    try:
        image = Image.open(io.BytesIO(data), formats=[kind])
        width, height = image.size
    except Image.DecompressionBombError as exc:
        raise DecodeFailure("too_large") from exc
    except Exception as exc:  # Pillow raises OSError, SyntaxError, ValueError, struct.error... on malformed headers
        raise DecodeFailure("decode_failed") from exc
    if width < 1 or height < 1:
        raise DecodeFailure("decode_failed", "no pixels")
    return image, ImageHeader(format=kind, width=width, height=height)


def finish_image(image: Image.Image, height: int, width: int, out: memoryview) -> int:
    """Decode at (or near, via JPEG DCT scaling) the target size, compose alpha on white, resize, write RGB to ``out``."""
    if height * width * 3 > len(out):
        raise DecodeFailure("too_large")
    try:
        if image.format == "JPEG" and width * 2 <= image.width and height * 2 <= image.height:
            image.draft("RGB", (width, height))  # decode at 1/2, 1/4 or 1/8 scale inside libjpeg
        image.load()
        rgb = to_rgb(image)
        if rgb.size != (width, height):
            rgb = rgb.resize((width, height), Image.Resampling.BICUBIC)
        raw = rgb.tobytes()
    except MemoryError:
        raise
    except Exception as exc:
        raise DecodeFailure("decode_failed") from exc
    out[: len(raw)] = raw
    return len(raw)


def to_rgb(image: Image.Image) -> Image.Image:
    """RGBA/LA/P-with-alpha are composed on white (qwen-vl-utils' ``to_rgb``); other modes are converted."""
    if image.mode == "RGB":
        return image
    if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return image.convert("RGB")


# --- video ----------------------------------------------------------------------------------------------------------


def open_video(data: bytes | memoryview) -> tuple[Any, Any, VideoHeader]:
    """Open with the one demuxer the magic bytes name, no protocols at all; read the video stream's header."""
    import av

    kind = sniff(data)
    if kind not in VIDEO_CONTAINERS:
        raise DecodeFailure("unsupported", kind) if kind else DecodeFailure("decode_failed")
    demuxer, whitelist = VIDEO_CONTAINERS[kind]
    options = {
        "format_whitelist": whitelist,
        "protocol_whitelist": "",  # nested opens (playlists, references) get no protocol at all
        "enable_drefs": "0",  # MOV data references to other files stay off
        "use_absolute_path": "0",
    }
    try:
        container = av.open(io.BytesIO(data), mode="r", format=demuxer, options=options, metadata_errors="ignore")
    except Exception as exc:  # av.FFmpegError subclasses, ValueError, ...
        raise DecodeFailure("decode_failed") from exc
    try:
        if not container.streams.video:
            raise DecodeFailure("decode_failed", "no video stream")
        stream = container.streams.video[0]
        codec = stream.codec_context.name if stream.codec_context is not None else "unknown"
        if codec not in VIDEO_CODECS:
            raise DecodeFailure("unsupported", f"codec {codec}")
        header = _video_header(kind, container, stream, codec)
    except BaseException:
        container.close()
        raise
    return container, stream, header


def _video_header(kind: str, container: Any, stream: Any, codec: str) -> VideoHeader:
    width, height = int(stream.codec_context.width), int(stream.codec_context.height)
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    fps = float(rate) if rate else 0.0
    duration = 0.0
    if stream.duration and stream.time_base:
        duration = float(stream.duration * stream.time_base)
    elif container.duration:
        duration = container.duration / 1_000_000
    frames = int(stream.frames or 0)
    if frames <= 0 and duration > 0 and fps > 0:
        frames = round(duration * fps)
    if frames > 0 and fps > 0 and duration <= 0:
        duration = frames / fps
    if width < 1 or height < 1 or not math.isfinite(fps) or fps <= 0 or frames < FRAME_FACTOR:
        raise DecodeFailure("decode_failed", "no usable video stream")
    return VideoHeader(
        container=kind, codec=codec, width=width, height=height, frames=frames, fps=fps, duration=duration
    )


def decode_video(
    container: Any,
    stream: Any,
    indices: Sequence[int],
    height: int,
    width: int,
    out: memoryview,
    *,
    max_decoded_frames: int,
) -> int:
    """Decode the frames at ``indices`` (sorted), each scaled by FFmpeg straight to ``height``×``width`` RGB, into ``out``.

    Frames are located by timestamp; far targets are reached by seeking to the key frame before them. A stream that ends
    early repeats its last frame (as a decoder that clamps would). At most ``max_decoded_frames`` are decoded in all.
    """
    frame_bytes = height * width * 3
    if frame_bytes * len(indices) > len(out):
        raise DecodeFailure("too_large")
    arrays = np.frombuffer(out, dtype=np.uint8, count=frame_bytes * len(indices)).reshape(
        len(indices), height, width, 3
    )
    try:
        found = _sample(container, stream, indices, arrays, max_decoded_frames)
    except (DecodeFailure, MemoryError):
        raise
    except Exception as exc:
        raise DecodeFailure("decode_failed") from exc
    finally:
        container.close()
    if found == 0:
        raise DecodeFailure("decode_failed", "no frame could be decoded")
    for i in range(found, len(indices)):
        arrays[i] = arrays[found - 1]
    return frame_bytes * len(indices)


def _sample(container: Any, stream: Any, indices: Sequence[int], arrays: np.ndarray, budget: int) -> int:
    """Fill ``arrays`` in order; returns how many targets were found before the stream ended."""
    stream.thread_type = "AUTO"
    time_base = float(stream.time_base)
    start = stream.start_time or 0
    fps = float(stream.average_rate or stream.guessed_rate or stream.base_rate)
    height, width = arrays.shape[1:3]
    seek_gap = max(2.0 * fps, 16.0)  # frames ahead beyond which seeking beats decoding through
    filled = decoded = 0
    position = -1  # index of the last decoded frame
    while filled < len(indices):
        if indices[filled] - position > seek_gap:
            target_pts = start + int(indices[filled] / fps / time_base)
            container.seek(target_pts, stream=stream, backward=True, any_frame=False)
        exhausted = True
        for frame in container.decode(stream):
            decoded += 1
            if decoded > budget:
                raise DecodeFailure("too_large", "too many frames to decode")
            pts = frame.pts if frame.pts is not None else 0
            position = round((pts - start) * time_base * fps)
            if position < indices[filled]:
                continue
            rgb = frame.reformat(width=width, height=height, format="rgb24", interpolation="BICUBIC").to_ndarray()
            while filled < len(indices) and indices[filled] <= position:
                arrays[filled] = rgb
                filled += 1
            if filled == len(indices) or indices[filled] - position > seek_gap:
                exhausted = False
                break
        if exhausted:  # the stream ended before the remaining targets
            break
    return filled
