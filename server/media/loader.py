"""``MediaLoader``: turn a request's media references into items at their exact Qwen grid.

Bytes are fetched (or base64-decoded) and hashed here, on the event loop when small and in one executor job when large;
they are decoded only by the sandboxed worker processes of ``media.pool``, which read the header first. Every size is
decided here from that header: source limits (pixels, frame size, duration, frame rate, frame count), the frame indices,
and the target grid (the processor's default budget or the part's own controls, within the server's ceilings). Workers
decode straight to that grid, so the engine's processor keeps images and videos as they are (``do_resize`` off) and the
API process never holds a full-size frame. A frame list's frames are each header-checked and decoded to the list's final
grid one by one.

The caches (fetched bytes by URL, prepared items by content and budget) are scoped by ``cache_scope`` (one scope per
API key), so one tenant can neither hit nor time another tenant's entries.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import Awaitable, Callable, Hashable, Iterable
from concurrent.futures import Executor
from dataclasses import dataclass, field, replace
from typing import TypeVar

import blake3
import numpy as np
from prometheus_client import CollectorRegistry

from server.errors import MediaError, MediaTooLargeError, MediaUnsupportedError
from server.media.budget import (
    Ceilings,
    ImageControls,
    VideoControls,
    image_size,
    sample_indices,
    video_frame_size,
    visual_tokens,
)
from server.media.cache import ByteLRU, SingleFlight, cache_scope
from server.media.decode import FRAME_FACTOR, ImageHeader, VideoHeader
from server.media.fetch import Fetcher, decode_data_url
from server.media.limits import MediaLimits
from server.media.metrics import MediaMetrics
from server.media.pool import DecodePool, ImagePlan, VideoPlan
from server.vision import VideoInput, VisionSpec

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
    image: np.ndarray  # RGB, uint8 [H, W, 3], at its exact grid
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

    @property
    def items(self) -> list[tuple[str, int]]:
        return [(i.param, i.tokens) for i in self.images] + [(v.param, v.tokens) for v in self.videos]


def _uuid(key: Hashable) -> str:
    return hashlib.sha256(repr(key).encode()).hexdigest()[:32]


def _digest(data: bytes) -> str:
    # BLAKE3 (vLLM's own multimodal hash): 0.12 ms per MB here, against 0.41 for SHA-256 with SHA-NI and 0.80 for
    # BLAKE2b (benchmarks/loop_cpu.py's 1536² JPEG); it releases the GIL on large inputs.
    return blake3.blake3(data).hexdigest()


# Work on fewer bytes than this (base64 decoding and hashing ~10 µs per 64 KiB) runs on the event loop: a thread
# hand-off costs more CPU than the work. Larger items go to the executor, so the loop never stalls on a big one.
_INLINE_BELOW = 256 * 1024


class MediaLoader:
    def __init__(
        self,
        limits: MediaLimits,
        fetcher: Fetcher,
        executor: Executor,
        pool: DecodePool,
        metrics: MediaMetrics | None = None,
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
        self.pool = pool
        self._fetched: ByteLRU[tuple[bytes, str]] = ByteLRU(limits.fetch_cache_bytes, ttl_s=limits.fetch_cache_ttl_s)
        self._prepared: ByteLRU[PreparedImage | PreparedVideo] = ByteLRU(limits.prepared_cache_bytes)
        self._flights = SingleFlight()

    async def load(self, images: list[ImageRef], videos: list[VideoRef], spec: VisionSpec) -> PreparedMedia:
        """Fetch and prepare one request's media concurrently (at most ``fetches_per_request`` fetches at once)."""
        slots = asyncio.Semaphore(self.limits.fetches_per_request)
        got_images = gather_all(self.image(ref, spec, slots) for ref in images)
        got_videos = gather_all(self.video(ref, spec, slots) for ref in videos)
        try:
            async with asyncio.TaskGroup() as group:
                image_task = group.create_task(got_images)
                video_task = group.create_task(got_videos)
        except BaseExceptionGroup as group_error:
            raise _first_leaf(group_error) from None
        return PreparedMedia(images=image_task.result(), videos=video_task.result())

    async def _off_loop(self, size: int, fn: Callable[[], T]) -> T:
        if size < _INLINE_BELOW:
            return fn()
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn)

    def _timed(self, kind: str, stage: str, fn: Callable[[], T]) -> T:
        with self.metrics.stage_seconds.labels(kind, stage).time():
            return fn()

    def _hash(self, kind: str, data: bytes) -> tuple[bytes, str]:
        return data, self._timed(kind, "hash", lambda: _digest(data))

    async def _bytes(
        self, url: str, *, kind: str, max_bytes: int, param: str, slots: asyncio.Semaphore | None
    ) -> tuple[bytes, str]:
        """An item's bytes and their digest. A data URL is decoded and hashed in one go (one thread hand-off at most);
        fetched bytes are hashed once and remembered with their digest."""
        fetch = self._fetcher.fetch
        timeout = self.limits.fetch_timeout_s
        if url[:5].lower() == "data:":  # the bytes are in the request itself: nothing to remember

            def decode() -> tuple[bytes, str]:
                decoded = self._timed(kind, "base64", lambda: decode_data_url(url, max_bytes=max_bytes, param=param))
                return self._hash(kind, decoded)

            return await self._off_loop(len(url), decode)
        key = (cache_scope.get(), url, max_bytes)
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
        hashed = await self._off_loop(len(data), lambda: self._hash(kind, data))
        self._fetched.put(key, hashed, len(data))
        return hashed

    async def image(self, ref: ImageRef, spec: VisionSpec, slots: asyncio.Semaphore | None = None) -> PreparedImage:
        data, digest = await self._bytes(
            ref.url, kind="image", max_bytes=self.limits.max_image_bytes, param=ref.param, slots=slots
        )
        key = ("image", cache_scope.get(), digest, ref.controls, spec, self.ceilings)
        hit = self._prepared.get(key)
        self.metrics.cache.labels("prepared", "miss" if hit is None else "hit").inc()
        if isinstance(hit, PreparedImage):
            return replace(hit, param=ref.param)

        def plan(header: ImageHeader) -> ImagePlan:
            self._check_source(header, ref.param)
            return ImagePlan(*image_size(header.height, header.width, ref.controls, spec, self.ceilings, ref.param))

        async def prepare() -> PreparedImage:
            image = await self._decode_image(data, ref.param, plan)
            tokens = visual_tokens(1, image.shape[0], image.shape[1], spec)
            prepared = PreparedImage(image=image, tokens=tokens, param=ref.param, uuid=_uuid(key))
            self._prepared.put(key, prepared, image.nbytes)
            return prepared

        # Identical items in flight (several requests, or one request repeating an image) are prepared once.
        try:
            shared, _ = await self._flights.run(("prepare", key), prepare)
        except MediaError as exc:
            raise _for_part(exc, ref.param) from exc
        return replace(shared, param=ref.param)

    async def _decode_image(self, data: bytes, param: str, plan: Callable[[ImageHeader], ImagePlan]) -> np.ndarray:
        return await self.pool.image(data, param=param, max_source_pixels=self.limits.max_source_pixels, choose=plan)

    def _check_source(self, header: ImageHeader, param: str) -> None:
        if header.width * header.height > self.limits.max_source_pixels:
            raise MediaTooLargeError(
                f"{param} is {header.width}x{header.height} pixels; the limit is {self.limits.max_source_pixels} "
                "pixels",
                param=param,
            )

    async def video(self, ref: VideoRef, spec: VisionSpec, slots: asyncio.Semaphore | None = None) -> PreparedVideo:
        settings = (ref.controls, ref.sample_fps, self.limits.video_fps, self.limits.max_video_frames, spec)
        if isinstance(ref.url, tuple):
            hashed = await self._frame_bytes(ref.url, ref, slots)
            blobs = [data for data, _ in hashed]
            key: Hashable = ("frames", cache_scope.get(), tuple(d for _, d in hashed), *settings, self.ceilings)
        else:
            data, digest = await self._bytes(
                ref.url, kind="video", max_bytes=self.limits.max_video_bytes, param=ref.param, slots=slots
            )
            key = ("video", cache_scope.get(), digest, *settings, self.ceilings)
        hit = self._prepared.get(key)
        self.metrics.cache.labels("prepared", "miss" if hit is None else "hit").inc()
        if isinstance(hit, PreparedVideo):
            return replace(hit, param=ref.param)
        if isinstance(ref.url, tuple):
            prepared = await self._frame_list(blobs, ref, spec, _uuid(key))
        else:
            prepared = await self._video_file(data, ref, spec, _uuid(key))
        self._prepared.put(key, prepared, prepared.video.frames.nbytes)
        return prepared

    def _frame_size(self, frames: int, height: int, width: int, ref: VideoRef, spec: VisionSpec) -> tuple[int, int]:
        return video_frame_size(frames, height, width, ref.controls, spec, self.ceilings, ref.param)

    async def _video_file(self, data: bytes, ref: VideoRef, spec: VisionSpec, uuid: str) -> PreparedVideo:
        c = ref.controls
        max_frames = min(c.max_frames or self.limits.max_video_frames, self.limits.max_video_frames)

        def plan(header: VideoHeader) -> VideoPlan:
            self._check_video_header(header, ref.param)
            fps = c.fps if c.fps is not None else (None if c.nframes is not None else self.limits.video_fps)
            indices = sample_indices(
                header.frames, header.fps, fps=fps, nframes=c.nframes, min_frames=c.min_frames, max_frames=max_frames
            )
            height, width = self._frame_size(len(indices), header.height, header.width, ref, spec)
            # A lying frame count cannot make the worker decode forever: a bound on frames decoded in all.
            budget = 2 * max(header.frames, len(indices)) + 256
            return VideoPlan(indices=indices, height=height, width=width, max_decoded_frames=budget)

        header, chosen, frames = await self.pool.video(data, param=ref.param, choose=plan)
        video = VideoInput(
            frames=frames,
            fps=header.fps,
            total_num_frames=header.frames,
            frames_indices=chosen.indices,
            duration=header.duration or header.frames / header.fps,
        )
        tokens = visual_tokens(len(chosen.indices), chosen.height, chosen.width, spec)
        return PreparedVideo(video=video, tokens=tokens, param=ref.param, uuid=uuid)

    def _check_video_header(self, header: VideoHeader, param: str) -> None:
        limits = self.limits
        if header.width * header.height > limits.max_video_frame_pixels:
            raise MediaTooLargeError(
                f"{param} has {header.width}x{header.height} frames; the limit is {limits.max_video_frame_pixels} "
                "pixels per frame",
                param=param,
            )
        if header.fps > limits.max_video_source_fps:
            raise MediaUnsupportedError(
                f"{param} declares {header.fps:g} frames per second; the limit is {limits.max_video_source_fps:g}",
                param=param,
            )
        duration = header.duration or header.frames / header.fps
        if duration > limits.max_video_duration_s:
            raise MediaTooLargeError(
                f"{param} lasts {duration:.1f} s; the limit is {limits.max_video_duration_s:g} s", param=param
            )
        if header.frames > limits.max_video_source_frames:
            raise MediaTooLargeError(
                f"{param} has {header.frames} frames; the limit is {limits.max_video_source_frames}", param=param
            )

    async def _frame_list(self, blobs: list[bytes], ref: VideoRef, spec: VisionSpec, uuid: str) -> PreparedVideo:
        """Frame 0's header sets the list's grid (as before: the first frame's size); every frame is then
        header-checked and decoded straight to that grid, then padded to an even count."""
        count = len(blobs) + len(blobs) % FRAME_FACTOR
        grid: list[tuple[int, int]] = []

        def first(header: ImageHeader) -> ImagePlan:
            self._check_source(header, f"{ref.param}[0]")
            grid.append(self._frame_size(count, header.height, header.width, ref, spec))
            return ImagePlan(*grid[0])

        def frame_plan(index: int) -> Callable[[ImageHeader], ImagePlan]:
            def plan(header: ImageHeader) -> ImagePlan:
                self._check_source(header, f"{ref.param}[{index}]")
                return ImagePlan(*grid[0])

            return plan

        head = await self._decode_image(blobs[0], f"{ref.param}[0]", first)
        rest = await gather_all(
            self._decode_image(blob, f"{ref.param}[{i}]", frame_plan(i)) for i, blob in enumerate(blobs[1:], 1)
        )
        height, width = grid[0]
        frames = np.empty((count, height, width, 3), dtype=np.uint8)
        for i, image in enumerate([head, *rest]):
            frames[i] = np.asarray(image)
        if count > len(blobs):
            frames[-1] = frames[-2]
        fps = ref.sample_fps or self.limits.video_fps
        video = VideoInput(
            frames=frames, fps=fps, total_num_frames=count, frames_indices=tuple(range(count)), duration=count / fps
        )
        return PreparedVideo(video=video, tokens=visual_tokens(count, height, width, spec), param=ref.param, uuid=uuid)

    async def _frame_bytes(
        self, urls: tuple[str, ...], ref: VideoRef, slots: asyncio.Semaphore | None
    ) -> list[tuple[bytes, str]]:
        if len(urls) > self.limits.max_video_frames:
            raise MediaTooLargeError(
                f"{ref.param} has {len(urls)} frames; the limit is {self.limits.max_video_frames}", param=ref.param
            )
        if not urls:
            raise MediaTooLargeError(f"{ref.param} has no frames", param=ref.param)
        max_bytes = self.limits.max_image_bytes
        return await gather_all(
            self._bytes(url, kind="image", max_bytes=max_bytes, param=f"{ref.param}[{i}]", slots=slots)
            for i, url in enumerate(urls)
        )


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
