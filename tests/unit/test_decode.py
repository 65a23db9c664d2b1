from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from server.errors import MediaDecodeError, MediaTooLargeError, MediaUnsupportedError
from server.media import decode
from tests.media_factory import image_bytes, mp4_bytes, noise_image

PARAM = "messages[0].content[0].image_url"
BIG = 8192 * 8192


def png_declaring(width: int, height: int) -> bytes:
    """A few dozen bytes of PNG whose header claims width×height pixels (a decompression bomb's calling card)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00")) + chunk(b"IEND", b"")


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "GIF", "BMP"])
def test_decode_image_formats_to_rgb(fmt: str) -> None:
    image = decode.decode_image(image_bytes(40, 30, fmt), param=PARAM, max_source_pixels=BIG)
    assert image.mode == "RGB"
    assert image.size == (40, 30)


def test_formats_outside_the_allow_list_are_unsupported() -> None:
    buf = io.BytesIO()
    noise_image(8, 8).save(buf, "TIFF")
    with pytest.raises(MediaUnsupportedError) as info:
        decode.decode_image(buf.getvalue(), param=PARAM, max_source_pixels=BIG)
    assert "TIFF" in info.value.message and info.value.code == "media_unsupported"


def test_decode_garbage_names_the_part_without_reprs() -> None:
    with pytest.raises(MediaDecodeError) as info:
        decode.decode_image(b"definitely not an image", param=PARAM, max_source_pixels=BIG)
    assert info.value.param == PARAM
    assert "0x" not in info.value.message and "<" not in info.value.message


def test_huge_declared_dimensions_refused_without_decoding() -> None:
    data = png_declaring(9000, 9000)
    assert len(data) < 100
    with pytest.raises(MediaTooLargeError) as info:
        decode.decode_image(data, param=PARAM, max_source_pixels=BIG)
    assert "9000x9000" in info.value.message
    # Far beyond: Pillow's own bomb guard fires at open; still a clean media_too_large
    with pytest.raises(MediaTooLargeError) as info:
        decode.decode_image(png_declaring(100_000, 100_000), param=PARAM, max_source_pixels=BIG)
    assert info.value.code == "media_too_large"


def test_resizes_to_the_given_target_and_scales_jpegs_in_the_decoder() -> None:
    jpeg = image_bytes(1600, 1200, "JPEG")
    seen: list[tuple[int, int]] = []

    def size_for(height: int, width: int) -> tuple[int, int]:
        seen.append((height, width))
        return 288, 384

    image = decode.decode_image(jpeg, param=PARAM, max_source_pixels=BIG, size_for=size_for)
    assert image.size == (384, 288)
    assert seen == [(1200, 1600)]  # the target is picked from the header's dimensions


def test_transparent_images_are_composed_on_white() -> None:
    rgba = Image.new("RGBA", (4, 4), (255, 0, 0, 0))
    buf = io.BytesIO()
    rgba.save(buf, "PNG")
    image = decode.decode_image(buf.getvalue(), param=PARAM, max_source_pixels=BIG)
    assert image.getpixel((0, 0)) == (255, 255, 255)


def _all_frames(total: int, fps: float) -> tuple[int, ...]:
    return decode.sample_indices(total, fps, fps=2.0, nframes=None, min_frames=None, max_frames=64)


def test_read_video_samples_at_fps_with_metadata() -> None:
    video = decode.read_video(mp4_bytes(frames=20, fps=10.0), param="v", max_duration_s=60, sample=_all_frames)
    # 2 s at 2 fps → 4 frames (Qwen's minimum is 4, even counts)
    assert video.frames.shape == (4, 96, 128, 3)
    assert video.frames.dtype == np.uint8
    assert (video.total_num_frames, video.fps) == (20, pytest.approx(10.0))
    assert video.frames_indices[0] == 0 and video.frames_indices[-1] == 19
    assert video.metadata()["frames_indices"] == list(video.frames_indices)


def test_read_video_refuses_long_videos_before_decoding_frames() -> None:
    sampled: list[int] = []

    def sample(total: int, fps: float) -> tuple[int, ...]:
        sampled.append(total)
        return (0, 1)

    with pytest.raises(MediaTooLargeError) as info:
        decode.read_video(mp4_bytes(frames=20, fps=10.0), param="v", max_duration_s=1.0, sample=sample)
    assert "limit is 1 s" in info.value.message
    assert sampled == []


@pytest.mark.parametrize(
    ("kwargs", "count"),
    [
        ({"fps": 2.0, "nframes": None, "min_frames": None, "max_frames": 64}, 8),  # 4 s at 2 fps
        ({"fps": 10.0, "nframes": None, "min_frames": None, "max_frames": 6}, 6),
        ({"fps": None, "nframes": 8, "min_frames": None, "max_frames": 64}, 8),
        ({"fps": None, "nframes": 500, "min_frames": None, "max_frames": 64}, 40),  # clamped to the video's frames
        ({"fps": 0.5, "nframes": None, "min_frames": 10, "max_frames": 64}, 10),
    ],
)
def test_sample_indices(kwargs: dict[str, float | int | None], count: int) -> None:
    indices = decode.sample_indices(40, 10.0, **kwargs)  # type: ignore[arg-type]
    assert len(indices) == count
    assert indices[0] == 0 and indices[-1] == 39


def test_read_video_garbage() -> None:
    with pytest.raises(MediaDecodeError):
        decode.read_video(b"\x00" * 1000, param="v", max_duration_s=60, sample=_all_frames)


def test_frames_to_video_pads_to_even_and_resizes() -> None:
    frames = [noise_image(32, 32, 0), noise_image(64, 48, 1), noise_image(32, 32, 2)]
    video = decode.frames_to_video(frames, sample_fps=1.0, param="v")
    assert video.frames.shape == (4, 32, 32, 3)
    assert video.frames_indices == (0, 1, 2, 3)
    assert video.fps == 1.0
