"""Media made by the tests themselves: images, mp4 videos from numpy frames, data URLs."""

from __future__ import annotations

import base64
import io
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image


def noise_image(width: int, height: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8))


def image_bytes(width: int = 64, height: int = 48, fmt: str = "PNG", seed: int = 0) -> bytes:
    buf = io.BytesIO()
    noise_image(width, height, seed).save(buf, fmt)
    return buf.getvalue()


def data_url(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def mp4_bytes(frames: int = 20, width: int = 128, height: int = 96, fps: float = 10.0, seed: int = 0) -> bytes:
    """Encode random frames as an MPEG-4 mp4 with OpenCV (installed with vLLM)."""
    import cv2

    rng = np.random.default_rng(seed)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "clip.mp4"
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
        for _ in range(frames):
            writer.write(rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8))
        writer.release()
        return path.read_bytes()
