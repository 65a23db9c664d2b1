"""Decoding images and videos (CPU work, run on a thread pool by the loader; Pillow and decord release the GIL).

Checks come before work: an image's format and dimensions are read from its header before its pixels are decoded; a
video's frame count and duration before any frame is decoded. Errors name the part and never echo library object reprs
(Pillow's include heap addresses).
"""

from __future__ import annotations

import io
import logging
import time
import warnings
from collections.abc import Callable, Sequence

import numpy as np
from PIL import Image, UnidentifiedImageError

from server.engine.base import VideoInput
from server.errors import InvalidRequestError, MediaDecodeError, MediaTooLargeError, MediaUnsupportedError

logger = logging.getLogger(__name__)

ALLOWED_IMAGE_FORMATS = frozenset({"PNG", "JPEG", "WEBP", "BMP", "GIF"})
FRAME_FACTOR = 2  # Qwen3-VL's temporal patch: videos carry an even number of frames

SizeFor = Callable[[int, int], tuple[int, int]]  # (height, width) → target (height, width)


def decode_image(
    data: bytes,
    *,
    param: str,
    max_source_pixels: int,
    size_for: SizeFor | None = None,
    on_stage: Callable[[str, float], None] | None = None,
) -> Image.Image:
    """Decode to RGB at the size ``size_for`` picks from the header's dimensions (JPEGs are DCT-scaled when they can be).

    ``on_stage`` receives the seconds spent decoding and resizing, for metrics.
    """
    started = time.perf_counter()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image: Image.Image = Image.open(io.BytesIO(data))
            if image.format not in ALLOWED_IMAGE_FORMATS:
                raise MediaUnsupportedError(
                    f"{param}: image format {image.format or 'unknown'} is not accepted; "
                    f"use one of {', '.join(sorted(ALLOWED_IMAGE_FORMATS))}",
                    param=param,
                )
            width, height = image.size
            if width < 1 or height < 1:
                raise MediaDecodeError(f"{param} has no pixels", param=param)
            if width * height > max_source_pixels:
                raise MediaTooLargeError(
                    f"{param} is {width}x{height} pixels; the limit is {max_source_pixels} pixels", param=param
                )
            target_h, target_w = size_for(height, width) if size_for else (height, width)
            if image.format == "JPEG" and target_w * 2 <= width and target_h * 2 <= height:
                image.draft("RGB", (target_w, target_h))  # decode at 1/2, 1/4 or 1/8 scale inside libjpeg
            image.load()
            image = _to_rgb(image)
    except (MediaTooLargeError, MediaUnsupportedError, MediaDecodeError):
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise MediaTooLargeError(f"{param} has too many pixels", param=param) from exc
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError) as exc:
        raise MediaDecodeError(f"{param} is not a decodable image", param=param) from exc
    decoded = time.perf_counter()
    if image.size != (target_w, target_h):
        image = image.resize((target_w, target_h), Image.Resampling.BICUBIC)
    if on_stage is not None:
        on_stage("decode", decoded - started)
        on_stage("resize", time.perf_counter() - decoded)
    return image


def _to_rgb(image: Image.Image) -> Image.Image:
    """RGBA/LA/P-with-alpha are composed on white (qwen-vl-utils' ``to_rgb``); other modes are converted."""
    if image.mode == "RGB":
        return image
    if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return image.convert("RGB")


def read_video(
    data: bytes,
    *,
    param: str,
    max_duration_s: float,
    sample: Callable[[int, float], tuple[int, ...]],
) -> VideoInput:
    """Probe (frame count, fps, duration) first, refuse over-long videos, then decode only the sampled frames."""
    try:
        import decord
    except ImportError as exc:  # the server was installed without a video backend
        raise InvalidRequestError("video input is not available on this server", param=param) from exc
    try:
        reader = decord.VideoReader(io.BytesIO(data), ctx=decord.cpu(0), num_threads=1)
        total = len(reader)
        source_fps = float(reader.get_avg_fps())
    except Exception as exc:  # decord raises its own DECORDError or RuntimeError on anything it cannot parse
        raise MediaDecodeError(f"{param} is not a decodable video", param=param) from exc
    if total < FRAME_FACTOR or not source_fps > 0:
        raise MediaDecodeError(f"{param} has fewer than {FRAME_FACTOR} frames", param=param)
    duration = total / source_fps
    if duration > max_duration_s:
        raise MediaTooLargeError(f"{param} lasts {duration:.1f} s; the limit is {max_duration_s:g} s", param=param)
    indices = sample(total, source_fps)
    try:
        frames = reader.get_batch(list(indices)).asnumpy()
    except Exception as exc:
        raise MediaDecodeError(f"{param}: frames could not be decoded", param=param) from exc
    return VideoInput(
        frames=np.ascontiguousarray(frames, dtype=np.uint8),
        fps=source_fps,
        total_num_frames=total,
        frames_indices=indices,
        duration=duration,
    )


def sample_indices(
    total: int,
    source_fps: float,
    *,
    fps: float | None,
    nframes: int | None,
    min_frames: int | None,
    max_frames: int,
) -> tuple[int, ...]:
    """Frame indices spread uniformly over the video, counted by qwen-vl-utils' ``smart_nframes`` rule."""
    from qwen_vl_utils.vision_process import smart_nframes

    ceiling = min(max_frames, total)
    rule: dict[str, float | int] = {}
    if nframes is not None:
        rule["nframes"] = max(FRAME_FACTOR, min(nframes, ceiling))
    else:
        rule.update({"fps": fps if fps is not None else 2.0, "max_frames": ceiling})
        if min_frames is not None:
            rule["min_frames"] = min(min_frames, ceiling)
    count = smart_nframes(rule, total_frames=total, video_fps=source_fps)
    return tuple(int(i) for i in np.linspace(0, total - 1, count).round())


def resize_frames(video: VideoInput, height: int, width: int) -> VideoInput:
    if video.frames.shape[1:3] == (height, width):
        return video
    resized = np.stack(
        [np.asarray(Image.fromarray(f).resize((width, height), Image.Resampling.BICUBIC)) for f in video.frames]
    )
    return VideoInput(
        frames=resized,
        fps=video.fps,
        total_num_frames=video.total_num_frames,
        frames_indices=video.frames_indices,
        duration=video.duration,
    )


def frames_to_video(images: Sequence[Image.Image], *, sample_fps: float, param: str) -> VideoInput:
    """A video given as a list of frame images: resized to the first frame's size, padded to an even count."""
    if not images:
        raise MediaDecodeError(f"{param} has no frames", param=param)
    width, height = images[0].size
    arrays = [
        np.asarray(im if im.size == (width, height) else im.resize((width, height), Image.Resampling.BICUBIC))
        for im in images
    ]
    while len(arrays) % FRAME_FACTOR:
        arrays.append(arrays[-1])
    count = len(arrays)
    return VideoInput(
        frames=np.stack(arrays).astype(np.uint8, copy=False),
        fps=sample_fps,
        total_num_frames=count,
        frames_indices=tuple(range(count)),
        duration=count / sample_fps,
    )
