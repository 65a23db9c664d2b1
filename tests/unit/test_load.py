"""The load harness without a server: datasets, the summary math, SSE parsing and the open-loop schedule."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import json
import math
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from benchmarks import load
from benchmarks.datasets import RequestSpec, image_dimensions, make_dataset
from benchmarks.offered_load import LoadResult, arrival_offsets, run_load
from benchmarks.report import RequestRecord, meets_slo, parse_slo, percentile, stats_ms, summarize
from benchmarks.stream import SSEDecoder, StreamState


def _decode_data_url(url: str) -> bytes:
    header, _, payload = url.partition(",")
    assert header.startswith("data:image/") and header.endswith(";base64")
    return base64.b64decode(payload)


# --- datasets -----------------------------------------------------------------------------------------------------------


def test_unique_images_never_share_bytes_and_stay_within_the_jitter() -> None:
    specs = make_dataset("unique-images", 24, seed=3, image_size=(96, 64), size_jitter=0.25, output_len=7)
    images = [s.images[0] for s in specs]
    assert len({hashlib.sha256(i).digest() for i in images}) == 24
    sizes = {image_dimensions(i) for i in images}
    assert len(sizes) > 1  # the jitter really varies the sizes
    for width, height in sizes:
        assert 96 * 0.75 - 1 <= width <= 96 * 1.25 + 1
        assert 64 * 0.75 - 1 <= height <= 64 * 1.25 + 1
    assert all(s.max_tokens == 7 and s.video is None and len(s.images) == 1 for s in specs)
    assert len({s.prompt for s in specs}) == 24  # prompts differ too (no shared prefixes past the template)


def test_datasets_are_deterministic_per_seed() -> None:
    a = make_dataset("unique-images", 3, seed=1, image_size=(32, 32))
    b = make_dataset("unique-images", 3, seed=1, image_size=(32, 32))
    c = make_dataset("unique-images", 3, seed=2, image_size=(32, 32))
    assert a == b
    assert {s.images[0] for s in a}.isdisjoint({s.images[0] for s in c})


def test_zero_jitter_gives_the_exact_size() -> None:
    specs = make_dataset("unique-images", 4, image_size=(80, 48), size_jitter=0.0)
    assert {image_dimensions(s.images[0]) for s in specs} == {(80, 48)}


def test_repeated_images_reuse_a_pool_round_robin() -> None:
    specs = make_dataset("repeated-images", 10, pool_size=3, image_size=(32, 32))
    images = [s.images[0] for s in specs]
    assert len(set(images)) == 3
    assert images[:3] == images[3:6] == images[6:9]
    assert images[9] == images[0]


def test_videos_are_frame_lists_sent_as_the_servers_video_shape() -> None:
    specs = make_dataset("videos", 2, frames=4, image_size=(48, 32), size_jitter=0.0)
    for spec in specs:
        assert spec.video is not None and len(spec.video) == 4 and spec.images == ()
        assert {image_dimensions(f) for f in spec.video} == {(48, 32)}
    (message,) = specs[0].chat_messages()
    video, text = message["content"]
    assert video["type"] == "video" and video["sample_fps"] == 2.0
    assert [_decode_data_url(u) for u in video["video"]] == list(specs[0].video or ())
    assert text == {"type": "text", "text": specs[0].prompt}
    assert specs[0].video != specs[1].video


def test_text_dataset_and_chat_messages() -> None:
    (spec,) = make_dataset("text", 1, output_len=5)
    assert spec.images == () and spec.video is None
    assert spec.chat_messages() == [{"role": "user", "content": spec.prompt}]


def test_chat_messages_inline_images_as_data_urls_in_either_position() -> None:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), "red").save(buf, "PNG")
    spec = RequestSpec("hi", (buf.getvalue(),), None, 4)
    (message,) = spec.chat_messages()
    image, text = message["content"]
    assert text == {"type": "text", "text": "hi"}
    assert image["image_url"]["url"].startswith("data:image/png;base64,")
    assert _decode_data_url(image["image_url"]["url"]) == buf.getvalue()
    last = RequestSpec("hi", (buf.getvalue(),), None, 4, media_position="last")
    assert [p["type"] for p in last.chat_messages()[0]["content"]] == ["text", "image_url"]


def test_unknown_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown dataset kind"):
        make_dataset("audio", 1)


# --- summary math -------------------------------------------------------------------------------------------------------


def _record(ttft: float, e2e: float, tokens: int = 5, ok: bool = True, **kw: Any) -> RequestRecord:
    return RequestRecord(
        ok=ok,
        start_s=0.0,
        ttft_s=ttft if ok else None,
        e2e_s=e2e if ok else None,
        itl_s=[(e2e - ttft) / (tokens - 1)] * (tokens - 1) if ok and tokens > 1 else [],
        prompt_tokens=10 if ok else 0,
        completion_tokens=tokens if ok else 0,
        max_tokens=5,
        **kw,
    )


def test_percentiles_interpolate_like_numpy() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50.5
    assert percentile(values, 90) == pytest.approx(90.1)
    assert percentile(values, 99) == pytest.approx(99.01)
    assert percentile([7.0], 99) == 7.0
    assert math.isnan(percentile([], 50))
    stats = stats_ms([0.001, 0.002, 0.003, 0.004])
    assert stats["mean"] == pytest.approx(2.5) and stats["p50"] == pytest.approx(2.5) and stats["max"] == 4
    assert stats_ms([])["p50"] is None


def test_tpot_and_ended_early() -> None:
    record = _record(0.1, 0.5, tokens=5)
    assert record.tpot_s == pytest.approx(0.1)
    assert not record.ended_early
    assert _record(0.1, 0.3, tokens=3).ended_early
    assert _record(0.1, 0.1, tokens=1).tpot_s is None


def test_summary_counts_throughput_latency_and_goodput() -> None:
    records = [
        _record(0.1, 0.5),  # tpot 100 ms
        _record(0.2, 0.6),  # tpot 100 ms
        _record(0.3, 1.1),  # tpot 200 ms
        _record(0.4, 0.8, tokens=3),  # ended early, tpot 200 ms
        _record(0, 0, ok=False, status=429, error_code="rate_limited"),
        _record(0, 0, ok=False, status=None, error_code="ConnectError"),
        _record(0, 0, ok=False, status=429, error_code="rate_limited"),
    ]
    s = summarize(records, duration_s=2.0, slo={"ttft": 250, "tpot": 150})
    assert s["requests"] == 7 and s["completed"] == 4 and s["failed"] == 3
    assert s["errors"] == {"rate_limited": 2, "ConnectError": 1}
    assert s["ended_early"] == 1
    assert s["request_throughput"] == 2.0
    assert s["total_output_tokens"] == 18 and s["total_input_tokens"] == 40
    assert s["output_throughput"] == 9.0 and s["total_token_throughput"] == 29.0
    assert s["ttft_ms"]["mean"] == pytest.approx(250) and s["ttft_ms"]["p50"] == pytest.approx(250)
    assert s["e2e_ms"]["max"] == pytest.approx(1100)
    assert s["tpot_ms"]["p50"] == pytest.approx(150)
    for metric in ("ttft_ms", "tpot_ms", "itl_ms", "e2e_ms"):
        assert s[metric]["p50"] <= s[metric]["p90"] <= s[metric]["p99"] <= s[metric]["max"]
    # ttft ≤ 250 and tpot ≤ 150: only the first two
    assert s["good_requests"] == 2 and s["goodput"] == 1.0
    json.dumps(s, allow_nan=False)


def test_goodput_slo_semantics() -> None:
    assert parse_slo(["ttft:500", "tpot:50", "e2e:2000"]) == {"ttft": 500.0, "tpot": 50.0, "e2el": 2000.0}
    for bad in ("ttft", "speed:3", "ttft:-1"):
        with pytest.raises(ValueError, match="invalid SLO"):
            parse_slo([bad])
    one_token = _record(0.1, 0.1, tokens=1)
    assert meets_slo(one_token, {"tpot": 1})  # a single token counts as TPOT 0, as in vLLM
    assert meets_slo(_record(0.5, 1.0), {"ttft": 500})  # the SLO is inclusive
    assert not meets_slo(_record(0, 0, ok=False), {"ttft": 1e9})


def test_summary_of_nothing_is_strict_json() -> None:
    s = summarize([], duration_s=0.0)
    assert s["completed"] == 0 and s["ttft_ms"]["p50"] is None
    json.dumps(s, allow_nan=False)


def test_load_result_summary_keys_and_records() -> None:
    result = LoadResult([_record(0.1, 0.5)], duration_s=1.0, started_at=0.0, concurrency=2)
    s = result.summary()
    expected = {
        "requests", "completed", "failed", "errors", "ended_early", "usage_missing", "duration_s",
        "request_throughput", "output_throughput", "total_token_throughput", "total_input_tokens",
        "total_output_tokens", "ttft_ms", "tpot_ms", "itl_ms", "e2e_ms", "queued_ms", "concurrency", "rate",
        "burstiness",
    }  # fmt: skip
    assert set(s) == expected
    assert set(s["ttft_ms"]) == {"mean", "p50", "p90", "p99", "max", "count"}
    assert "goodput" in result.summary({"ttft": 100})
    (row,) = result.records_json()
    assert row["tpot_s"] == pytest.approx(0.1) and row["ok"] is True


def test_from_timings_for_in_process_drivers() -> None:
    record = RequestRecord.from_timings(
        start=10.0, first_token=10.2, chunk_times=[10.2, 10.3, 10.5], end=10.5, prompt_tokens=9, completion_tokens=3
    )
    assert record.ok and record.ttft_s == pytest.approx(0.2) and record.e2e_s == pytest.approx(0.5)
    assert record.itl_s == pytest.approx([0.1, 0.2])
    assert record.tpot_s == pytest.approx(0.15)
    failed = RequestRecord.from_timings(
        start=0, first_token=None, chunk_times=[], end=1, prompt_tokens=0, completion_tokens=0
    )
    assert not failed.ok and failed.error_code == "no_tokens"


# --- SSE ----------------------------------------------------------------------------------------------------------------


def _chunk(content: str | None = None, role: str | None = None, finish: str | None = None) -> str:
    delta: dict[str, Any] = {}
    if role is not None:
        delta["role"] = role
    if content is not None:
        delta["content"] = content
    return json.dumps({"id": "c", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})


CANNED = (
    f"data: {_chunk('', role='assistant')}\n\n"
    ": keep-alive comment\n\n"
    f"data: {_chunk('Hel')}\n\n"
    f"data: {_chunk('lo')}\r\n\r\n"
    f"data: {_chunk(None, finish='length')}\n\n"
    'data: {"id": "c", "choices": [], "usage": {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15}}\n\n'
    "data: [DONE]\n\n"
)


@pytest.mark.parametrize("piece", [1, 7, 64, len(CANNED)])
def test_sse_decoder_reassembles_events_split_anywhere(piece: int) -> None:
    decoder = SSEDecoder()
    events: list[str] = []
    for i in range(0, len(CANNED), piece):
        events += decoder.feed(CANNED[i : i + piece])
    events += decoder.close()
    assert len(events) == 6 and events[-1] == "[DONE]"
    assert json.loads(events[1])["choices"][0]["delta"]["content"] == "Hel"


def test_sse_decoder_joins_multiline_data_and_flushes_an_unterminated_event() -> None:
    decoder = SSEDecoder()
    assert decoder.feed("event: x\ndata: a\ndata:b\n\nid: 3\ndata: tail") == ["a\nb"]
    assert decoder.close() == ["tail"]


def test_stream_state_measures_a_canned_stream() -> None:
    state = StreamState(start=100.0)
    decoder = SSEDecoder()
    for now, event in zip((100.05, 100.1, 100.3, 100.4, 100.41, 100.42), decoder.feed(CANNED), strict=True):
        state.on_event(event, now)
    record = RequestRecord(ok=False, start_s=100.0, ttft_s=None, e2e_s=None, max_tokens=3)
    state.fill(record)
    assert record.ok and state.done
    assert record.ttft_s == pytest.approx(0.1)  # the first chunk with content, not the role chunk
    assert record.e2e_s == pytest.approx(0.4)  # the last chunk with choices; usage and [DONE] carry no token
    assert record.itl_s == pytest.approx([0.2])
    assert (record.prompt_tokens, record.completion_tokens, record.finish_reason) == (12, 3, "length")
    assert record.tpot_s == pytest.approx(0.15) and record.usage_reported and not record.ended_early


def test_stream_state_reports_a_mid_stream_error_event() -> None:
    state = StreamState(start=0.0)
    state.on_event(_chunk("x"), 0.1)
    state.on_event(json.dumps({"error": {"message": "gone", "type": "server_error", "code": "engine_dead"}}), 0.2)
    state.on_event("[DONE]", 0.3)
    record = RequestRecord(ok=False, start_s=0.0, ttft_s=None, e2e_s=None)
    state.fill(record)
    assert not record.ok and record.error_code == "engine_dead" and record.error == "gone"


def test_stream_without_usage_counts_content_chunks() -> None:
    state = StreamState(start=0.0)
    for i, event in enumerate((_chunk("a"), _chunk("b"), _chunk(None, finish="stop"), "[DONE]")):
        state.on_event(event, 0.1 * (i + 1))
    record = RequestRecord(ok=False, start_s=0.0, ttft_s=None, e2e_s=None)
    state.fill(record)
    assert record.ok and record.completion_tokens == 2 and not record.usage_reported


# --- run_load against a mock transport ----------------------------------------------------------------------------------


def _mock_server(seen: list[dict[str, Any]]) -> httpx.MockTransport:
    def handle(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        seen.append(body)
        if body["messages"][0]["content"] == "refuse me":
            error = {"error": {"message": "busy", "type": "rate_limit_error", "param": None, "code": "rate_limited"}}
            return httpx.Response(429, json=error)
        n = body["max_tokens"]
        events = [_chunk("", role="assistant")] + [_chunk(f"t{i}") for i in range(n)] + [_chunk(None, finish="length")]
        usage = {"prompt_tokens": 4, "completion_tokens": n, "total_tokens": 4 + n}
        events.append(json.dumps({"id": "c", "choices": [], "usage": usage}))
        text = "".join(f"data: {e}\n\n" for e in events) + "data: [DONE]\n\n"
        return httpx.Response(200, content=text.encode(), headers={"content-type": "text/event-stream"})

    return httpx.MockTransport(handle)


def _serve_mock(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Every httpx.AsyncClient the harness makes talks to the mock server; returns the bodies it receives."""
    seen: list[dict[str, Any]] = []
    transport = _mock_server(seen)
    real_client = httpx.AsyncClient

    def client(**kwargs: Any) -> httpx.AsyncClient:
        kwargs.pop("limits", None)
        return real_client(transport=transport, **kwargs)

    monkeypatch.setattr(httpx, "AsyncClient", client)
    return seen


