"""``MediaLoader``: turn a request's media references into decoded images and sampled videos, off the event loop."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterable
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import TypeVar

from PIL import Image

from server.config import MediaLimits
from server.engine.base import VideoInput
from server.errors import MediaTooLargeError
from server.media.decode import decode_image, decode_video, frames_to_video
from server.media.fetch import Fetcher

T = TypeVar("T")


@dataclass(frozen=True)
class ImageRef:
    url: str
    param: str  # where the part sits in the request, e.g. "messages[0].content[1].image_url"


@dataclass(frozen=True)
class VideoRef:
    """A video file URL, or a list of frame image URLs."""

    url: str | tuple[str, ...]
    param: str
    fps: float | None = None  # sampling rate for a file; the frames' rate for a frame list


class MediaLoader:
    def __init__(self, limits: MediaLimits, fetcher: Fetcher, executor: Executor) -> None:
        self.limits = limits
        self._fetcher = fetcher
        self._executor = executor

    async def load(self, images: list[ImageRef], videos: list[VideoRef]) -> tuple[list[Image.Image], list[VideoInput]]:
        """Fetch and decode one request's media concurrently (at most ``fetches_per_request`` fetches at once)."""
        slots = asyncio.Semaphore(self.limits.fetches_per_request)
        tasks = [self.image(ref, slots) for ref in images] + [self.video(ref, slots) for ref in videos]
        loaded = await gather_all(tasks)
        got_images = [item for item in loaded[: len(images)] if isinstance(item, Image.Image)]
        got_videos = [item for item in loaded[len(images) :] if isinstance(item, VideoInput)]
        return got_images, got_videos

    async def _off_loop(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn)

    async def _bytes(self, url: str, *, max_bytes: int, param: str, slots: asyncio.Semaphore | None) -> bytes:
        async with slots if slots is not None else contextlib.nullcontext():
            return await self._fetcher.fetch(
                url, max_bytes=max_bytes, timeout_s=self.limits.fetch_timeout_s, param=param
            )

    async def image(self, ref: ImageRef, slots: asyncio.Semaphore | None = None) -> Image.Image:
        data = await self._bytes(ref.url, max_bytes=self.limits.max_image_bytes, param=ref.param, slots=slots)
        return await self._off_loop(lambda: decode_image(data, param=ref.param))

    async def video(self, ref: VideoRef, slots: asyncio.Semaphore | None = None) -> VideoInput:
        if isinstance(ref.url, tuple):
            return await self._frame_list(ref.url, ref, slots)
        data = await self._bytes(ref.url, max_bytes=self.limits.max_video_bytes, param=ref.param, slots=slots)
        fps = ref.fps or self.limits.video_fps
        return await self._off_loop(
            lambda: decode_video(data, fps=fps, max_frames=self.limits.max_video_frames, param=ref.param)
        )

    async def _frame_list(self, urls: tuple[str, ...], ref: VideoRef, slots: asyncio.Semaphore | None) -> VideoInput:
        if len(urls) > self.limits.max_video_frames:
            raise MediaTooLargeError(
                f"{ref.param} has {len(urls)} frames; the limit is {self.limits.max_video_frames}", param=ref.param
            )
        frames = await gather_all(self.image(ImageRef(u, f"{ref.param}[{i}]"), slots) for i, u in enumerate(urls))
        fps = ref.fps or self.limits.video_fps
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
