"""Hostile media through the real server and engine: a clean 4xx (or a bounded 200), the same processes afterwards,
/health answering throughout, bounded memory in the API process, and no connection or file access by a decoder.

The corpus is generated here (see ``tests.hostile_media``): chunk-offset tables pointing outside the file, truncations,
a byte-flip fuzz loop over valid MP4 and WebM files, HLS/DASH/concat playlists naming a loopback listener and a canary
file under every MIME type, a frame list mixing one huge frame with tiny ones, a high-resolution mp4, and a
``gzip, gzip`` bomb from a loopback asset server.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from tests.api.conftest import AssetServer
from tests.e2e.conftest import LiveServer
from tests.hostile_media import (
    byte_flips,
    concat_script,
    dash_manifest,
    encode_video,
    hls_playlist,
    mp4_offsets_outside,
    mp4_with_playlist_body,
    solid_png,
    truncations,
)
from tests.media_factory import data_url

pytestmark = pytest.mark.e2e

MUTANTS_PER_CONTAINER = 150
ARTIFACTS = Path(__file__).resolve().parents[2] / "build" / "test-artifacts"
MEDIA_CODES = {"media_decode_failed", "media_unsupported", "media_too_large", "media_timeout", "media_fetch_failed"}


@dataclass
class Watch:
    """/health latency and the API process's RSS, sampled from threads while the corpus runs."""

    base_url: str
    health_max_s: float = 0.0
    health_failures: int = 0
    rss_start: int = 0
    rss_peak: int = 0
    stop: threading.Event = field(default_factory=threading.Event)

    def health(self) -> None:
        with httpx.Client(timeout=10) as client:
            while not self.stop.is_set():
                started = time.perf_counter()
                try:
                    ok = client.get(f"{self.base_url}/health").status_code == 200
                except httpx.HTTPError:
                    ok = False
                self.health_max_s = max(self.health_max_s, time.perf_counter() - started)
                self.health_failures += not ok
                self.stop.wait(0.05)

    def memory(self) -> None:
        me = psutil.Process()
        self.rss_start = self.rss_peak = me.memory_info().rss
        while not self.stop.is_set():
            self.rss_peak = max(self.rss_peak, me.memory_info().rss)
            self.stop.wait(0.02)


@contextlib.contextmanager
def watching(base_url: str) -> Iterator[Watch]:
    watch = Watch(base_url)
    threads = [threading.Thread(target=watch.health, daemon=True), threading.Thread(target=watch.memory, daemon=True)]
    for thread in threads:
        thread.start()
    try:
        yield watch
    finally:
        watch.stop.set()
        for thread in threads:
            thread.join(30)


