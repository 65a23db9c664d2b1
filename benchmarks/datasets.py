"""Synthetic load-test datasets: one ``RequestSpec`` per request, independent of transport.

Kinds (all deterministic for a given seed):

- ``unique-images``: one random-noise JPEG per request, so no two requests share bytes (every fetch, decode and resize
  is real work; noise is also the worst case for JPEG). Sizes are drawn per side around ``image_size`` (width, height)
  within ``±size_jitter``.
- ``repeated-images``: a pool of ``pool_size`` such images, used round-robin (cache hits after the first round).
- ``videos``: ``frames`` random-noise JPEG frames per request, sent as the server's frame-list video shape
  (``{"type": "video", "video": [frame data URLs], "sample_fps": ...}``); every video is unique.
- ``text``: text only.

Every request also carries a short prompt of random words (unique per request, so no prompt-prefix cache hits beyond
the chat template).
"""

from __future__ import annotations

import base64
import hashlib
import io
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from PIL import Image

KINDS = ("unique-images", "repeated-images", "videos", "text")
VIDEO_SAMPLE_FPS = 2.0  # the rate the frame lists are declared at (Qwen's default sampling rate)
_WORDS = (
    "apple",
    "river",
    "stone",
    "cloud",
    "window",
    "garden",
    "yellow",
    "quiet",
    "engine",
    "paper",
    "silver",
    "forest",
    "music",
    "orange",
    "bridge",
    "candle",
    "winter",
    "market",
    "rocket",
    "pencil",
    "island",
    "mirror",
    "thunder",
    "planet",
    "coffee",
    "violet",
    "harbor",
    "lantern",
    "meadow",
    "spider",
    "castle",
    "copper",
    "velvet",
    "shadow",
    "falcon",
    "marble",
    "breeze",
    "tunnel",
    "saddle",
    "pepper",
    "canyon",
)


def _mime(data: bytes) -> str:
    if data.startswith(b"\x89PNG"):
        return "image/png"
    if data.startswith(b"\xff\xd8"):
        return "image/jpeg"
    if data.startswith(b"RIFF") and data[8:12] == b"WEBP":
        return "image/webp"
    raise ValueError("unknown image format (expected PNG, JPEG or WebP bytes)")


def data_url(data: bytes) -> str:
    """A base64 ``data:`` URL for encoded image bytes (MIME sniffed from the bytes)."""
    return f"data:{_mime(data)};base64," + base64.b64encode(data).decode()


@dataclass(frozen=True)
class RequestSpec:
    """One request, independent of transport.

    ``images`` are encoded PNG/JPEG/WebP bytes. ``video`` is a video as its frames, each an encoded image, sent as the
    server's frame-list shape with ``sample_fps`` = ``video_fps`` (not an mp4). ``media_position`` puts the media
    before (Qwen's convention) or after the text (vLLM's ``bench serve`` puts it last).
    """

    prompt: str
    images: tuple[bytes, ...]
    video: tuple[bytes, ...] | None
    max_tokens: int
    video_fps: float = VIDEO_SAMPLE_FPS
    media_position: Literal["first", "last"] = "first"
    video_mp4: bytes | None = None  # set: the video goes as a video_url mp4 (what any OpenAI-style server accepts)

    def content_parts(self) -> list[dict[str, Any]]:
        media: list[dict[str, Any]] = [{"type": "image_url", "image_url": {"url": data_url(i)}} for i in self.images]
        if self.video_mp4 is not None:
            url = "data:video/mp4;base64," + base64.b64encode(self.video_mp4).decode()
            media.append({"type": "video_url", "video_url": {"url": url}})
        elif self.video is not None:
            frames = [data_url(f) for f in self.video]
            media.append({"type": "video", "video": frames, "sample_fps": self.video_fps})
        text = [{"type": "text", "text": self.prompt}]
        return [*media, *text] if self.media_position == "first" else [*text, *media]

    def chat_messages(self) -> list[dict[str, Any]]:
        """OpenAI chat messages with the media inlined as ``data:`` URLs (a plain string content for text only)."""
        if not self.images and self.video is None:
            return [{"role": "user", "content": self.prompt}]
        return [{"role": "user", "content": self.content_parts()}]

    @property
    def media_bytes(self) -> int:
        video = len(self.video_mp4) if self.video_mp4 is not None else sum(map(len, self.video or ()))
        return sum(map(len, self.images)) + video


