"""What every example shares: its arguments, the client, and sample media made in memory (no internet needed)."""

from __future__ import annotations

import argparse
import os

import numpy as np
from openai import OpenAI
from openai.types import CompletionUsage
from PIL import Image, ImageDraw

from clients.chat_cli import first_model, format_usage
from clients.messages import encode_mp4


def parser(description: str | None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", default="http://127.0.0.1:8000", help="server base URL")
    p.add_argument("--model", help="model name (default: the first of /v1/models)")
    p.add_argument("--api-key", default=os.environ.get("QWEN3VL_API_KEY") or os.environ.get("OPENAI_API_KEY"))
    p.add_argument("--max-tokens", type=int, default=256)
    return p


def connect(args: argparse.Namespace) -> tuple[OpenAI, str]:
    """An openai client for the server, and the model to ask."""
    client = OpenAI(base_url=f"{args.url.rstrip('/')}/v1", api_key=args.api_key or "unused", timeout=600)
    return client, args.model or first_model(client)


def print_usage(usage: CompletionUsage | None) -> None:
    """``usage: prompt_tokens=… completion_tokens=… total_tokens=… image_tokens=… video_tokens=…``"""
    print(format_usage(usage))


def sample_image(seed: int = 0, width: int = 320, height: int = 240) -> Image.Image:
    """A gradient with a red square and a blue disc whose places depend on ``seed``."""
    x = np.linspace(0, 255, width, dtype=np.uint8)
    y = np.linspace(0, 255, height, dtype=np.uint8)
    pixels = np.stack(np.broadcast_arrays(x[None, :], y[:, None], np.full((height, width), 96, np.uint8)), axis=-1)
    image = Image.fromarray(np.ascontiguousarray(pixels), "RGB")
    pen = ImageDraw.Draw(image)
    rng = np.random.default_rng(seed)
    sx, sy = (int(v) for v in rng.integers(0, (width // 2, height // 2)))
    pen.rectangle((sx, sy, sx + width // 4, sy + height // 4), fill=(220, 30, 30))
    cx, cy = (int(v) for v in rng.integers((width // 2, height // 2), (width - 20, height - 20)))
    pen.ellipse((cx - 20, cy - 20, cx + 20, cy + 20), fill=(30, 60, 220))
    return image


def sample_frames(count: int = 8, width: int = 128, height: int = 96) -> np.ndarray:
    """``count`` RGB frames (TxHxWx3 uint8) of a red square moving left to right."""
    frames = np.full((count, height, width, 3), 40, dtype=np.uint8)
    side = height // 3
    for i in range(count):
        left = (width - side) * i // max(count - 1, 1)
        frames[i, side : 2 * side, left : left + side] = (220, 30, 30)
    return frames


def sample_video(fps: float = 4.0) -> bytes:
    """``sample_frames()`` as an H.264 mp4 (2 s at 4 fps)."""
    return encode_mp4(sample_frames(), fps=fps)
