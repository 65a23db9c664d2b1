from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from server.media import budget, decode
from tests.hostile_media import concat_script, dash_manifest, encode_video, hls_playlist, mp4_with_playlist_body
from tests.media_factory import image_bytes, mp4_bytes, noise_image

PARAM = "messages[0].content[0].image_url"
BIG = 8192 * 8192


def png_declaring(width: int, height: int) -> bytes:
    """A few dozen bytes of PNG whose header claims width×height pixels (a decompression bomb's calling card)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00")) + chunk(b"IEND", b"")


def _image(data: bytes, height: int | None = None, width: int | None = None) -> Image.Image:
    """The worker's two steps, in process: header, then decode to the target grid (the header's own size by default)."""
    image, header = decode.open_image(data, max_source_pixels=BIG)
    height, width = height or header.height, width or header.width
    out = memoryview(bytearray(height * width * 3))
    written = decode.finish_image(image, height, width, out)
    assert written == height * width * 3
    return Image.frombytes("RGB", (width, height), out)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "GIF", "BMP"])
def test_decode_image_formats_to_rgb(fmt: str) -> None:
    image = _image(image_bytes(40, 30, fmt))
    assert image.mode == "RGB"
    assert image.size == (40, 30)


@pytest.mark.parametrize("fmt", ["TIFF", "ICO", "PDF", "JPEG2000"])
def test_formats_outside_the_allow_list_are_named_and_never_opened(fmt: str) -> None:
    buf = io.BytesIO()
    noise_image(16, 16).save(buf, fmt)
    with pytest.raises(decode.DecodeFailure) as info:
        decode.open_image(buf.getvalue(), max_source_pixels=BIG)
    assert info.value.code == "unsupported" and info.value.detail


def test_garbage_is_a_decode_failure() -> None:
    with pytest.raises(decode.DecodeFailure) as info:
        decode.open_image(b"definitely not an image", max_source_pixels=BIG)
    assert info.value.code == "decode_failed"


def test_huge_declared_dimensions_are_read_from_the_header_without_decoding() -> None:
    data = png_declaring(9000, 9000)
    assert len(data) < 100
    _, header = decode.open_image(data, max_source_pixels=BIG * 4)
    assert (header.width, header.height) == (9000, 9000)  # the API process refuses it from these numbers
    with pytest.raises(decode.DecodeFailure) as info:  # far beyond: Pillow's own bomb guard, at our limit
        decode.open_image(png_declaring(100_000, 100_000), max_source_pixels=BIG)
    assert info.value.code == "too_large"


def test_jpegs_are_dct_scaled_to_the_target() -> None:
    image, header = decode.open_image(image_bytes(1600, 1200, "JPEG"), max_source_pixels=BIG)
    assert (header.width, header.height) == (1600, 1200)
    out = memoryview(bytearray(288 * 384 * 3))
    decode.finish_image(image, 288, 384, out)
    assert image.size == (400, 300)  # libjpeg decoded at 1/4 scale, then one resize to the grid


def test_transparent_images_are_composed_on_white() -> None:
    rgba = Image.new("RGBA", (4, 4), (255, 0, 0, 0))
    buf = io.BytesIO()
    rgba.save(buf, "PNG")
    assert _image(buf.getvalue()).getpixel((0, 0)) == (255, 255, 255)


def test_output_that_would_not_fit_the_buffer_is_refused() -> None:
    image, _ = decode.open_image(image_bytes(40, 30), max_source_pixels=BIG)
    with pytest.raises(decode.DecodeFailure) as info:
        decode.finish_image(image, 300, 400, memoryview(bytearray(1000)))
    assert info.value.code == "too_large"


@pytest.mark.parametrize(("container", "codec", "name"), [("mp4", "libx264", "h264"), ("webm", "libvpx-vp9", "vp9")])
def test_video_header_then_sampled_frames_at_the_target_grid(container: str, codec: str, name: str) -> None:
    data = encode_video(container, codec, frames=20, width=128, height=96, fps=10)
    handle, stream, header = decode.open_video(data)
    assert (header.codec, header.width, header.height, header.frames) == (name, 128, 96, 20)
    assert header.fps == pytest.approx(10.0) and header.duration == pytest.approx(2.0, abs=0.15)
    indices = (0, 6, 13, 19)
    out = memoryview(bytearray(len(indices) * 32 * 64 * 3))
    written = decode.decode_video(handle, stream, indices, 32, 64, out, max_decoded_frames=100)
    frames = np.frombuffer(out, np.uint8).reshape(4, 32, 64, 3)
    assert written == len(out) and frames.std() > 0
    assert not np.array_equal(frames[0], frames[1])  # four different frames, not one repeated


def test_mpeg4_from_opencv_is_accepted() -> None:
    _, _, header = decode.open_video(mp4_bytes(frames=20, fps=10.0))
    assert header.codec == "mpeg4" and header.frames == 20


def test_far_frames_are_reached_by_seeking_within_the_decode_budget() -> None:
    data = encode_video(frames=120, width=64, height=64, fps=30)  # x264 ultrafast: a key frame every 250 at most
    handle, stream, _ = decode.open_video(data)
    out = memoryview(bytearray(2 * 64 * 64 * 3))
    decode.decode_video(handle, stream, (0, 119), 64, 64, out, max_decoded_frames=400)
    handle, stream, _ = decode.open_video(data)
    with pytest.raises(decode.DecodeFailure) as info:  # a lying header cannot make it decode forever
        decode.decode_video(handle, stream, (0, 119), 64, 64, out, max_decoded_frames=10)
    assert info.value.code == "too_large"


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b"\x00" * 1000, "decode_failed"),
        (hls_playlist("http://127.0.0.1:9/a.ts"), "unsupported"),
        (dash_manifest("http://127.0.0.1:9/a.mp4"), "unsupported"),
        (concat_script("/etc/passwd"), "unsupported"),
        (mp4_with_playlist_body(hls_playlist("file:///etc/passwd")), "decode_failed"),
    ],
)
def test_non_videos_and_playlists_are_refused(data: bytes, code: str) -> None:
    with pytest.raises(decode.DecodeFailure) as info:
        decode.open_video(data)
    assert info.value.code == code


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
    indices = budget.sample_indices(40, 10.0, **kwargs)  # type: ignore[arg-type]
    assert len(indices) == count
    assert indices[0] == 0 and indices[-1] == 39
