from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from server.errors import MediaDecodeError, MediaTooLargeError
from server.media import decode
from tests.media_factory import image_bytes, mp4_bytes, noise_image

PARAM = "messages[0].content[0].image_url"


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "GIF"])
def test_decode_image_formats_to_rgb(fmt: str) -> None:
    image = decode.decode_image(image_bytes(40, 30, fmt), param=PARAM)
    assert image.mode == "RGB"
    assert image.size == (40, 30)


def test_decode_garbage_names_the_part_without_reprs() -> None:
    with pytest.raises(MediaDecodeError) as info:
        decode.decode_image(b"definitely not an image", param=PARAM)
    assert info.value.param == PARAM
    assert "0x" not in info.value.message and "<" not in info.value.message


def test_decode_refuses_huge_header_before_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(decode, "MAX_IMAGE_PIXELS", 100)
    with pytest.raises(MediaTooLargeError) as info:
        decode.decode_image(image_bytes(20, 20), param=PARAM)
    assert "20x20" in info.value.message


def test_decode_video_samples_at_fps_with_metadata() -> None:
    video = decode.decode_video(mp4_bytes(frames=20, fps=10.0), fps=2.0, max_frames=64, param="v")
    # 2 s at 2 fps → 4 frames (Qwen's minimum is 4, even counts)
    assert video.frames.shape == (4, 96, 128, 3)
    assert video.frames.dtype == np.uint8
    assert video.total_num_frames == 20
    assert video.fps == pytest.approx(10.0)
    assert video.frames_indices[0] == 0 and video.frames_indices[-1] == 19
    assert video.metadata()["frames_indices"] == list(video.frames_indices)


def test_decode_video_respects_max_frames() -> None:
    video = decode.decode_video(mp4_bytes(frames=40, fps=10.0), fps=10.0, max_frames=6, param="v")
    assert video.frames.shape[0] == 6


def test_decode_video_garbage() -> None:
    with pytest.raises(MediaDecodeError):
        decode.decode_video(b"\x00" * 1000, fps=2.0, max_frames=8, param="v")


def test_frames_to_video_pads_to_even_and_resizes() -> None:
    frames = [noise_image(32, 32, 0), noise_image(64, 48, 1), noise_image(32, 32, 2)]
    video = decode.frames_to_video(frames, sample_fps=1.0, param="v")
    assert video.frames.shape == (4, 32, 32, 3)
    assert video.frames_indices == (0, 1, 2, 3)
    assert video.fps == 1.0
    assert isinstance(frames[0], Image.Image)
