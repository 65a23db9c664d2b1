"""``MediaLoader``: turn a request's media references into items at their exact Qwen grid, off the event loop.

Images are always resized here (to the processor's default budget, or the part's own controls), so the engine's
processor keeps them as they are. Videos are resized here when any video of the request carries pixel controls;
otherwise the processor's own video math applies, and we only predict its result.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import Awaitable, Callable, Hashable, Iterable
from concurrent.futures import Executor
from dataclasses import dataclass, field, replace
from typing import TypeVar

from PIL import Image
from prometheus_client import CollectorRegistry

from server.config import MediaLimits
from server.engine.base import VideoInput, VisionSpec
from server.errors import MediaError, MediaTooLargeError
from server.media.budget import (
    Ceilings,
    ImageControls,
    VideoControls,
    default_video_frame_size,
    image_size,
    video_frame_size,
    visual_tokens,
)
from server.media.cache import ByteLRU, SingleFlight
from server.media.decode import decode_image, frames_to_video, read_video, resize_frames, sample_indices
from server.media.fetch import Fetcher, decode_data_url
from server.media.metrics import MediaMetrics

T = TypeVar("T")


@dataclass(frozen=True)
class ImageRef:
    url: str
    param: str  # where the part sits in the request, e.g. "messages[0].content[1].image_url"
    controls: ImageControls = field(default_factory=ImageControls)


@dataclass(frozen=True)
class VideoRef:
    """A video file URL, or a list of frame image URLs."""

    url: str | tuple[str, ...]
    param: str
    controls: VideoControls = field(default_factory=VideoControls)
    sample_fps: float | None = None  # the rate of a frame list


@dataclass(frozen=True)
class PreparedImage:
    image: Image.Image
    tokens: int
    param: str
    uuid: str  # content + budget: the same for every request that would prepare the same pixels


@dataclass(frozen=True)
class PreparedVideo:
    video: VideoInput
    tokens: int
    param: str
    uuid: str


@dataclass(frozen=True)
class PreparedMedia:
    images: list[PreparedImage]
    videos: list[PreparedVideo]
    videos_resized: bool

    @property
    def items(self) -> list[tuple[str, int]]:
        return [(i.param, i.tokens) for i in self.images] + [(v.param, v.tokens) for v in self.videos]


def _uuid(key: Hashable) -> str:
    return hashlib.sha256(repr(key).encode()).hexdigest()[:32]


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()  # hashlib releases the GIL on large inputs


class MediaLoader:
    def __init__(
        self, limits: MediaLimits, fetcher: Fetcher, executor: Executor, metrics: MediaMetrics | None = None
    ) -> None:
        self.limits = limits
        self.ceilings = Ceilings(
            image_max_pixels=limits.image_max_pixels,
            video_total_pixels=limits.video_total_pixels,
            video_max_frames=limits.max_video_frames,
        )
        self.metrics = metrics or MediaMetrics(CollectorRegistry())
        self._fetcher = fetcher
        self._executor = executor
        self._fetched: ByteLRU[bytes] = ByteLRU(limits.fetch_cache_bytes, ttl_s=limits.fetch_cache_ttl_s)
        self._prepared: ByteLRU[PreparedImage | PreparedVideo] = ByteLRU(limits.prepared_cache_bytes)
        self._flights = SingleFlight()

    async def load(self, images: list[ImageRef], videos: list[VideoRef], spec: VisionSpec) -> PreparedMedia:
        """Fetch and prepare one request's media concurrently (at most ``fetches_per_request`` fetches at once)."""
        slots = asyncio.Semaphore(self.limits.fetches_per_request)
        resize_videos = any(ref.controls.sets_pixels for ref in videos)
        got_images = gather_all(self.image(ref, spec, slots) for ref in images)
        got_videos = gather_all(self.video(ref, spec, resize_videos, slots) for ref in videos)
        try:
            async with asyncio.TaskGroup() as group:
                image_task = group.create_task(got_images)
                video_task = group.create_task(got_videos)
        except BaseExceptionGroup as group_error:
            raise _first_leaf(group_error) from None
        return PreparedMedia(images=image_task.result(), videos=video_task.result(), videos_resized=resize_videos)

    async def _off_loop(self, kind: str, stage: str, fn: Callable[[], T]) -> T:
        def timed() -> T:
            with self.metrics.stage_seconds.labels(kind, stage).time():
                return fn()

        return await asyncio.get_running_loop().run_in_executor(self._executor, timed)

    async def _bytes(
        self, url: str, *, kind: str, max_bytes: int, param: str, slots: asyncio.Semaphore | None
    ) -> bytes:
        fetch = self._fetcher.fetch
        timeout = self.limits.fetch_timeout_s
        if url[:5].lower() == "data:":  # the bytes are in the request itself: decode off the loop, nothing to remember
            return await self._off_loop(kind, "base64", lambda: decode_data_url(url, max_bytes=max_bytes, param=param))
        key = (url, max_bytes)
        cached = self._fetched.get(key)
        self.metrics.cache.labels("bytes", "miss" if cached is None else "hit").inc()
        if cached is not None:
            return cached

        async def work() -> bytes:
            async with slots if slots is not None else contextlib.nullcontext():
                with self.metrics.fetch_seconds.labels(url.split(":", 1)[0].lower()).time():
                    return await fetch(url, max_bytes=max_bytes, timeout_s=timeout, param=param)

        try:
            data, _shared = await self._flights.run(key, work)
        except MediaError as exc:
            raise _for_part(exc, param) from exc
        self.metrics.fetch_bytes.labels(kind).observe(len(data))
        self._fetched.put(key, data, len(data))
        return data

    async def image(self, ref: ImageRef, spec: VisionSpec, slots: asyncio.Semaphore | None = None) -> PreparedImage:
        data = await self._bytes(
            ref.url, kind="image", max_bytes=self.limits.max_image_bytes, param=ref.param, slots=slots
        )
        digest = await self._off_loop("image", "hash", lambda: _digest(data))
        key = ("image", digest, ref.controls, spec, self.ceilings)
        hit = self._prepared.get(key)
        self.metrics.cache.labels("prepared", "miss" if hit is None else "hit").inc()
        if isinstance(hit, PreparedImage):
            return replace(hit, param=ref.param)

        def size_for(height: int, width: int) -> tuple[int, int]:
            return image_size(height, width, ref.controls, spec, self.ceilings, ref.param)

        def on_stage(stage: str, seconds: float) -> None:
            self.metrics.stage_seconds.labels("image", stage).observe(seconds)

        async def prepare() -> PreparedImage:
            image = await asyncio.get_running_loop().run_in_executor(
                self._executor,
                lambda: decode_image(
                    data,
                    param=ref.param,
                    max_source_pixels=self.limits.max_source_pixels,
                    size_for=size_for,
                    on_stage=on_stage,
                ),
            )
            tokens = visual_tokens(1, image.height, image.width, spec)
            prepared = PreparedImage(image=image, tokens=tokens, param=ref.param, uuid=_uuid(key))
            self._prepared.put(key, prepared, image.width * image.height * 3)
            return prepared

        # Identical items in flight (several requests, or one request repeating an image) are prepared once.
        try:
            shared, _ = await self._flights.run(("prepare", key), prepare)
        except MediaError as exc:
            raise _for_part(exc, ref.param) from exc
        return replace(shared, param=ref.param)

    async def video(
        self, ref: VideoRef, spec: VisionSpec, resize: bool, slots: asyncio.Semaphore | None = None
    ) -> PreparedVideo:
        settings = (ref.controls, ref.sample_fps, self.limits.video_fps, self.limits.max_video_frames, resize, spec)
        if isinstance(ref.url, tuple):
            frames = await self._frames(ref.url, ref, slots)
            key: Hashable = ("frames", tuple(d for d, _ in frames), *settings, self.ceilings)
        else:
            data = await self._bytes(
                ref.url, kind="video", max_bytes=self.limits.max_video_bytes, param=ref.param, slots=slots
            )
            key = ("video", await self._off_loop("video", "hash", lambda: _digest(data)), *settings, self.ceilings)
        hit = self._prepared.get(key)
        self.metrics.cache.labels("prepared", "miss" if hit is None else "hit").inc()
        if isinstance(hit, PreparedVideo):
            return replace(hit, param=ref.param)
        if isinstance(ref.url, tuple):
            fps = ref.sample_fps or self.limits.video_fps
            raw = await self._off_loop(
                "video", "decode", lambda: frames_to_video([im for _, im in frames], sample_fps=fps, param=ref.param)
            )
        else:
            raw = await self._off_loop("video", "decode", lambda: self._read(data, ref))
        prepared = await self._off_loop("video", "resize", lambda: self._fit(raw, ref, spec, resize, _uuid(key)))
        self._prepared.put(key, prepared, prepared.video.frames.nbytes)
        return prepared

    def _read(self, data: bytes, ref: VideoRef) -> VideoInput:
        c = ref.controls
        max_frames = min(c.max_frames or self.limits.max_video_frames, self.limits.max_video_frames)

        def sample(total: int, source_fps: float) -> tuple[int, ...]:
            fps = c.fps if c.fps is not None else (None if c.nframes is not None else self.limits.video_fps)
            return sample_indices(
                total, source_fps, fps=fps, nframes=c.nframes, min_frames=c.min_frames, max_frames=max_frames
            )

        return read_video(data, param=ref.param, max_duration_s=self.limits.max_video_duration_s, sample=sample)

    def _fit(self, video: VideoInput, ref: VideoRef, spec: VisionSpec, resize: bool, uuid: str) -> PreparedVideo:
        frames, height, width = video.frames.shape[:3]
        if ref.controls.sets_pixels:
            size = video_frame_size(frames, height, width, ref.controls, spec, self.ceilings, ref.param)
        else:
            size = default_video_frame_size(frames, height, width, spec, ref.param)
        if resize:
            video = resize_frames(video, *size)
        return PreparedVideo(
            video=video, tokens=visual_tokens(frames, size[0], size[1], spec), param=ref.param, uuid=uuid
        )

    async def _frames(
        self, urls: tuple[str, ...], ref: VideoRef, slots: asyncio.Semaphore | None
    ) -> list[tuple[str, Image.Image]]:
        if len(urls) > self.limits.max_video_frames:
            raise MediaTooLargeError(
                f"{ref.param} has {len(urls)} frames; the limit is {self.limits.max_video_frames}", param=ref.param
            )

        async def frame(index: int, url: str) -> tuple[str, Image.Image]:
            param = f"{ref.param}[{index}]"
            data = await self._bytes(url, kind="image", max_bytes=self.limits.max_image_bytes, param=param, slots=slots)
            digest = await self._off_loop("image", "hash", lambda: _digest(data))
            image = await self._off_loop(
                "image",
                "decode",
                lambda: decode_image(data, param=param, max_source_pixels=self.limits.max_source_pixels),
            )
            return digest, image

        return await gather_all(frame(i, u) for i, u in enumerate(urls))


def _for_part(exc: MediaError, param: str) -> MediaError:
    """A fetch shared with another request failed: report it against this request's own part."""
    if exc.param == param or exc.param is None:
        return exc
    return type(exc)(exc.message.replace(exc.param, param), param=param, code=exc.code)


async def gather_all(awaitables: Iterable[Awaitable[T]]) -> list[T]:
    """Run concurrently; on the first failure cancel the rest and raise that failure itself (not an ExceptionGroup)."""
    tasks: list[asyncio.Task[T]] = []
    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(_as_coroutine(a)) for a in awaitables]
    except BaseExceptionGroup as group_error:
        raise _first_leaf(group_error) from None
    return [task.result() for task in tasks]


async def _as_coroutine(awaitable: Awaitable[T]) -> T:
    return await awaitable


def _first_leaf(error: BaseException) -> BaseException:
    while isinstance(error, BaseExceptionGroup):
        error = error.exceptions[0]
    return error
