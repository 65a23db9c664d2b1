"""``MediaLoader``: turn a request's media references into items at their exact Qwen grid, off the event loop.

Images are always resized here (to the processor's default budget, or the part's own controls), so the engine's
processor keeps them as they are. Videos are resized here when any video of the request carries pixel controls;
otherwise the processor's own video math applies, and we only predict its result.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import TypeVar

from PIL import Image

from server.config import MediaLimits
from server.engine.base import VideoInput, VisionSpec
from server.errors import MediaTooLargeError
from server.media.budget import (
    Ceilings,
    ImageControls,
    VideoControls,
    default_video_frame_size,
    image_size,
    video_frame_size,
    visual_tokens,
)
from server.media.decode import decode_image, frames_to_video, read_video, resize_frames, sample_indices
from server.media.fetch import Fetcher

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


@dataclass(frozen=True)
class PreparedVideo:
    video: VideoInput
    tokens: int
    param: str


@dataclass(frozen=True)
class PreparedMedia:
    images: list[PreparedImage]
    videos: list[PreparedVideo]
    videos_resized: bool

    @property
    def items(self) -> list[tuple[str, int]]:
        return [(i.param, i.tokens) for i in self.images] + [(v.param, v.tokens) for v in self.videos]


class MediaLoader:
    def __init__(self, limits: MediaLimits, fetcher: Fetcher, executor: Executor) -> None:
        self.limits = limits
        self.ceilings = Ceilings(
            image_max_pixels=limits.image_max_pixels,
            video_total_pixels=limits.video_total_pixels,
            video_max_frames=limits.max_video_frames,
        )
        self._fetcher = fetcher
        self._executor = executor

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

    async def _off_loop(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn)

    async def _bytes(self, url: str, *, max_bytes: int, param: str, slots: asyncio.Semaphore | None) -> bytes:
        async with slots if slots is not None else contextlib.nullcontext():
            return await self._fetcher.fetch(
                url, max_bytes=max_bytes, timeout_s=self.limits.fetch_timeout_s, param=param
            )

    async def image(self, ref: ImageRef, spec: VisionSpec, slots: asyncio.Semaphore | None = None) -> PreparedImage:
        data = await self._bytes(ref.url, max_bytes=self.limits.max_image_bytes, param=ref.param, slots=slots)

        def size_for(height: int, width: int) -> tuple[int, int]:
            return image_size(height, width, ref.controls, spec, self.ceilings, ref.param)

        image = await self._off_loop(
            lambda: decode_image(
                data, param=ref.param, max_source_pixels=self.limits.max_source_pixels, size_for=size_for
            )
        )
        return PreparedImage(image=image, tokens=visual_tokens(1, image.height, image.width, spec), param=ref.param)

    async def video(
        self, ref: VideoRef, spec: VisionSpec, resize: bool, slots: asyncio.Semaphore | None = None
    ) -> PreparedVideo:
        if isinstance(ref.url, tuple):
            raw = await self._frame_list(ref.url, ref, slots)
        else:
            data = await self._bytes(ref.url, max_bytes=self.limits.max_video_bytes, param=ref.param, slots=slots)
            raw = await self._off_loop(lambda: self._read(data, ref))
        return await self._off_loop(lambda: self._fit(raw, ref, spec, resize))

    def _read(self, data: bytes, ref: VideoRef) -> VideoInput:
        c = ref.controls
        max_frames = min(c.max_frames or self.limits.max_video_frames, self.limits.max_video_frames)

        def sample(total: int, source_fps: float) -> tuple[int, ...]:
            fps = c.fps if c.fps is not None else (None if c.nframes is not None else self.limits.video_fps)
            return sample_indices(
                total, source_fps, fps=fps, nframes=c.nframes, min_frames=c.min_frames, max_frames=max_frames
            )

        return read_video(data, param=ref.param, max_duration_s=self.limits.max_video_duration_s, sample=sample)

    def _fit(self, video: VideoInput, ref: VideoRef, spec: VisionSpec, resize: bool) -> PreparedVideo:
        frames, height, width = video.frames.shape[:3]
        if ref.controls.sets_pixels:
            size = video_frame_size(frames, height, width, ref.controls, spec, self.ceilings, ref.param)
        else:
            size = default_video_frame_size(frames, height, width, spec, ref.param)
        if resize:
            video = resize_frames(video, *size)
        return PreparedVideo(video=video, tokens=visual_tokens(frames, size[0], size[1], spec), param=ref.param)

    async def _frame_list(self, urls: tuple[str, ...], ref: VideoRef, slots: asyncio.Semaphore | None) -> VideoInput:
        if len(urls) > self.limits.max_video_frames:
            raise MediaTooLargeError(
                f"{ref.param} has {len(urls)} frames; the limit is {self.limits.max_video_frames}", param=ref.param
            )

        async def frame(index: int, url: str) -> Image.Image:
            param = f"{ref.param}[{index}]"
            data = await self._bytes(url, max_bytes=self.limits.max_image_bytes, param=param, slots=slots)
            return await self._off_loop(
                lambda: decode_image(data, param=param, max_source_pixels=self.limits.max_source_pixels)
            )

        frames = await gather_all(frame(i, u) for i, u in enumerate(urls))
        fps = ref.sample_fps or self.limits.video_fps
        return await self._off_loop(lambda: frames_to_video(frames, sample_fps=fps, param=ref.param))


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