def encode_image(pixels: np.ndarray[Any, np.dtype[np.uint8]], image_format: str = "JPEG") -> bytes:
    """Encode an H×W×3 uint8 array (JPEG at Pillow's default quality 75, as vLLM's ``bench serve`` does)."""
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, image_format)
    return buf.getvalue()


def noise_image(rng: np.random.Generator, width: int, height: int, image_format: str = "JPEG") -> bytes:
    return encode_image(rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8), image_format)


def jittered_size(rng: np.random.Generator, size: tuple[int, int], jitter: float) -> tuple[int, int]:
    """(width, height), each side drawn uniformly within ``side × (1 ± jitter)`` (at least 1 pixel)."""
    if not 0 <= jitter < 1:
        raise ValueError("size_jitter must be in [0, 1)")
    if jitter == 0:
        return size
    width, height = (max(1, round(side * rng.uniform(1 - jitter, 1 + jitter))) for side in size)
    return width, height


def random_prompt(rng: np.random.Generator, index: int, words: int) -> str:
    chosen = rng.choice(len(_WORDS), size=words)
    return f"Request {index}: " + " ".join(_WORDS[i] for i in chosen) + ". Describe what you see."


def make_dataset(
    kind: str,
    num_requests: int,
    *,
    seed: int = 0,
    output_len: int = 16,
    image_size: tuple[int, int] = (448, 448),
    size_jitter: float = 0.25,
    pool_size: int = 4,
    frames: int = 8,
    prompt_words: int = 24,
    image_format: str = "JPEG",
    video_format: Literal["frames", "mp4"] = "frames",
) -> list[RequestSpec]:
    """``num_requests`` requests of one kind; ``image_size`` is (width, height), also the frame size for videos."""
    if kind not in KINDS:
        raise ValueError(f"unknown dataset kind {kind!r}; choose from {', '.join(KINDS)}")
    if num_requests < 0 or output_len < 1 or pool_size < 1 or frames < 1:
        raise ValueError("num_requests >= 0, output_len >= 1, pool_size >= 1 and frames >= 1 are required")
    rng = np.random.default_rng(seed)
    prompts = [random_prompt(rng, i, prompt_words) for i in range(num_requests)]
    if kind == "text":
        return [RequestSpec(p, (), None, output_len) for p in prompts]
    if kind == "videos":
        specs = []
        for prompt in prompts:
            width, height = jittered_size(rng, image_size, size_jitter)
            pixels = [rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8) for _ in range(frames)]
            video = tuple(encode_image(p, image_format) for p in pixels)
            mp4 = None
            if video_format == "mp4":
                from clients.messages import encode_mp4

                mp4 = encode_mp4(pixels, fps=VIDEO_SAMPLE_FPS)
            specs.append(RequestSpec(prompt, (), video, output_len, video_mp4=mp4))
        return specs
    count = num_requests if kind == "unique-images" else min(pool_size, num_requests)
    images = _distinct_images(rng, count, image_size, size_jitter, image_format)
    return [RequestSpec(p, (images[i % len(images)],), None, output_len) for i, p in enumerate(prompts)]


def _distinct_images(
    rng: np.random.Generator, count: int, size: tuple[int, int], jitter: float, image_format: str
) -> list[bytes]:
    images: list[bytes] = []
    seen: set[bytes] = set()
    while len(images) < count:
        width, height = jittered_size(rng, size, jitter)
        data = noise_image(rng, width, height, image_format)
        digest = hashlib.sha256(data).digest()
        if digest not in seen:  # never happens with noise, but "unique" is a promise
            seen.add(digest)
            images.append(data)
    return images


def image_dimensions(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as image:
        return image.size


def describe(specs: Sequence[RequestSpec]) -> dict[str, Any]:
    """A small description of a dataset for result files (counts and byte totals, never the bytes)."""
    return {
        "requests": len(specs),
        "images": sum(len(s.images) for s in specs),
        "videos": sum(s.video is not None for s in specs),
        "distinct_images": len({hashlib.sha256(i).digest() for s in specs for i in s.images}),
        "media_bytes": sum(s.media_bytes for s in specs),
        "max_tokens_total": sum(s.max_tokens for s in specs),
    }
