"""The media stage's rules, each with a test that fails if the rule is removed (fake engine, real fetching/decoding)."""

from __future__ import annotations

import threading
import time
from typing import Any

from fastapi.testclient import TestClient

from server.engine.fake import FakeEngine
from tests.api.conftest import AssetServer
from tests.api.test_chat import IMAGE, assert_openai_error, chat, user
from tests.media_factory import image_bytes, mp4_bytes
from tests.unit.test_decode import png_declaring


def healthy(client: TestClient) -> None:
    assert client.get("/health").status_code == 200
    assert chat(client, messages=user({"type": "image_url", "image_url": {"url": IMAGE}})).status_code == 200


def image_part(url: str) -> dict[str, Any]:
    return {"type": "image_url", "image_url": {"url": url}}


def test_huge_declared_dimensions_refused_without_decoding(private_client: TestClient, assets: AssetServer) -> None:
    url = assets.add("/bomb.png", png_declaring(9000, 9000))
    error = assert_openai_error(chat(private_client, messages=user(image_part(url))), 400, code="media_too_large")
    assert "9000x9000" in error["message"] and error["param"] == "messages[0].content[0].image_url"
    healthy(private_client)


def test_too_many_videos_and_frames_refused_with_zero_fetches(private_client: TestClient, assets: AssetServer) -> None:
    clip = assets.add("/clip.mp4", mp4_bytes(frames=10, fps=5.0))
    frame = assets.add("/f.png", image_bytes(32, 32))
    videos = [{"type": "video_url", "video_url": {"url": clip}} for _ in range(2)]
    assert_openai_error(chat(private_client, messages=user(*videos)), 400, code="too_many_media_items")
    frames = {"type": "video", "video": [frame] * 65}  # over --media-max-video-frames (64)
    assert_openai_error(chat(private_client, messages=user(frames)), 400, code="media_too_large")
    assert assets.hits == []
    healthy(private_client)


def test_unsupported_format_and_degenerate_shapes(private_client: TestClient, assets: AssetServer) -> None:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, "TIFF")
    tiff = assets.add("/a.tiff", buf.getvalue())
    assert_openai_error(chat(private_client, messages=user(image_part(tiff))), 400, code="media_unsupported")
    sliver = assets.add("/sliver.png", image_bytes(4000, 10))
    error = assert_openai_error(chat(private_client, messages=user(image_part(sliver))), 400, code="media_unsupported")
    assert "aspect ratio" in error["message"]
    dot = assets.add("/dot.png", image_bytes(1, 1))
    assert chat(private_client, messages=user(image_part(dot))).status_code == 200  # 1×1 is resized up, not refused
    healthy(private_client)


