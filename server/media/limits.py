"""What the media stage may do for one request: a media value type, built from the settings by the composition root."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MediaLimits:
    """What the media stage may do for one request."""

    max_image_bytes: int
    max_video_bytes: int
    fetch_timeout_s: float
    max_video_frames: int
    video_fps: float
    max_images_per_request: int
    max_videos_per_request: int
    decode_threads: int
    fetches_per_request: int
    max_source_pixels: int
    max_video_duration_s: float
    image_max_pixels: int
    video_total_pixels: int
    prepared_cache_bytes: int = 128 * 1024 * 1024
    fetch_cache_bytes: int = 64 * 1024 * 1024
    fetch_cache_ttl_s: float = 300.0
    max_video_frame_pixels: int = 7680 * 4320
    max_video_source_fps: float = 480.0
    max_video_source_frames: int = 500_000