class Listener:
    """A loopback TCP listener that counts connections: a decoder that dialled out would show up here."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.accepted += 1
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self.sock.close()


def video_part(data: bytes, mime: str = "video/mp4", **controls: Any) -> dict[str, Any]:
    return {"type": "video_url", "video_url": {"url": data_url(data, mime), **controls}}


def body(server: LiveServer, part: dict[str, Any]) -> bytes:
    """Serialized before the watch starts: the server runs in this process, and the test's own JSON work would
    otherwise compete with it for the GIL while /health is being timed."""
    message = {"role": "user", "content": [part, {"type": "text", "text": "?"}]}
    return json.dumps({"model": server.model, "messages": [message], "max_tokens": 1}).encode()


def ask(client: httpx.Client, server: LiveServer, content: bytes) -> tuple[int, str | None]:
    response = client.post(
        f"{server.base_url}/v1/chat/completions", content=content, headers={"content-type": "application/json"}
    )
    if response.status_code == 200:
        return 200, None
    error = response.json()["error"]
    assert "Traceback" not in error["message"] and "0x" not in error["message"], error
    return response.status_code, error["code"]


def engine_pids() -> set[int]:
    return {p.pid for p in psutil.Process().children(recursive=True) if p.name().startswith("VLLM::")}


def metric(text: str, name: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(f"{name}_total"))


def test_hostile_media_corpus(dense_server: LiveServer, tmp_path: Path) -> None:
    listener = Listener()
    canary = tmp_path / "canary.mp4"
    canary.write_bytes(encode_video(frames=8))  # a decoder that opened it would answer 200 with its frames
    assets = AssetServer()
    mp4, webm = encode_video(frames=12), encode_video("webm", "libvpx-vp9", frames=12)
    targets = (f"http://127.0.0.1:{listener.port}/seg.ts", f"file://{canary}")
    playlists = [
        hls_playlist(*targets),
        dash_manifest(targets[0]),
        dash_manifest(targets[1]),
        concat_script(str(canary)),
        mp4_with_playlist_body(hls_playlist(*targets)),
    ]
    mimes = ["video/mp4", "video/webm", "application/vnd.apple.mpegurl", "application/dash+xml", "image/png"]
    refused: list[dict[str, Any]] = [video_part(mp4_offsets_outside(mp4))]
    refused += [video_part(t) for t in truncations(mp4)]  # the index (moov) is at the end: nothing left to play
    for playlist in playlists:
        refused += [video_part(playlist, mime) for mime in mimes]
        refused.append({"type": "image_url", "image_url": {"url": data_url(playlist, "image/png")}})
    bomb_url = assets.add("/bomb.png", b"\x1f\x8b" + b"\x00" * 512, headers={"Content-Encoding": "gzip, gzip"})
    refused.append({"type": "image_url", "image_url": {"url": bomb_url}})
    tiny = data_url(solid_png(1, 1))
    bounded = [
        {"type": "video", "video": [data_url(solid_png(4096, 4096)), *[tiny] * 31], "sample_fps": 2},
        video_part(encode_video(frames=16, width=4096, height=4096, solid=True), nframes=16),
    ]
    # A cut WebM still plays up to the cut (Matroska needs no index): those may be a bounded 200, like the mutants.
    mutants = [video_part(t, "video/webm") for t in truncations(webm)]
    mutants += [video_part(m) for m in byte_flips(mp4, MUTANTS_PER_CONTAINER, seed=15)]
    mutants += [video_part(m, "video/webm") for m in byte_flips(webm, MUTANTS_PER_CONTAINER, seed=16)]
    refused_bodies, bounded_bodies, mutant_bodies = (
        [body(dense_server, p) for p in parts] for parts in (refused, bounded, mutants)
    )
    before = engine_pids()
    deaths_before = metric(httpx.get(f"{dense_server.base_url}/metrics").text, "qwen3vl_media_decode_worker_deaths")
    try:
        with (
            watching(dense_server.base_url) as watch,
            httpx.Client(timeout=120) as client,
            ThreadPoolExecutor(4) as pool,
        ):
            refusals = list(pool.map(lambda b: ask(client, dense_server, b), refused_bodies))
            bounded_answers = list(pool.map(lambda b: ask(client, dense_server, b), bounded_bodies))
            fuzz = list(pool.map(lambda b: ask(client, dense_server, b), mutant_bodies))
        header_status = client_header_status(dense_server.base_url)
    finally:
        listener.close()
        assets.close()
    metrics_text = httpx.get(f"{dense_server.base_url}/metrics").text
    deaths = metric(metrics_text, "qwen3vl_media_decode_worker_deaths") - deaths_before
    outcome = Counter(code or "200" for _, code in fuzz)
    summary = {
        "mutants": len(fuzz),
        "fuzz_outcomes": dict(outcome),
        "refused": dict(Counter(code for _, code in refusals)),
        "decoder_worker_deaths": deaths,
        "health_max_ms": round(watch.health_max_s * 1000, 1),
        "api_rss_peak_growth_mib": round((watch.rss_peak - watch.rss_start) / 2**20, 1),
        "oversized_header_status": header_status,
        "listener_connections": listener.accepted,
    }
    ARTIFACTS.mkdir(parents=True, exist_ok=True)  # the numbers of the last run, for the notes (git-ignored)
    (ARTIFACTS / "hostile-media.json").write_text(json.dumps(summary, indent=2))
    wrong = [(i, status, code) for i, (status, code) in enumerate(refusals) if status != 400 or code not in MEDIA_CODES]
    assert not wrong, wrong
    assert bounded_answers == [(200, None), (200, None)]
    assert all(status == 200 or (status == 400 and code in MEDIA_CODES) for status, code in fuzz), outcome
    assert listener.accepted == 0  # no decoder dialled the loopback listener
    assert engine_pids() == before and before  # the same engine processes (and this one: the server is in-process)
    assert httpx.get(f"{dense_server.base_url}/health").status_code == 200
    assert watch.health_failures == 0 and watch.health_max_s < 1.0
    assert watch.rss_peak - watch.rss_start < 2**30
    assert header_status in (400, 431) or header_status is None


def client_header_status(base_url: str) -> int | None:
    """A 200 KB header: refused (431/400) or the connection closed (None), never accepted."""
    try:
        return httpx.get(f"{base_url}/health", headers={"x-padding": "a" * 200_000}, timeout=30).status_code
    except httpx.HTTPError:
        return None