def test_health_answers_quickly_while_large_media_decode(private_client: TestClient, assets: AssetServer) -> None:
    urls = [assets.add(f"/big{i}.png", image_bytes(1800, 1800, "PNG", seed=i)) for i in range(3)]
    clip = assets.add("/clip.mp4", mp4_bytes(frames=60, width=320, height=240, fps=10.0))
    parts = [image_part(u) for u in urls] + [{"type": "video_url", "video_url": {"url": clip}}]
    result: dict[str, Any] = {}

    def send() -> None:
        result["response"] = chat(private_client, messages=user(*parts))

    worker = threading.Thread(target=send)
    started = time.perf_counter()
    worker.start()
    latencies: list[float] = []
    while worker.is_alive():
        t0 = time.perf_counter()
        assert private_client.get("/health").status_code == 200
        latencies.append(time.perf_counter() - t0)
        time.sleep(0.01)
    worker.join()
    busy = time.perf_counter() - started
    assert result["response"].status_code == 200, result["response"].text
    assert len(latencies) >= 3, f"the request took {busy:.2f} s; too quick to observe"
    # A blocked event loop shows as seconds-long stalls (the preload bug stalled 4 s); scheduling noise on 2 shared
    # cores stays well under half a second.
    assert sorted(latencies)[len(latencies) // 2] < 0.05, latencies
    assert max(latencies) < 0.5, (max(latencies), busy)


def test_engine_never_sees_media_after_a_rejection(client: TestClient, engine: FakeEngine) -> None:
    bad = user(image_part(IMAGE), image_part("data:image/png;base64,AAAA"))
    assert_openai_error(chat(client, messages=bad), 400, param="messages[0].content[1].image_url")
    assert engine.requests == []


def metric(client: TestClient, name: str, **labels: str) -> float:
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(f"{name}{{{want}}} "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_repeated_image_is_fetched_once_and_served_from_the_cache(
    private_client: TestClient, engine: FakeEngine, assets: AssetServer
) -> None:
    url = assets.add("/cat.png", image_bytes(300, 200, seed=4))
    before = metric(private_client, "qwen3vl_media_cache_requests_total", cache="prepared", result="hit")
    for _ in range(3):
        assert chat(private_client, messages=user(image_part(url))).status_code == 200
    assert assets.hits == ["/cat.png"]
    assert metric(private_client, "qwen3vl_media_cache_requests_total", cache="prepared", result="hit") == before + 2
    uuids = [r.image_uuids for r in engine.requests]
    assert len(set(uuids)) == 1 and len(uuids[0]) == 1  # the engine gets the same stable id each time
    # Another budget for the same bytes: no new fetch, a different prepared item and id
    part = {"type": "image_url", "image_url": {"url": url, "max_pixels": 64 * 64}}
    assert chat(private_client, messages=user(part)).status_code == 200
    assert assets.hits == ["/cat.png"]
    assert engine.requests[-1].image_uuids != uuids[0]
    assert engine.requests[-1].images[0].shape == (32, 64, 3)  # 300×200 within 64×64 pixels on the 32-px grid


def test_identical_urls_in_flight_are_fetched_once(private_client: TestClient, assets: AssetServer) -> None:
    url = assets.add("/slow.png", image_bytes(50, 50, seed=8))
    assets.delay_s = 0.3
    results: list[int] = []

    def send() -> None:
        results.append(chat(private_client, messages=user(image_part(url), image_part(url))).status_code)

    threads = [threading.Thread(target=send) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [200, 200, 200]
    assert assets.hits == ["/slow.png"]


def test_media_metrics_and_rejection_counters(private_client: TestClient, assets: AssetServer) -> None:
    url = assets.add("/m.png", image_bytes(64, 64, seed=2))
    chat(private_client, messages=user(image_part(url)))
    chat(private_client, messages=user(image_part("data:image/png;base64,AAAA")))
    text = private_client.get("/metrics").text
    assert 'qwen3vl_media_fetch_seconds_count{scheme="http"} 1.0' in text
    assert 'qwen3vl_media_stage_seconds_count{kind="image",stage="decode"} 1.0' in text
    assert 'qwen3vl_media_fetch_bytes_count{kind="image"} 1.0' in text
    assert 'qwen3vl_media_rejections_total{code="media_decode_failed"} 1.0' in text
    assert 'qwen3vl_request_errors_total{code="media_decode_failed",status="400"} 1.0' in text


def test_visual_tokens_alone_over_the_context_are_refused_before_the_engine(
    client: TestClient, engine: FakeEngine
) -> None:
    part = {"type": "image_url", "image_url": {"url": IMAGE, "min_pixels": 4_500_000}}
    error = assert_openai_error(chat(client, messages=user(part), max_tokens=10), 400, code="context_length_exceeded")
    assert "messages[0].content[0].image_url:" in error["message"] and "tokens" in error["message"]
    assert engine.requests == []


def test_streaming_requests_get_media_errors_as_plain_json(client: TestClient) -> None:
    response = chat(client, messages=user(image_part("http://10.0.0.1/x.png")), stream=True)
    error = assert_openai_error(response, 400, code="media_blocked")
    assert response.headers["content-type"].startswith("application/json")
    assert "10.0.0.1" not in error["message"]


def test_fetch_concurrency_is_bounded_per_request(engine: FakeEngine, assets: AssetServer) -> None:
    from server.app import create_app
    from server.config import Settings

    settings = Settings(
        warmup=False,
        media_allow_loopback=True,
        media_fetches_per_request=2,
        limit_mm_per_prompt={"image": 6, "video": 0},
    )
    urls = [assets.add(f"/p{i}.png", image_bytes(40, 40, seed=30 + i)) for i in range(6)]
    assets.delay_s = 0.15
    with TestClient(create_app(settings, engine=engine)) as client:
        assert chat(client, messages=user(*(image_part(u) for u in urls))).status_code == 200
    assert len(assets.hits) == 6
    assert assets.max_in_flight == 2


def test_fps_over_the_ceiling_is_a_validation_error(client: TestClient) -> None:
    part = {"type": "video_url", "video_url": {"url": "data:video/mp4;base64,AAAA", "fps": 120}}
    assert_openai_error(chat(client, messages=user(part)), 400, param="messages[0].content[0].video_url.fps")
