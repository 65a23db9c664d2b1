"""Decoding images and videos (CPU work, run on a thread pool by the loader; Pillow and decord release the GIL).

Errors name the part and never echo library object reprs (Pillow's include heap addresses).
"""

from __future__ import annotations

import io
import logging
import warnings
from collections.abc import Sequence

import numpy as np
from PIL import Image, UnidentifiedImageError

from server.engine.base import VideoInput
from server.errors import InvalidRequestError, MediaDecodeError, MediaTooLargeError

logger = logging.getLogger(__name__)

# Pillow's own decompression-bomb guard (pixels); a request over it is refused before decoding.
MAX_IMAGE_PIXELS = 8192 * 8192
FRAME_FACTOR = 2  # Qwen3-VL's temporal patch: videos carry an even number of frames


def decode_image(data: bytes, *, param: str) -> Image.Image:
    """Decode to an RGB image; the header's size is checked before the pixels are decoded."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image: Image.Image = Image.open(io.BytesIO(data))
            width, height = image.size
            if width * height > MAX_IMAGE_PIXELS:
                raise MediaTooLargeError(
                    f"{param} is {width}x{height} pixels; the limit is {MAX_IMAGE_PIXELS} pixels", param=param
                )
            image.load()
            if image.mode != "RGB":
                image = image.convert("RGB")
    except MediaTooLargeError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise MediaTooLargeError(f"{param} has too many pixels", param=param) from exc
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise MediaDecodeError(f"{param} is not a decodable image", param=param) from exc
    if min(image.size) < 1:
        raise MediaDecodeError(f"{param} has no pixels", param=param)
    return image


def decode_video(data: bytes, *, fps: float, max_frames: int, param: str) -> VideoInput:
    """Decode a video file held in memory and sample frames at ``fps`` (Qwen's rule: even count, 4…max frames)."""
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
    indices = sample_indices(total, source_fps, fps=fps, max_frames=max_frames)
    try:
        frames = reader.get_batch(list(indices)).asnumpy()
    except Exception as exc:
        raise MediaDecodeError(f"{param}: frames could not be decoded", param=param) from exc
    return VideoInput(
        frames=np.ascontiguousarray(frames, dtype=np.uint8),
        fps=source_fps,
        total_num_frames=total,
        frames_indices=indices,
        duration=total / source_fps,
    )


def sample_indices(total: int, source_fps: float, *, fps: float, max_frames: int) -> tuple[int, ...]:
    """Frame indices sampled uniformly at ``fps``, with qwen-vl-utils' frame-count rule (``smart_nframes``)."""
    from qwen_vl_utils.vision_process import smart_nframes

    nframes = smart_nframes(
        {"fps": fps, "max_frames": min(max_frames, total)}, total_frames=total, video_fps=source_fps
    )
    return tuple(int(i) for i in np.linspace(0, total - 1, nframes).round())


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
