"""The media loader's byte stage: a data URL is base64-decoded and hashed in one step, on the event loop when small
and on the executor (one hand-off) when large; identical content gets the same id whichever way it arrived."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from server.app import media_limits
from server.config import Settings
from server.media.fetch import Fetcher, FetchPolicy, make_client
from server.media.loader import ImageRef, MediaLoader
from server.media.metrics import MediaMetrics
from server.media.pool import DecodePool, PoolConfig
from server.vision import VisionSpec
from tests.media_factory import data_url, image_bytes

LIMIT_S = 120


class CountingExecutor(ThreadPoolExecutor):
    """A real thread pool that counts the jobs handed to it."""

    def __init__(self) -> None:
        super().__init__(2)
        self.jobs = 0

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        self.jobs += 1
        return super().submit(fn, *args, **kwargs)


@pytest.fixture
async def loader() -> AsyncIterator[tuple[MediaLoader, CountingExecutor, MediaMetrics]]:
    metrics = MediaMetrics(CollectorRegistry())
    pool = DecodePool(PoolConfig(workers=1), metrics)
    executor = CountingExecutor()
    client = make_client()
    limits = media_limits(Settings(media_max_image_bytes=8 * 1024 * 1024))
    yield MediaLoader(limits, Fetcher(FetchPolicy(), client), executor, pool, metrics), executor, metrics
    await client.aclose()
    await pool.close()
    executor.shutdown()


def stage_count(metrics: MediaMetrics, stage: str) -> float:
    return sum(
        s.value
        for m in metrics.stage_seconds.collect()
        for s in m.samples
        if s.name.endswith("_count") and s.labels.get("stage") == stage
    )


@pytest.mark.timeout(LIMIT_S)
async def test_small_data_url_stays_on_the_loop_large_one_takes_one_hand_off(
    loader: tuple[MediaLoader, CountingExecutor, MediaMetrics],
) -> None:
    media, executor, metrics = loader
    spec = VisionSpec(image_max_pixels=256 * 256)
    small = await media.image(ImageRef(data_url(image_bytes(64, 48)), "messages[0].content[0]"), spec)
    assert executor.jobs == 0 and small.image.shape[1] > 0
    large_png = image_bytes(512, 512, seed=1)  # noise: ~770 KB as PNG, ~1 MB of base64
    assert len(large_png) > 300 * 1024
    large = await media.image(ImageRef(data_url(large_png), "messages[0].content[1]"), spec)
    assert executor.jobs == 1  # decoded and hashed in a single job
    assert large.image.shape == (256, 256, 3)
    assert stage_count(metrics, "base64") == 2 and stage_count(metrics, "hash") == 2
    again = await media.image(ImageRef(data_url(large_png), "messages[1].content[0]"), spec)
    assert again.uuid == large.uuid and again.param == "messages[1].content[0]"  # the same content, the same id


@pytest.mark.timeout(LIMIT_S)
async def test_bad_base64_is_the_part_s_error(loader: tuple[MediaLoader, CountingExecutor, MediaMetrics]) -> None:
    from server.errors import MediaDecodeError

    media, _, _ = loader
    for url in ("data:image/png;base64,QUJD====", "data:image/png;base64," + "A" * (400 * 1024) + "!"):
        with pytest.raises(MediaDecodeError) as info:
            await media.image(ImageRef(url, "messages[0].content[0]"), VisionSpec())
        assert info.value.param == "messages[0].content[0]"