def test_run_load_sends_streamed_greedy_requests_and_records_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    seen = _serve_mock(monkeypatch)
    specs = [*make_dataset("text", 3, output_len=4), RequestSpec("refuse me", (), None, 4)]
    result = asyncio.run(run_load("http://test", "m", specs, concurrency=2, api_key="sk-x"))
    s = result.summary()
    assert (s["completed"], s["failed"], s["errors"]) == (3, 1, {"rate_limited": 1})
    assert s["total_output_tokens"] == 12 and s["ended_early"] == 0
    assert [r.index for r in result.records] == [0, 1, 2, 3]
    assert result.records[3].status == 429
    body = seen[0]
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert body["temperature"] == 0 and body["ignore_eos"] is True and body["max_tokens"] == 4


def test_the_command_sweeps_and_writes_its_result_document(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    seen = _serve_mock(monkeypatch)
    argv = ["--url", "http://test", "--model", "m", "--dataset", "text", "--num-requests", "3", "--output-len", "2"]
    argv += ["--sweep-concurrency", "1,2", "--warmup", "1", "--no-progress", "--out", str(tmp_path)]
    assert load.main(argv) == 0
    report = json.loads((tmp_path / "result.json").read_text())
    assert report["command"] == "python -m benchmarks.load " + " ".join(argv)
    assert [p["concurrency"] for p in report["points"]] == [1, 2] and [p["seed"] for p in report["points"]] == [0, 1]
    assert all(p["summary"]["completed"] == 3 and len(p["records"]) == 3 for p in report["points"])
    assert report["dataset"]["kind"] == "text" and report["load"]["warmup"] == 1
    assert report["plots"] == ["latency_cdf.png", "throughput.png"]
    assert all((tmp_path / name).stat().st_size > 0 for name in report["plots"])
    assert len(seen) == 1 + 2 * 3  # the warm-up request, then every point's requests


# --- open-loop schedule -------------------------------------------------------------------------------------------------


def test_closed_loop_sends_everything_at_once() -> None:
    assert arrival_offsets(5, None) == [0.0] * 5
    assert arrival_offsets(3, math.inf) == [0.0] * 3


def test_poisson_schedule_has_the_mean_rate_and_exponential_gaps() -> None:
    offsets = arrival_offsets(4000, rate=8.0, burstiness=1.0, seed=7)
    assert offsets == sorted(offsets)
    assert offsets[-1] == pytest.approx(4000 / 8.0)  # rescaled like vLLM: the mean rate is exact
    gaps = np.diff([0.0, *offsets])
    assert gaps.mean() == pytest.approx(1 / 8.0)
    assert gaps.std() / gaps.mean() == pytest.approx(1.0, abs=0.05)  # exponential: CV 1
    assert arrival_offsets(4000, rate=8.0, seed=7) == offsets  # the seed fixes the schedule


@pytest.mark.parametrize("shape", [0.25, 4.0])
def test_burstiness_is_the_gamma_shape(shape: float) -> None:
    offsets = arrival_offsets(8000, rate=2.0, burstiness=shape, seed=1)
    gaps = np.diff([0.0, *offsets])
    assert gaps.mean() == pytest.approx(0.5)
    assert gaps.std() / gaps.mean() == pytest.approx(1 / math.sqrt(shape), rel=0.06)  # gamma CV = 1/sqrt(shape)


def test_schedule_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="positive"):
        arrival_offsets(3, rate=-1.0)
    with pytest.raises(ValueError, match="positive"):
        arrival_offsets(3, rate=1.0, burstiness=0)
